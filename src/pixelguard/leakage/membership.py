"""Membership inference: what the attacks share — inputs, per-image signals, the result.

A membership attack scores every image (higher = more likely a training member) of a
set of known *members* (images the model was trained on) and known *non-members*
(images from the same distribution it never saw). Members are the positive class:
the ROC AUC is the chance that a random member scores above a random non-member,
and the true-positive rate at a low false-positive rate says how many training
images an attacker identifies while wrongly accusing at most that share of
non-members — the number that matters (Carlini et al. 2022), since an average-case
AUC hides a few confidently exposed images.

A rate of false positives can only be measured on enough non-members: at 0.1% that
takes at least 1,000 of them (for one expected false positive); on fewer, the
operating point is reported with ``measurable: false`` and its threshold is the
highest non-member score (no false positive at all).

References:
    Yeom, Giacomelli, Fredrikson, Jha. "Privacy Risk in Machine Learning: Analyzing the
    Connection to Overfitting." CSF 2018.
    Shokri, Stronati, Song, Shmatikov. "Membership Inference Attacks against Machine
    Learning Models." IEEE S&P 2017.
    Carlini, Chien, Nasr, Song, Terzis, Tramer. "Membership Inference Attacks From
    First Principles." IEEE S&P 2022.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pixelguard.checks import check_images, check_labels
from pixelguard.data.base import Dataset
from pixelguard.defenses.detection_metrics import (
    as_scores,
    empirical_threshold,
    roc_auc,
)
from pixelguard.errors import CapabilityError, ShapeError
from pixelguard.metrics.intervals import binomial_interval
from pixelguard.models.base import Classifier, log_probabilities

MEMBERSHIP_SCHEMA = "membership-1.0"
"""Version of :meth:`MembershipResult.to_dict`'s layout."""

REPORTED_FPRS = (0.001, 0.01)
"""The false-positive rates every result reports the true-positive rate at."""

CONFIDENCE = 0.95
"""Level of the two-sided Clopper-Pearson intervals."""

ROC_POINTS = 400
"""Most points of the ROC curve a result keeps (for the report's chart)."""

_EPS = 1e-9

Labelled = Dataset | tuple[torch.Tensor, torch.Tensor]
"""Labelled images: a :class:`Dataset` or ``(x, y)`` tensors."""

SIGNALS = ("loss", "confidence", "margin")
"""Per-image membership signals (all "higher = more likely member"):

- ``loss``: minus the cross-entropy of the true label (Yeom et al.'s loss attack);
- ``confidence``: the probability of the true label;
- ``margin``: log p(true) minus the largest other log-probability (the logit-scaled
  confidence of Carlini et al. 2022, which spreads out the near-1 probabilities).
"""


def as_labelled(data: Labelled, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of a :class:`Dataset` or a pair, checked (images in [0, 1], labels ints).

    Raises:
        ShapeError, RangeError: invalid images or labels.
    """
    x, y = (data.x, data.y) if isinstance(data, Dataset) else data
    check_images(x, name=f"{what} images")
    return x, check_labels(y, x.shape[0], name=f"{what} labels")


def check_membership_inputs(
    model: Classifier,
    members: Labelled,
    non_members: Labelled,
    **others: Labelled | None,
) -> None:
    """Check, before any work, that the image sets fit each other and the model.

    Args:
        model: the target classifier.
        members, non_members: the known members and non-members.
        others: further sets by name (e.g. ``shadow_data``), None to skip.

    Raises:
        ShapeError: an empty set, images of different shapes, or not the model's shape.
        RangeError: labels outside the model's classes, or bad pixel values.
        CapabilityError: a labels-only model (the signals need scores).
    """
    sets = {"members": members, "non-members": non_members}
    sets.update({name.replace("_", "-"): d for name, d in others.items() if d is not None})
    shapes = {}
    for name, data in sets.items():
        x, y = as_labelled(data, name)
        if x.shape[0] == 0:
            raise ShapeError(f"no {name} images")
        shapes[name] = tuple(x.shape[1:])
        check_labels(y, x.shape[0], model.num_classes, name=f"{name} labels")
    first = shapes["members"]
    for name, shape in shapes.items():
        if shape != first:
            raise ShapeError(
                f"members are images of shape {_shape(first)} but {name} of shape {_shape(shape)}"
            )
    if tuple(model.input_shape) != first:
        raise ShapeError(
            f"the model takes images of shape {_shape(tuple(model.input_shape))}, "
            f"the members are {_shape(first)}"
        )
    if not model.capabilities.scores:
        raise CapabilityError(
            "membership inference by loss or shadow models needs class scores; "
            "the model returns labels only"
        )


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def log_probs(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """The model's log-probabilities on ``x`` (N, K), float64 on the CPU."""
    with torch.no_grad():
        scores = model.predict(x).detach().cpu().to(torch.float64)
    return log_probabilities(scores, model.capabilities.output)


def signal(log_p: torch.Tensor, y: torch.Tensor, kind: str = "loss") -> torch.Tensor:
    """One membership signal per image from log-probabilities (higher = member).

    Shape:
        log_p: (N, K); y: (N,) -> (N,) float64.

    Raises:
        ConfigError: an unknown ``kind`` (see :data:`SIGNALS`).
    """
    from pixelguard.errors import ConfigError

    true = log_p.gather(1, y.view(-1, 1)).squeeze(1)
    if kind == "loss":
        return true
    if kind == "confidence":
        return true.exp()
    if kind == "margin":
        others = log_p.clone()
        others.scatter_(1, y.view(-1, 1), float("-inf"))
        return true - others.amax(dim=1)
    raise ConfigError(f"signal must be one of {', '.join(SIGNALS)}, got {kind!r}")


@dataclass(frozen=True)
class OperatingPoint:
    """The attack at the threshold that accuses at most ``target_fpr`` of the non-members.

    Attributes:
        target_fpr: the false-positive rate asked for.
        threshold: images scoring strictly above it are called members.
        true_positives: members called members, of ``n_members``.
        false_positives: non-members called members, of ``n_non_members``.
        n_members, n_non_members: the set sizes.
        measurable: whether there are enough non-members (``>= 1 / target_fpr``) for
            the rate to mean anything; if not, the threshold allows no false positive.
    """

    target_fpr: float
    threshold: float
    true_positives: int
    false_positives: int
    n_members: int
    n_non_members: int
    measurable: bool

    @property
    def tpr(self) -> float:
        """Share of the members identified."""
        return self.true_positives / self.n_members

    @property
    def fpr(self) -> float:
        """Share of the non-members wrongly accused (at most ``target_fpr``)."""
        return self.false_positives / self.n_non_members

    def to_dict(self) -> dict[str, Any]:
        tpr_ci = binomial_interval(self.true_positives, self.n_members, CONFIDENCE)
        fpr_ci = binomial_interval(self.false_positives, self.n_non_members, CONFIDENCE)
        return {
            "target_fpr": self.target_fpr,
            "tpr": _round(self.tpr),
            "tpr_ci": [_round(v) for v in tpr_ci],
            "fpr": _round(self.fpr),
            "fpr_ci": [_round(v) for v in fpr_ci],
            "threshold": _round(self.threshold),
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "measurable": self.measurable,
            "min_non_members": math.ceil(1.0 / self.target_fpr - _EPS),
        }


def operating_point(
    member_scores: torch.Tensor, non_member_scores: torch.Tensor, target_fpr: float
) -> OperatingPoint:
    """The :class:`OperatingPoint` at ``target_fpr`` (threshold from the non-members)."""
    members = as_scores(member_scores, name="member scores")
    non = as_scores(non_member_scores, name="non-member scores")
    threshold = empirical_threshold(non, target_fpr)
    return OperatingPoint(
        target_fpr=target_fpr,
        threshold=threshold,
        true_positives=int((members > threshold).sum()),
        false_positives=int((non > threshold).sum()),
        n_members=members.numel(),
        n_non_members=non.numel(),
        measurable=non.numel() * target_fpr >= 1.0 - _EPS,
    )


def roc_curve(
    member_scores: torch.Tensor, non_member_scores: torch.Tensor, max_points: int = ROC_POINTS
) -> list[tuple[float, float]]:
    """``(fpr, tpr)`` at every distinct threshold, from (0, 0) to (1, 1), thinned to at
    most ``max_points`` (the low-FPR end, where the curve matters, is kept whole).

    An image is called a member when its score is strictly above the threshold.
    """
    members = as_scores(member_scores, name="member scores")
    non = as_scores(non_member_scores, name="non-member scores")
    scores = torch.cat([members, non])
    is_member = torch.cat([torch.ones_like(members), torch.zeros_like(non)])
    order = scores.argsort(descending=True)
    scores, is_member = scores[order], is_member[order]
    tp = is_member.cumsum(0)
    fp = (1 - is_member).cumsum(0)
    # the last position of every run of equal scores is a threshold just below them
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[:-1] != scores[1:]
    tpr = (tp[last] / members.numel()).tolist()
    fpr = (fp[last] / non.numel()).tolist()
    curve = [(0.0, 0.0), *zip(fpr, tpr, strict=True)]
    if len(curve) > max_points:
        keep_low = [p for p in curve if p[0] <= 0.01]
        rest = [p for p in curve if p[0] > 0.01]
        room = max(max_points - len(keep_low), 2)
        step = max(1, math.ceil(len(rest) / room))
        curve = keep_low + rest[::step] + [rest[-1]]
    return [(round(f, 6), round(t, 6)) for f, t in curve]


def membership_advantage(member_scores: torch.Tensor, non_member_scores: torch.Tensor) -> float:
    """Yeom et al.'s membership advantage: the largest TPR - FPR over all thresholds."""
    return max(t - f for f, t in roc_curve(member_scores, non_member_scores, 10**9))


@dataclass(frozen=True)
class MembershipResult:
    """What one membership attack found.

    Attributes:
        attack: the attack's registered name.
        params: its configuration.
        member_scores: (n_members,) float64, higher = more likely member.
        non_member_scores: (n_non_members,) float64.
        auc: ROC AUC (0.5: chance).
        advantage: the largest TPR - FPR over thresholds.
        points: one :class:`OperatingPoint` per rate of :data:`REPORTED_FPRS`.
        roc: ``(fpr, tpr)`` points, thinned (see :func:`roc_curve`).
        details: attack-specific facts (e.g. the shadow models' accuracies).
        wall_time: seconds.
    """

    attack: str
    params: dict[str, Any]
    member_scores: torch.Tensor
    non_member_scores: torch.Tensor
    auc: float
    advantage: float
    points: list[OperatingPoint]
    roc: list[tuple[float, float]]
    details: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0

    @classmethod
    def from_scores(
        cls,
        attack: str,
        params: dict[str, Any],
        member_scores: torch.Tensor,
        non_member_scores: torch.Tensor,
        *,
        fprs: Sequence[float] = REPORTED_FPRS,
        details: dict[str, Any] | None = None,
        wall_time: float = 0.0,
    ) -> MembershipResult:
        """Measure AUC, advantage, the operating points and the ROC curve from the scores."""
        members = as_scores(member_scores, name="member scores")
        non = as_scores(non_member_scores, name="non-member scores")
        return cls(
            attack=attack,
            params=params,
            member_scores=members,
            non_member_scores=non,
            auc=roc_auc(non, members),
            advantage=membership_advantage(members, non),
            points=[operating_point(members, non, f) for f in fprs],
            roc=roc_curve(members, non),
            details=details or {},
            wall_time=wall_time,
        )

    @property
    def n_members(self) -> int:
        return self.member_scores.numel()

    @property
    def n_non_members(self) -> int:
        return self.non_member_scores.numel()

    def point(self, target_fpr: float) -> OperatingPoint:
        """The operating point at ``target_fpr`` (one of those measured)."""
        for p in self.points:
            if math.isclose(p.target_fpr, target_fpr):
                return p
        raise KeyError(target_fpr)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable summary (per-image scores are left out: see
        :meth:`score_arrays`)."""
        return {
            "schema_version": MEMBERSHIP_SCHEMA,
            "attack": {"name": self.attack, "params": self.params},
            "n_members": self.n_members,
            "n_non_members": self.n_non_members,
            "auc": _round(self.auc),
            "advantage": _round(self.advantage),
            "intervals": {"method": "clopper-pearson", "confidence": CONFIDENCE},
            "operating_points": [p.to_dict() for p in self.points],
            "roc": [list(p) for p in self.roc],
            "details": self.details,
            "wall_time": round(self.wall_time, 4),
        }

    def score_arrays(self) -> dict[str, np.ndarray]:
        """The per-image scores, for an ``.npz``."""
        return {
            "member_scores": self.member_scores.numpy(),
            "non_member_scores": self.non_member_scores.numpy(),
        }


def _round(value: float) -> float:
    return value if math.isinf(value) else round(float(value), 6)
