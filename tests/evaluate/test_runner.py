"""Suite evaluation: worst-case robust accuracy, per-attack statistics, flags, metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from pixelguard.attacks.base import Attack, AttackState, ThreatModel, create_attack
from pixelguard.data import Dataset
from pixelguard.errors import ConfigError
from pixelguard.evaluate.runner import (
    AttackStats,
    accuracy_interval,
    detect_flags,
    evaluate,
    headline,
    headline_text,
)
from pixelguard.evaluate.suite import (
    Gate,
    Suite,
    SuiteEntry,
    build_suite,
    check_gates,
    parse_budget_label,
)
from pixelguard.metrics.classification import confusion_matrix, per_class_report
from pixelguard.models.base import Capabilities, OutputKind
from pixelguard.report.evaluation import write_evaluation_json, write_evaluation_markdown

N_MARKED = 10


class MarkerModel:
    """Predicts class 1 exactly when the bottom-right pixel is bright, else class 0.

    Each image carries its identity in the top-left pixel (``index / 100``), so the
    fake attacks below can tell which images they were handed.
    """

    num_classes = 2
    input_shape = (1, 4, 4)

    def __init__(self, gradients: bool = False) -> None:
        self.capabilities = Capabilities(OutputKind.LOGITS, gradients=gradients)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        marker = (x[:, 0, 3, 3] > 0.5).float()
        return torch.stack([1 - marker, marker], dim=1)


def _identity(x: torch.Tensor) -> list[int]:
    return [round(float(v) * 100) for v in x[:, 0, 0, 0]]


@dataclass(frozen=True, kw_only=True)
class MarkerAttack(Attack):
    """Fools exactly the images whose identity is in ``fools``; records what it saw."""

    name: ClassVar[str] = "marker"
    fools: tuple[int, ...] = ()
    seen: list[int] = field(default_factory=list)

    @property
    def threat_model(self) -> ThreatModel:
        return ThreatModel("l0", 1)  # it changes the one marker pixel

    def _run(self, state: AttackState) -> None:
        ids = _identity(state.x)
        self.seen.extend(ids)
        for row, image in enumerate(ids):
            if image in self.fools:
                state.x_adv[row, 0, 3, 3] = 1.0


@dataclass(frozen=True, kw_only=True)
class WhiteBoxMarkerAttack(MarkerAttack):
    name: ClassVar[str] = "white-marker"
    needs_gradients: ClassVar[bool] = True


def _marked_dataset() -> Dataset:
    x = torch.zeros(N_MARKED, 1, 4, 4)
    x[:, 0, 0, 0] = torch.arange(N_MARKED) / 100
    y = torch.zeros(N_MARKED, dtype=torch.int64)
    y[9] = 1  # the model calls image 9 class 0: misclassified before any attack
    return Dataset(x, y, ["plain", "marked"], "marked images")


def test_an_image_is_robust_only_if_every_attack_failed():
    first = MarkerAttack(fools=(1, 2, 3))
    second = MarkerAttack(fools=(3, 4, 5))
    suite = Suite("fake", [SuiteEntry("pixels=1", first), SuiteEntry("pixels=1", second)])
    evaluation = evaluate(MarkerModel(), _marked_dataset(), suite)

    assert first.seen == list(range(9))  # the misclassified image is never attacked
    assert second.seen == [0, 4, 5, 6, 7, 8]  # the second sees only what the first left
    assert evaluation.clean_accuracy == pytest.approx(0.9)
    # 1 - |A u B| / N - misclassified / N
    assert evaluation.robust_accuracy() == {"pixels=1": pytest.approx(1 - 5 / 10 - 1 / 10)}
    (outcome,) = evaluation.budgets
    assert (
        outcome.broken_by == [None, "marker", "marker", "marker", "marker", "marker"] + [None] * 4
    )
    assert outcome.robust.tolist() == [True] + [False] * 5 + [True] * 3 + [False]
    assert outcome.pred[1:6].tolist() == [1] * 5 and outcome.l0_pixels[1:6].tolist() == [1] * 5
    stats = [(s.n_attacked, s.n_fooled) for s in evaluation.attacks]
    assert stats == [(9, 3), (6, 2)]
    assert evaluation.flags == []


def test_a_black_box_success_after_a_white_box_failure_is_flagged():
    white = WhiteBoxMarkerAttack(fools=(1,))
    black = MarkerAttack(fools=(1, 2))
    suite = Suite("fake", [SuiteEntry("pixels=2", white), SuiteEntry("pixels=2", black)])
    evaluation = evaluate(MarkerModel(gradients=True), _marked_dataset(), suite)
    assert [s.beats_white_box for s in evaluation.attacks] == [0, 1]
    assert [f.code for f in evaluation.flags] == ["black-box-beats-white-box"]


def _interleaved_suite() -> Suite:
    """Two budgets, their entries interleaved; fresh attacks (they record what they saw)."""
    return Suite(
        "fake",
        [
            SuiteEntry("pixels=2", WhiteBoxMarkerAttack(fools=(1,))),
            SuiteEntry("pixels=1", MarkerAttack(fools=(4, 7))),
            SuiteEntry("pixels=2", MarkerAttack(fools=(1, 2, 7))),
        ],
    )


def test_shards_merge_into_the_evaluation_of_a_single_shard(timing_free):
    model = MarkerModel(gradients=True)
    whole = evaluate(model, _marked_dataset(), _interleaved_suite())
    sharded = evaluate(model, _marked_dataset(), _interleaved_suite(), shard_size=3)
    assert timing_free(sharded) == timing_free(whole)
    two, one = sharded.budgets
    assert two.broken_by == [None, "white-marker", "marker"] + [None] * 4 + ["marker"] + [None] * 2
    assert one.broken_by == [None] * 4 + ["marker"] + [None] * 2 + ["marker"] + [None] * 2
    stats = [
        (s.budget, s.attack, s.n_attacked, s.n_fooled, s.beats_white_box) for s in sharded.attacks
    ]
    assert stats == [
        ("pixels=2", "white-marker", 9, 1, 0),
        ("pixels=2", "marker", 8, 2, 2),
        ("pixels=1", "marker", 9, 2, 0),
    ]
    assert [f.code for f in sharded.flags] == ["black-box-beats-white-box"]


def test_pixel_suite_on_digits_is_monotone_and_below_clean(digits_model, held_out):
    suite = build_suite("pixel", pixels=(1, 3, 10), budget=100, gradients=True)
    assert [e.attack.name for e in suite.entries[:2]] == ["sparse-pgd", "sparse-rs"]
    evaluation = evaluate(digits_model, held_out, suite, limit=30)
    robust = list(evaluation.robust_accuracy().values())
    assert evaluation.n_images == 30
    assert all(acc <= evaluation.clean_accuracy for acc in robust)
    assert robust == sorted(robust, reverse=True)
    for outcome in evaluation.budgets:
        _, k = parse_budget_label(outcome.label)
        broken = torch.tensor([b is not None for b in outcome.broken_by])
        assert all(int(p) <= k for p in outcome.l0_pixels[broken])
        assert not (outcome.robust & broken).any()
    data = evaluation.to_dict()
    assert data["schema_version"] == "evaluation-1.1"
    assert set(data["per_class"]) == {"clean", "pixels=1", "pixels=3", "pixels=10"}


def test_dense_suite_needs_gradients():
    with pytest.raises(ConfigError, match="gradients"):
        build_suite("dense", gradients=False)
    pixel_only = build_suite("pixel", pixels=(1, 3), gradients=False)
    assert [e.attack.name for e in pixel_only.entries] == ["sparse-rs", "sparse-rs"]
    assert build_suite("full", eps=(0.2, 0.1), gradients=True).budgets()[-2:] == [
        "linf=0.1",
        "linf=0.2",
    ]


def _stats(budget: str, attack: str, white_box: bool, beats: int = 0) -> AttackStats:
    return AttackStats(budget, attack, {}, white_box, 10, 2, 5.0, 0.1, beats)


def test_flags_on_constructed_results():
    attacks = [_stats("pixels=1", "sparse-pgd", True), _stats("pixels=1", "sparse-rs", False, 3)]
    robust = {"pixels=1": 0.5, "pixels=3": 0.6, "linf=0.1": 0.4, "linf=0.2": 0.3}
    flags = detect_flags(attacks, robust, "probabilities")
    assert [f.code for f in flags] == [
        "black-box-beats-white-box",
        "not-monotone",
        "probability-outputs",
    ]
    assert "pixels=3" in flags[1].message
    assert detect_flags(attacks[:1], {"pixels=1": 0.5, "pixels=3": 0.5}, "logits") == []
    black_box_only = [_stats("pixels=1", "sparse-rs", False)]
    assert detect_flags(black_box_only, {"pixels=1": 0.5}, "probabilities") == []


def test_per_class_report_matches_sklearn():
    generator = torch.Generator().manual_seed(0)
    y_true = torch.randint(0, 5, (200,), generator=generator)
    y_pred = torch.where(torch.rand(200, generator=generator) < 0.6, y_true, 4)
    y_pred[y_pred == 3] = 0  # class 3 is never predicted: precision is undefined
    report = per_class_report(y_true, y_pred, 6)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(6)), zero_division=0
    )
    for k, row in enumerate(report):
        assert row["class"] == k and row["support"] == support[k]
        assert row["precision"] == pytest.approx(precision[k], abs=1e-6)
        assert row["recall"] == pytest.approx(recall[k], abs=1e-6)
        assert row["f1"] == pytest.approx(f1[k], abs=1e-6)
    expected = sk_confusion_matrix(y_true, y_pred, labels=list(range(6)))
    assert confusion_matrix(y_true, y_pred, 6).tolist() == expected.tolist()
    with pytest.raises(ConfigError):
        confusion_matrix([0, 6], [0, 1], 6)


def test_reports_are_written(tmp_path):
    suite = Suite("fake", [SuiteEntry("pixels=1", MarkerAttack(fools=(1,)))])
    evaluation = evaluate(MarkerModel(), _marked_dataset(), suite)
    data = write_evaluation_json(tmp_path / "report.json", evaluation).read_text()
    assert '"schema_version": "evaluation-1.1"' in data
    text = write_evaluation_markdown(tmp_path / "report.md", evaluation).read_text()
    assert "| pixels=1 | 80.0% |" in text and "| pixels=1 | marker | 9 | 1 |" in text
    assert "holds at or above half of clean (90.0%) at every budget tried" in text


def test_the_headline_is_the_smallest_budget_below_half_of_clean():
    robust = {"pixels=10": 0.0, "pixels=1": 0.8, "pixels=3": 0.401}
    (part,) = headline(0.99, robust)
    assert (part.budget, part.below_half) == ("pixels=3", True), "not the largest budget"
    assert part.robust_accuracy == pytest.approx(0.401)
    text = headline_text(0.99, robust)
    assert text == "Robust accuracy falls below half of clean (99.0%) at pixels=3: 40.1%"
    # Exactly half is not below half; the worst budget is named instead.
    held = headline_text(0.8, {"pixels=1": 0.6, "pixels=3": 0.4})
    assert held == (
        "Robust accuracy holds at or above half of clean (80.0%) at every budget tried; "
        "worst 40.0% at pixels=3"
    )
    both = headline(0.9, {"pixels=1": 0.7, "pixels=3": 0.2, "linf=0.1": 0.6, "linf=0.3": 0.5})
    assert [(p.kind, p.budget, p.below_half) for p in both] == [
        ("pixels", "pixels=3", True),
        ("linf", "linf=0.3", False),
    ]
    assert "; it holds at or above half at every linf budget tried, worst 50.0% at linf=0.3" in (
        headline_text(0.9, {"pixels=1": 0.7, "pixels=3": 0.2, "linf=0.1": 0.6, "linf=0.3": 0.5})
    )


def test_accuracy_intervals_are_clopper_pearson():
    from scipy.stats import beta

    low, high = accuracy_interval(0.0, 100)
    assert low == 0.0 and high == pytest.approx(0.0362, abs=1e-4)
    low, high = accuracy_interval(1.0, 100)
    assert high == 1.0 and low == pytest.approx(1 - 0.0362, abs=1e-4)
    low, high = accuracy_interval(0.4, 100)
    assert low == pytest.approx(beta.ppf(0.025, 40, 61)) and low < 0.4
    assert high == pytest.approx(beta.ppf(0.975, 41, 60)) and high > 0.4
    wide, narrow = accuracy_interval(0.5, 20), accuracy_interval(0.5, 2000)
    assert wide[1] - wide[0] > 4 * (narrow[1] - narrow[0]), "more images, a tighter interval"


@pytest.mark.parametrize(
    ("text", "budget", "minimum"),
    [
        ("pixels=1:0.5", "pixels=1", 0.5),
        ("linf=8/255:0.3", "linf=0.0313725", 0.3),
        ("eps=8/255:1/4", "linf=0.0313725", 0.25),
        ("clean:0.9", "clean", 0.9),
    ],
)
def test_gates_parse_budgets_as_the_reports_name_them(text, budget, minimum):
    assert Gate.parse(text) == Gate(budget, pytest.approx(minimum))


@pytest.mark.parametrize("text", ["pixels=1", "pixels:0.5", "pixels=1:1.5", "=1:0.5", "x=y:0.1"])
def test_malformed_gates_are_refused(text):
    with pytest.raises(ConfigError, match="--fail-under must be BUDGET:MIN"):
        Gate.parse(text)


def test_gates_pass_and_fail_on_the_evaluation():
    suite = Suite("fake", [SuiteEntry("pixels=1", MarkerAttack(fools=(1,)))])
    evaluation = evaluate(MarkerModel(), _marked_dataset(), suite)
    gates = [Gate.parse("pixels=1:0.8"), Gate.parse("pixels=1:0.81"), Gate.parse("clean:0.95")]
    results = evaluation.check(gates)
    assert [r.passed for r in results] == [True, False, False]
    assert results[0].text() == "PASS pixels=1: robust accuracy 80.0% >= 80.0%"
    assert results[1].text() == "FAIL pixels=1: robust accuracy 80.0% < 81.0%"
    assert results[2].text() == "FAIL clean: clean accuracy 90.0% < 95.0%"
    assert results[0].to_dict() == {
        "budget": "pixels=1", "minimum": 0.8, "accuracy": 0.8, "passed": True,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="runs no such budget; it runs pixels=1"):
        check_gates([Gate.parse("pixels=3:0.5")], suite.budgets())


def test_summary_holds_the_headline_numbers_and_leads_the_report():
    suite = Suite("fake", [SuiteEntry("pixels=1", MarkerAttack(fools=(1, 2, 3, 4, 5, 6)))])
    evaluation = evaluate(
        MarkerModel(), _marked_dataset(), suite, model_info={"spec": "m.pt"}, data_info=None
    )
    summary = evaluation.summary()
    assert summary["model"] == {"spec": "m.pt"} and summary["data"] is None
    assert summary["robust_accuracy"] == {"pixels=1": pytest.approx(0.3)}
    low, high = summary["robust_accuracy_ci"]["pixels=1"]
    assert low < 0.3 < high and summary["confidence_level"] == 0.95
    assert summary["headline"]["budgets"][0]["budget"] == "pixels=1"
    assert summary["headline"]["text"].startswith("Robust accuracy falls below half")
    assert evaluation.to_dict().items() >= summary.items()


@dataclass(frozen=True, kw_only=True)
class OverreachingMarkerAttack(MarkerAttack):
    """Declares one pixel but also flips ``extra`` more, so its successes lie outside
    a one-pixel budget (and within a budget of ``1 + extra`` pixels)."""

    name: ClassVar[str] = "overreach"
    extra: int = 2

    def _run(self, state: AttackState) -> None:
        super()._run(state)
        for row, image in enumerate(_identity(state.x)):
            if image in self.fools:
                state.x_adv[row, 0, 1, 1 : 1 + self.extra] = 1.0


@pytest.mark.parametrize(
    ("label", "attack", "declared"),
    [
        ("pixels=1", "sparse-rs", {"pixels": 10}),
        ("pixels=3", "pixel-de", {"pixels": 4}),
        ("linf=0.1", "pgd", {"eps": 0.3}),
        ("linf=0.1", "pgd", {"norm": "l2", "eps": 0.05}),
        ("l2=0.5", "fgsm", {"norm": "l2", "eps": 1.0}),
        ("pixels=10", "gradient-descent", {}),
        ("pixels=10", "label-only", {}),
        ("linf=0.3", "sparse-rs", {"pixels": 1}),
    ],
)
def test_a_suite_entry_whose_attack_exceeds_its_budget_is_refused(label, attack, declared):
    configured = create_attack(attack, **declared)
    with pytest.raises(ConfigError, match=rf"suite entry {label}: attack {attack} .*budget") as err:
        SuiteEntry(label, configured)
    assert "\n" not in str(err.value) and str(configured.threat_model) in str(err.value)


def test_suite_entries_within_their_budget_are_accepted():
    SuiteEntry("pixels=3", create_attack("sparse-rs", pixels=3))
    SuiteEntry("pixels=10", create_attack("sparse-rs", pixels=3))
    SuiteEntry("pixels=1", create_attack("corner-search"))
    SuiteEntry("linf=0.3", create_attack("pgd", eps=0.1))
    SuiteEntry("l2=0.5", create_attack("pgd", norm="l2", eps=0.5))
    SuiteEntry("pixels=20", create_attack("label-only", max_pixels=20))
    for kind in ("pixel", "dense", "full"):
        build_suite(kind, gradients=True)
    # Labels print 6 significant digits: linf=0.0313725 holds an eps of 8/255.
    assert build_suite("dense", eps=[8 / 255], gradients=True).budgets() == ["linf=0.0313725"]
    SuiteEntry("l2=3.14159", create_attack("pgd", norm="l2", eps=3.14159265))
    with pytest.raises(ConfigError, match="more than the budget allows"):
        SuiteEntry("linf=0.0313", create_attack("pgd", eps=8 / 255))
    with pytest.raises(ConfigError, match="unknown budget kind 'queries'"):
        SuiteEntry("queries=100", create_attack("sparse-rs", pixels=1))


def test_an_out_of_budget_success_counts_as_robust_and_is_flagged(timing_free):
    cheat = OverreachingMarkerAttack(fools=(1, 2, 3))  # 3 pixels changed, 1 declared
    honest = MarkerAttack(fools=(3, 4))
    suite = Suite("fake", [SuiteEntry("pixels=1", cheat), SuiteEntry("pixels=1", honest)])
    evaluation = evaluate(MarkerModel(), _marked_dataset(), suite)

    (outcome,) = evaluation.budgets
    # Only the honest attack's successes count; the cheat's images stay robust, and
    # the next attack of the budget still gets them.
    assert honest.seen == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert outcome.broken_by == [None] * 3 + ["marker", "marker"] + [None] * 5
    assert evaluation.robust_accuracy() == {"pixels=1": pytest.approx(0.7)}
    assert outcome.l0_pixels.tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert torch.equal(outcome.x_adv[1:3], evaluation.x[1:3])
    assert outcome.pred[1:3].tolist() == [0, 0]
    stats = [(s.attack, s.n_attacked, s.n_fooled, s.out_of_budget) for s in evaluation.attacks]
    assert stats == [("overreach", 9, 0, 3), ("marker", 9, 2, 0)]
    assert [f.code for f in evaluation.flags] == ["out-of-budget"]
    message = evaluation.flags[0].message
    assert "pixels=1" in message and "overreach" in message and "3 success" in message
    data = evaluation.to_dict()
    assert data["attacks"][0]["out_of_budget"] == 3 and "out_of_budget" not in data["attacks"][1]
    # The same in shards of three images.
    fresh = Suite(
        "fake",
        [
            SuiteEntry("pixels=1", OverreachingMarkerAttack(fools=(1, 2, 3))),
            SuiteEntry("pixels=1", MarkerAttack(fools=(3, 4))),
        ],
    )
    sharded = evaluate(MarkerModel(), _marked_dataset(), fresh, shard_size=3)
    assert timing_free(sharded) == timing_free(evaluation)


def test_a_success_within_a_larger_budget_counts_there():
    suite = Suite("fake", [SuiteEntry("pixels=3", OverreachingMarkerAttack(fools=(1, 2)))])
    evaluation = evaluate(MarkerModel(), _marked_dataset(), suite)
    assert evaluation.robust_accuracy() == {"pixels=3": pytest.approx(0.7)}
    assert evaluation.flags == [] and evaluation.attacks[0].out_of_budget == 0


def test_a_linf_success_beyond_eps_counts_as_robust():
    """A suite entry built around the check still meets it where robustness is counted."""
    entry = object.__new__(SuiteEntry)
    object.__setattr__(entry, "budget_label", "linf=0.1")
    object.__setattr__(entry, "attack", MarkerAttack(fools=(1, 2)))  # Linf 1.0
    evaluation = evaluate(MarkerModel(), _marked_dataset(), Suite("fake", [entry]))
    assert evaluation.robust_accuracy() == {"linf=0.1": pytest.approx(0.9)}
    assert [f.code for f in evaluation.flags] == ["out-of-budget"]
    assert evaluation.attacks[0].out_of_budget == 2
