"""Membership inference: the metrics, the loss-threshold and shadow-model attacks."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from pixelguard.errors import ConfigError, RangeError, ShapeError
from pixelguard.leakage.loss_threshold import LossThresholdAttack
from pixelguard.leakage.membership import (
    MembershipResult,
    check_membership_inputs,
    operating_point,
    roc_curve,
    signal,
)
from pixelguard.leakage.shadow import ShadowModelAttack
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier

N_MEMBERS = 50
"""Training images of the overfitted model: few enough that it memorises them."""


@pytest.fixture(scope="module")
def split(digits):
    """A seeded partition of the digits: members, non-members, shadow data."""
    x, y = digits
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    parts = {
        "members": order[:N_MEMBERS],
        "non_members": order[N_MEMBERS : N_MEMBERS + 300],
        "shadow": order[N_MEMBERS + 300 : N_MEMBERS + 500],
    }
    return {name: (x[index], y[index]) for name, index in parts.items()}


@pytest.fixture(scope="module")
def overfitted(split) -> TorchClassifier:
    """A small CNN trained 200 epochs on 50 digits: 100% on them, about 80% on others."""
    x, y = split["members"]
    module, metrics = train_classifier(x, y, epochs=200, batch_size=32, seed=0, num_classes=10)
    assert metrics["train_accuracy"] == 1.0
    return TorchClassifier(module, (1, 8, 8), output="logits")


# --- metrics ------------------------------------------------------------------------


def test_perfect_separation_has_auc_one_and_full_tpr():
    result = MembershipResult.from_scores(
        "test", {}, torch.linspace(1.0, 2.0, 20), torch.linspace(-1.0, 0.0, 2000)
    )
    assert result.auc == 1.0
    assert result.advantage == 1.0
    assert [p.tpr for p in result.points] == [1.0, 1.0]
    assert all(p.measurable for p in result.points)
    assert result.roc[0] == (0.0, 0.0) and result.roc[-1] == (1.0, 1.0)


def test_low_fpr_on_too_few_non_members_is_marked_unmeasurable():
    point = operating_point(torch.arange(10.0), torch.arange(500.0), 0.001)
    assert not point.measurable
    assert point.false_positives == 0  # the threshold allows no false positive at all
    data = point.to_dict()
    assert data["min_non_members"] == 1000
    assert operating_point(torch.arange(10.0), torch.arange(500.0), 0.01).measurable


def test_operating_point_counts_and_interval():
    members = torch.tensor([5.0, 4.0, 3.0, 0.5])
    non = torch.arange(100.0) / 100.0  # 0.00 .. 0.99
    point = operating_point(members, non, 0.01)
    assert point.threshold == pytest.approx(0.98)
    assert (point.true_positives, point.false_positives) == (3, 1)
    low, high = point.to_dict()["tpr_ci"]
    assert low < 0.75 < high


def test_roc_curve_is_monotone_and_ends_at_one():
    g = torch.Generator().manual_seed(1)
    curve = roc_curve(torch.randn(300, generator=g) + 1, torch.randn(3000, generator=g), 100)
    assert len(curve) <= 102
    fprs, tprs = zip(*curve, strict=True)
    assert list(fprs) == sorted(fprs) and list(tprs) == sorted(tprs)
    assert curve[-1] == (1.0, 1.0)


def test_signals_match_their_definitions():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    log_p = torch.log_softmax(logits, dim=1)
    assert torch.allclose(signal(log_p, y, "loss"), -F.cross_entropy(logits, y, reduction="none"))
    assert torch.allclose(signal(log_p, y, "confidence"), torch.softmax(logits, 1)[[0, 1], y])
    expected = torch.tensor([log_p[0, 0] - log_p[0, 1], log_p[1, 2] - log_p[1, 1]])
    assert torch.allclose(signal(log_p, y, "margin"), expected)


# --- input checks -------------------------------------------------------------------


def test_mismatched_shapes_are_refused(digits_model, split):
    members = split["members"]
    other = (torch.rand(5, 1, 10, 10), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ShapeError, match="members are images of shape 1x8x8 but non-members"):
        check_membership_inputs(digits_model, members, other)
    with pytest.raises(ShapeError, match="the model takes images of shape 1x8x8"):
        check_membership_inputs(digits_model, other, other)


def test_labels_outside_the_model_classes_are_refused(digits_model, split):
    x, y = split["members"]
    with pytest.raises(RangeError):
        LossThresholdAttack().run(digits_model, (x, y + 10), split["non_members"])


def test_unknown_signal_is_a_config_error():
    with pytest.raises(ConfigError, match="signal must be one of"):
        LossThresholdAttack(signal="entropy")  # type: ignore[arg-type]


# --- loss threshold -----------------------------------------------------------------


def test_model_that_never_saw_the_members_leaks_nothing(digits, digits_model):
    # digits_model trained on digits[:1400]; both sets below are unseen by it.
    x, y = digits
    result = LossThresholdAttack().run(
        digits_model, (x[1400:1600], y[1400:1600]), (x[1600:], y[1600:])
    )
    assert 0.4 < result.auc < 0.6
    assert result.n_members == 200 and result.n_non_members == 197


@pytest.mark.parametrize("kind", ["loss", "margin"])
def test_overfitted_model_leaks_its_members(overfitted, split, kind):
    result = LossThresholdAttack(signal=kind).run(
        overfitted, split["members"], split["non_members"]
    )
    assert result.auc > 0.65
    assert result.advantage > 0.3
    data = result.to_dict()
    json.dumps(data)
    assert data["attack"] == {
        "name": "loss-threshold",
        "params": {"signal": kind, "calibration": "none"},
    }
    assert [p["measurable"] for p in data["operating_points"]] == [False, True]


def test_class_calibration_uses_reference_non_members(overfitted, split):
    attack = LossThresholdAttack(signal="margin", calibration="class")
    result = attack.run(
        overfitted, split["members"], split["non_members"], reference=split["shadow"]
    )
    assert result.auc > 0.65
    assert result.details == {"n_reference": 200}
    # standardised per class: the reference images themselves score mean 0 in each class
    x, y = split["shadow"]
    scores = attack.score(overfitted, split["shadow"], split["shadow"])
    for c in range(10):
        assert abs(float(scores[y == c].mean())) < 1e-9
    with pytest.raises(ConfigError, match="needs reference images"):
        attack.run(overfitted, split["members"], split["non_members"])


# --- shadow models ------------------------------------------------------------------


def test_shadow_attack_finds_the_members_of_an_overfitted_model(overfitted, split):
    seen = []
    attack = ShadowModelAttack(n_shadows=2, epochs=200, batch_size=32)
    result = attack.run(
        overfitted,
        split["members"],
        split["non_members"],
        shadow_data=split["shadow"],
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(1, 2), (2, 2)]
    assert result.auc > 0.65
    assert result.details["n_shadow_images"] == 200
    assert min(result.details["shadow_train_accuracy"]) == 1.0


def test_killed_shadow_run_resumes_without_retraining(overfitted, split, tmp_path):
    attack = ShadowModelAttack(n_shadows=3, arch="mlp", epochs=20, batch_size=32)
    args = (overfitted, split["members"], split["non_members"])
    full = attack.run(*args, shadow_data=split["shadow"])

    def killed(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        attack.run(*args, shadow_data=split["shadow"], checkpoint=folder, progress=killed)
    assert sorted(p.name for p in folder.glob("shadow-*.npz")) == [
        "shadow-000.npz",
        "shadow-001.npz",
    ]
    resumed = attack.run(*args, shadow_data=split["shadow"], checkpoint=folder, resume=True)
    assert resumed.details["shadows_restored"] == 2
    assert torch.allclose(resumed.member_scores, full.member_scores)
    assert resumed.auc == full.auc

    other = ShadowModelAttack(n_shadows=3, arch="mlp", epochs=21, batch_size=32)
    with pytest.raises(ConfigError, match="another shadow run"):
        other.run(*args, shadow_data=split["shadow"], checkpoint=folder, resume=True)


def test_shadow_data_of_another_shape_is_refused_before_training(overfitted, split, tmp_path):
    bad = (torch.rand(20, 1, 9, 9), torch.zeros(20, dtype=torch.int64))
    with pytest.raises(ShapeError, match="shadow-data"):
        ShadowModelAttack(n_shadows=1).run(
            overfitted,
            split["members"],
            split["non_members"],
            shadow_data=bad,
            checkpoint=tmp_path / "c",
        )
    assert not (tmp_path / "c").exists()
