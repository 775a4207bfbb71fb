"""The loss-threshold membership attack (Yeom et al. 2018).

A model fits its training images better than new ones, so the lower an image's loss,
the more likely it was a member. The attack needs the model's scores and the true
labels, nothing else: no shadow models, no training. Its score is minus the
cross-entropy of the true label; ``signal="margin"`` scores the logit-scaled
confidence (log p(true) minus the largest other log-probability) instead, which
Carlini et al. 2022 found separates better at low false-positive rates, and
``signal="confidence"`` the true-label probability. The ROC AUC of ``loss`` and
``confidence`` is the same (one is a monotone function of the other); their low-FPR
rates can differ only through ties.

``calibration="class"`` is the cheap per-class version of the calibration that
Carlini et al. 2022 showed matters: some classes are simply easier than others, so a
score is compared with what the model does on images of the same class that are
surely not members. The attacker brings such *reference* images (its own data, none
of them members); each score becomes ``(signal - mean) / std`` of the reference
signals of its class (classes with fewer than two reference images use all of them).

Every operating point's threshold is set on the evaluated non-members themselves,
as is usual in the literature: the rates say how separable members are, the best an
attacker who could calibrate on known non-members would do.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from pixelguard.errors import ConfigError
from pixelguard.leakage.membership import (
    SIGNALS,
    Labelled,
    MembershipResult,
    as_labelled,
    check_membership_inputs,
    log_probs,
    signal,
)
from pixelguard.models.base import Classifier

CALIBRATIONS = ("none", "class")


@dataclass(frozen=True, kw_only=True)
class LossThresholdAttack:
    """Score each image by how well the model fits it: ``-loss`` (or another signal).

    Attributes:
        signal: ``"loss"`` (minus cross-entropy, the headline), ``"confidence"`` or
            ``"margin"`` (see :data:`~pixelguard.leakage.membership.SIGNALS`).
        calibration: ``"none"`` (the raw signal) or ``"class"`` (standardised per
            class on reference non-members, which :meth:`run` then needs).

    Example:
        >>> result = LossThresholdAttack().run(model, (x_in, y_in), (x_out, y_out))  # doctest: +SKIP
        >>> result.auc  # doctest: +SKIP
    """

    name = "loss-threshold"
    signal: Literal["loss", "confidence", "margin"] = "loss"
    calibration: Literal["none", "class"] = "none"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ConfigError(f"signal must be one of {', '.join(SIGNALS)}, got {self.signal!r}")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration, as plain data."""
        return asdict(self)

    def score(
        self, model: Classifier, data: Labelled, reference: Labelled | None = None
    ) -> torch.Tensor:
        """The membership score of every image of ``data`` (N,) float64.

        Raises:
            ConfigError: ``calibration="class"`` without ``reference`` images.
        """
        x, y = as_labelled(data, "images")
        raw = signal(log_probs(model, x), y, self.signal)
        if self.calibration == "none":
            return raw
        if reference is None:
            raise ConfigError("calibration='class' needs reference images (known non-members)")
        x_ref, y_ref = as_labelled(reference, "reference")
        ref = signal(log_probs(model, x_ref), y_ref, self.signal)
        return _standardised(raw, y, ref, y_ref, model.num_classes)

    def run(
        self,
        model: Classifier,
        members: Labelled,
        non_members: Labelled,
        *,
        reference: Labelled | None = None,
    ) -> MembershipResult:
        """Score the known members and non-members and measure how well they separate.

        Args:
            model: the target classifier.
            members, non_members: the known members and non-members to judge.
            reference: the attacker's own non-member images, for
                ``calibration="class"`` (ignored otherwise).

        Raises:
            ShapeError, RangeError, CapabilityError: see
                :func:`~pixelguard.leakage.membership.check_membership_inputs`.
            ConfigError: ``calibration="class"`` without ``reference``.
        """
        if self.calibration == "class" and reference is None:
            raise ConfigError("calibration='class' needs reference images (known non-members)")
        used = reference if self.calibration == "class" else None
        check_membership_inputs(model, members, non_members, reference=used)
        start = time.perf_counter()
        member_scores = self.score(model, members, used)
        non_member_scores = self.score(model, non_members, used)
        details = (
            {} if used is None else {"n_reference": int(as_labelled(used, "reference")[1].numel())}
        )
        return MembershipResult.from_scores(
            self.name,
            self.to_dict(),
            member_scores,
            non_member_scores,
            details=details,
            wall_time=time.perf_counter() - start,
        )


def _standardised(
    raw: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, y_ref: torch.Tensor, k: int
) -> torch.Tensor:
    """``(raw - mean) / std`` of the reference signals of each image's class.

    Shape:
        raw, y: (N,); ref, y_ref: (M,) -> (N,) float64.
    """
    mean = torch.full((k,), float(ref.mean()), dtype=torch.float64)
    std = torch.full((k,), float(ref.std()) if ref.numel() > 1 else 1.0, dtype=torch.float64)
    for c in range(k):
        chosen = ref[y_ref == c]
        if chosen.numel() >= 2:
            mean[c], std[c] = chosen.mean(), chosen.std()
    return (raw - mean[y]) / std[y].clamp_min(1e-12)
