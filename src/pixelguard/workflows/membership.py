"""Does the model leak which images it was trained on? A membership attack end to end.

:func:`evaluate_membership` runs a configured membership attack
(:mod:`pixelguard.leakage.loss_threshold`, :mod:`pixelguard.leakage.shadow`) on known
members and non-members of a model and says in words what it found;
:func:`write_membership_reports` writes ``membership.json`` (schema
``membership-1.0``), ``scores.npz`` (the per-image scores) and a self-contained
``report.html`` with the verdict, the headline rates and the ROC curve on a
logarithmic false-positive axis, where the attacks that matter differ.

The verdict rests on the true-positive rate at 1% false positives: a random guess
identifies 1% of the members there, so a rate whose 95% interval lies above 1%
means the attack identifies training images better than chance.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelguard.data.base import Dataset
from pixelguard.errors import ConfigError
from pixelguard.files import write_json, write_npz, write_text
from pixelguard.leakage.loss_threshold import LossThresholdAttack
from pixelguard.leakage.membership import (
    MembershipResult,
    check_membership_inputs,
)
from pixelguard.leakage.shadow import ShadowModelAttack, ShadowProgress
from pixelguard.models.base import Classifier

logger = logging.getLogger(__name__)

MEMBERSHIP_ATTACKS: dict[str, type[LossThresholdAttack] | type[ShadowModelAttack]] = {
    "loss-threshold": LossThresholdAttack,
    "shadow": ShadowModelAttack,
}
"""The membership attacks by name."""

HEADLINE_FPR = 0.01
"""The false-positive rate the verdict is read at."""
WEAK_AUC = 0.55
"""An AUC from here up, without a confident low-FPR rate, is called a weak signal."""

JSON_FILE = "membership.json"
HTML_FILE = "report.html"
SCORES_FILE = "scores.npz"


def create_membership_attack(name: str, **params: Any) -> LossThresholdAttack | ShadowModelAttack:
    """The membership attack ``name`` configured with ``params``.

    Raises:
        ConfigError: an unknown name or setting, or a bad value.
    """
    if name not in MEMBERSHIP_ATTACKS:
        raise ConfigError(
            f"unknown membership attack {name!r}; known: {', '.join(MEMBERSHIP_ATTACKS)}"
        )
    cls = MEMBERSHIP_ATTACKS[name]
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"{name} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(known))}"
        )
    return cls(**params)


@dataclass(frozen=True)
class Verdict:
    """The finding in words.

    Attributes:
        level: ``"leaks"``, ``"weak"``, ``"none-found"`` or ``"unmeasured"`` (too
            few non-members for the 1% rate).
        text: one sentence for a person.
    """

    level: str
    text: str


def verdict(result: MembershipResult) -> Verdict:
    """Read the result: leakage when the 1%-FPR rate's interval lies above chance."""
    point = result.point(HEADLINE_FPR)
    share = f"{100 * point.tpr:.1f}%"
    low = point.to_dict()["tpr_ci"][0]
    if not point.measurable:
        return Verdict(
            "unmeasured",
            f"{result.n_non_members} non-members are too few to measure a 1% false-positive "
            f"rate (that takes at least 100); the ROC AUC is {result.auc:.3f} "
            "(0.5 is chance)",
        )
    if low > HEADLINE_FPR:
        return Verdict(
            "leaks",
            f"The model leaks membership: at 1% false positives the {result.attack} attack "
            f"identifies {share} of the training images it was shown (chance: 1%); "
            f"ROC AUC {result.auc:.3f}.",
        )
    if result.auc >= WEAK_AUC:
        return Verdict(
            "weak",
            f"A weak membership signal: members score higher on average (ROC AUC "
            f"{result.auc:.3f}), but at 1% false positives the attack identifies only "
            f"{share} of them, not clearly above chance.",
        )
    return Verdict(
        "none-found",
        f"The {result.attack} attack found no membership leakage: ROC AUC {result.auc:.3f}, "
        f"{share} of members identified at 1% false positives. A stronger attack may "
        "still find some; this is no proof of privacy.",
    )


@dataclass(frozen=True)
class MembershipEvaluation:
    """A membership attack's result with how its images were chosen.

    Attributes:
        result: the attack's :class:`~pixelguard.leakage.membership.MembershipResult`.
        limit: the most members and non-members used, each a seeded sample (None: all).
        seed: the seed of those samples.
        n_shadow_data: images the attacker's shadow data held (None: no shadow attack).
    """

    result: MembershipResult
    limit: int | None
    seed: int
    n_shadow_data: int | None = None

    @property
    def verdict(self) -> Verdict:
        return verdict(self.result)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable data (schema ``membership-1.0``)."""
        found = self.verdict
        data = self.result.to_dict()
        return {
            "schema_version": data.pop("schema_version"),
            "verdict": {"level": found.level, "text": found.text},
            **data,
            "sample": {"limit": self.limit, "seed": self.seed},
            "n_shadow_data": self.n_shadow_data,
        }


def evaluate_membership(
    model: Classifier,
    members: Dataset,
    non_members: Dataset,
    attack: LossThresholdAttack | ShadowModelAttack,
    *,
    shadow_data: Dataset | None = None,
    reference: Dataset | None = None,
    limit: int | None = None,
    seed: int = 0,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: ShadowProgress | None = None,
) -> MembershipEvaluation:
    """Run ``attack`` on ``model``'s known members and non-members.

    Every input is checked before any work (or checkpoint) starts. Warns when the
    non-members are too few for a 0.1% false-positive rate to mean anything.

    Args:
        model: the target classifier.
        members: images it was trained on.
        non_members: images of the same distribution it never saw.
        attack: the configured attack.
        shadow_data: the attacker's own labelled images (the shadow attack needs it).
        reference: the attacker's own non-member images, for the loss-threshold
            attack with ``calibration="class"`` (it needs them).
        limit: use at most this many members and as many non-members, each drawn
            at random with ``seed`` (None: all).
        seed: seed of those samples.
        checkpoint: the shadow attack's checkpoint folder (None: none).
        resume: continue the shadow run in ``checkpoint``.
        progress: called after each shadow model.

    Raises:
        ShapeError, RangeError, CapabilityError: inputs that do not fit each other
            or the model.
        ConfigError: a shadow attack without shadow data, or shadow data given to
            another attack.
    """
    members, non_members = members.sample(limit, seed), non_members.sample(limit, seed)
    if isinstance(attack, ShadowModelAttack) and shadow_data is None:
        raise ConfigError("the shadow attack needs the attacker's own data (--shadow-data)")
    if not isinstance(attack, ShadowModelAttack) and shadow_data is not None:
        raise ConfigError(f"--shadow-data is for the shadow attack, not {attack.name}")
    calibrated = isinstance(attack, LossThresholdAttack) and attack.calibration == "class"
    if calibrated and reference is None:
        raise ConfigError(
            "--calibration class needs the attacker's own non-member images (--reference-data)"
        )
    if not calibrated and reference is not None:
        raise ConfigError(
            "--reference-data is for the loss-threshold attack with --calibration class"
        )
    check_membership_inputs(
        model, members, non_members, shadow_data=shadow_data, reference=reference
    )
    if len(non_members) < 1000:
        logger.warning(
            "%d non-members are too few to measure a 0.1%% false-positive rate (that takes "
            "at least 1000); the report marks it unmeasurable",
            len(non_members),
        )
    if isinstance(attack, ShadowModelAttack):
        assert shadow_data is not None
        result = attack.run(
            model,
            members,
            non_members,
            shadow_data=shadow_data,
            checkpoint=checkpoint,
            resume=resume,
            progress=progress,
        )
    else:
        result = attack.run(model, members, non_members, reference=reference)
    return MembershipEvaluation(
        result, limit, seed, None if shadow_data is None else len(shadow_data)
    )


def write_membership_reports(
    out: str | Path, evaluation: MembershipEvaluation, extra: Mapping[str, Any] | None = None
) -> list[Path]:
    """Write ``membership.json``, ``scores.npz`` and ``report.html`` into ``out``.

    Args:
        out: the folder (created).
        evaluation: what to report.
        extra: more top-level report fields, e.g. ``model`` and ``data`` descriptions.

    Returns:
        The paths written.
    """
    folder = Path(out)
    report = {**evaluation.to_dict(), **(extra or {})}
    paths = [
        write_json(folder / JSON_FILE, report),
        write_npz(folder / SCORES_FILE, evaluation.result.score_arrays()),
        write_text(folder / HTML_FILE, membership_html(report)),
    ]
    return paths


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _interval(ci: list[float]) -> str:
    return f"95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def membership_html(report: Mapping[str, Any]) -> str:
    """The self-contained HTML page of a ``membership.json`` report."""
    from pixelguard.report.html import figure, join, page, section, table, tag, tile
    from pixelguard.report.svg import PALETTE, Axis, Series, line_chart, log_ticks, percent_axis

    points = {p["target_fpr"]: p for p in report["operating_points"]}
    found = report["verdict"]
    tone = {"leaks": "bad", "none-found": "good"}.get(found["level"], "warn")
    n_members, n_non = report["n_members"], report["n_non_members"]
    tiles = [tile("ROC AUC", f"{report['auc']:.3f}", "0.5 is chance", tone=tone)]
    for fpr in sorted(points, reverse=True):
        p = points[fpr]
        note = _interval(p["tpr_ci"])
        if not p["measurable"]:
            note = f"not measurable: {n_non:,} non-members, needs {p['min_non_members']:,}"
        tiles.append(
            tile(
                f"TPR at {100 * fpr:g}% FPR",
                _pct(p["tpr"]),
                note,
                tone=tone if p["measurable"] else "warn",
            )
        )
    tiles.append(tile("Advantage", f"{report['advantage']:.3f}", "max TPR - FPR"))
    callout = "callout ok" if found["level"] == "none-found" else "callout warn"
    headline = section(
        "verdict",
        "Verdict",
        tag("div", tag("strong", found["text"]), class_=callout),
        tag("div", join(tiles), class_="tiles"),
        intro=f"{n_members:,} members (training images) and {n_non:,} non-members, scored "
        f"by the {report['attack']['name']} attack. Members are the positives; a threshold "
        "set on the non-members decides who is called a member.",
    )

    roc = [(f, t) for f, t in report["roc"] if f > 0]
    charts: list[object] = []
    if roc:
        low = max(min(f for f, _ in roc), 1e-4)
        shown = [(f, t) for f, t in roc if f >= low]
        ticks = log_ticks(low, 1.0)
        span = math.log10(ticks[-1] / ticks[0])
        chance = [(v, v) for v in (ticks[0] * 10 ** (span * i / 60) for i in range(61))]
        svg = line_chart(
            [
                Series("chance", chance, "#98a2b3"),
                Series(report["attack"]["name"], shown, PALETTE[0], steps=True),
            ],
            title="ROC curve",
            x=Axis(
                "false-positive rate (non-members called members)", ticks, log=True, percent=True
            ),
            y=percent_axis("true-positive rate (members found)"),
        )
        charts.append(
            figure(
                svg,
                [(report["attack"]["name"], PALETTE[0]), ("chance", "#98a2b3")],
                "The false-positive axis is logarithmic: the left end, where an attacker "
                "is confident, is what matters (Carlini et al. 2022).",
            )
        )
    rows = []
    for fpr in sorted(points):
        p = points[fpr]
        rows.append(
            [
                f"{100 * fpr:g}%",
                _pct(p["fpr"]),
                f"{_pct(p['tpr'])} ({_interval(p['tpr_ci'])})",
                f"{p['true_positives']:,} of {n_members:,}",
                f"{p['false_positives']:,} of {n_non:,}",
                "yes" if p["measurable"] else f"no (needs {p['min_non_members']:,} non-members)",
            ]
        )
    operating = table(
        ["target FPR", "measured FPR", "TPR", "members found", "non-members accused", "measurable"],
        rows,
        numeric=[0, 1, 3, 4],
    )
    curve = section(
        "roc",
        "How many members an attacker finds",
        *charts,
        operating,
        intro="Each row: the threshold that accuses at most the target share of the "
        "non-members, and the share of members it finds. Intervals are Clopper-Pearson.",
    )

    setup_rows = [["attack", report["attack"]["name"]]]
    setup_rows += [[f"  {k}", str(v)] for k, v in report["attack"]["params"].items()]
    for key in ("model", "members", "non_members", "shadow_data", "reference"):
        info = report.get(key)
        if isinstance(info, Mapping):
            described = info.get("source") or info.get("spec")
            count = f" ({info['n_images']:,} images)" if "n_images" in info else ""
            setup_rows.append([key.replace("_", "-"), f"{described}{count}"])
    sample = report.get("sample", {})
    if sample.get("limit") is not None:
        setup_rows.append(["limit", f"{sample['limit']} per set, seed {sample['seed']}"])
    details = report.get("details") or {}
    for key, value in details.items():
        setup_rows.append([key.replace("_", " "), str(value)])
    setup_rows.append(["wall time", f"{report['wall_time']:.1f} s"])
    setup = section("setup", "Setup", table(["", ""], setup_rows))
    return page(
        "Membership inference",
        f"{report['attack']['name']} attack: does the model leak which images it was trained on?",
        [("verdict", "Verdict"), ("roc", "ROC"), ("setup", "Setup")],
        [headline, curve, setup],
    )
