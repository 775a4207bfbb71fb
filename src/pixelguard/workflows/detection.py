"""How well a detector catches an attack: against the plain attacker and an adaptive one.

:func:`evaluate_detector` splits the images (seeded) into a part the detector is
fitted and calibrated on and a held-out part. It attacks the held-out images the
model classifies correctly; the adversarial images found are the positives, the
held-out clean images the negatives. At each target false-positive rate it reports
precision, recall (the detection rate), F1 and the observed false-positive rate at
the calibrated threshold, plus the AUROC over all thresholds. Every rate measured
on the held-out images comes with a 95% Clopper-Pearson interval, so a report says
how precisely its images pin the rate down; ``limit`` attacks a seeded random
subset of the held-out images (:meth:`~pixelguard.data.base.Dataset.sample`), not
the first ones, which on ordered data are no fair sample.

:func:`evaluate_trigger_detector` measures a detector of backdoor inputs (STRIP) the
same way, with the held-out images stamped with a trigger as the positives.

The adaptive attacker runs the same attack on
:class:`~pixelguard.defenses.detector_aware.DetectorAwareClassifier` at each
threshold: it succeeds only with an image that is misclassified *and* not flagged
(:meth:`~pixelguard.defenses.detector_aware.DetectorAwareClassifier.evades`).
Its detection rate is over the same images as the plain one (those the plain attack
fooled): the share it could not fool undetected.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pixelguard.attacks.base import Attack, fools
from pixelguard.data.base import Dataset
from pixelguard.defenses.detect import Detector
from pixelguard.defenses.detection_metrics import (
    DetectionMetrics,
    binomial_interval,
    detection_metrics,
    roc_auc,
)
from pixelguard.defenses.detector_aware import DetectorAwareClassifier
from pixelguard.errors import ConfigError
from pixelguard.models.base import Classifier
from pixelguard.poisoning.triggers import Trigger

logger = logging.getLogger(__name__)

DETECTION_SCHEMA = "detection-1.0"
"""Version of :meth:`DetectionEvaluation.to_dict`'s layout."""

CONFIDENCE = 0.95
"""Level of the two-sided Clopper-Pearson intervals in the report."""

_EPS = 1e-9
"""Slack for ``fpr * n`` landing a hair below an integer in floating point."""

RunsProgress = Callable[[int, int], None]
"""Called as ``progress(attack_runs_finished, attack_runs_total)``."""


@dataclass(frozen=True)
class AdaptiveOutcome:
    """The adaptive attacker at one threshold.

    Attributes:
        n_attacked: images attacked (the same as the plain attack's).
        n_evaded: images it turned into undetected misclassifications.
        n_fooled: images the plain attack fooled.
        n_caught: of those, images the adaptive attack could not fool undetected.
    """

    n_attacked: int
    n_evaded: int
    n_fooled: int
    n_caught: int

    @property
    def evasion_rate(self) -> float:
        """Share of the attacked images fooled undetected (0.0 when none was attacked)."""
        return self.n_evaded / self.n_attacked if self.n_attacked else 0.0

    @property
    def detection_rate(self) -> float | None:
        """``n_caught / n_fooled`` (None: the plain attack fooled none)."""
        return self.n_caught / self.n_fooled if self.n_fooled else None

    def detection_rate_interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """Clopper-Pearson interval of :attr:`detection_rate` (None when it is None)."""
        return (
            binomial_interval(self.n_caught, self.n_fooled, confidence) if self.n_fooled else None
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_attacked": self.n_attacked,
            "n_evaded": self.n_evaded,
            "evasion_rate": round(self.evasion_rate, 6),
            "n_fooled": self.n_fooled,
            "n_caught": self.n_caught,
            "detection_rate": _rounded(self.detection_rate),
            "detection_rate_ci": _rounded_interval(self.detection_rate_interval()),
        }


@dataclass(frozen=True)
class OperatingPoint:
    """The detector at the threshold calibrated for one target false-positive rate.

    ``to_dict`` gives the measured ``fpr`` and ``detection_rate`` (the recall) with
    their :data:`CONFIDENCE` intervals, ``fpr_ci`` and ``detection_rate_ci``, each
    ``[low, high]`` (None without images to measure it on).
    """

    target_fpr: float
    metrics: DetectionMetrics
    adaptive: AdaptiveOutcome | None

    def to_dict(self) -> dict[str, Any]:
        values = self.metrics.to_dict()
        return {
            "target_fpr": self.target_fpr,
            **{k: _rounded(v) if isinstance(v, float) else v for k, v in values.items()},
            "fpr_ci": _rounded_interval(self.metrics.fpr_interval(CONFIDENCE)),
            "detection_rate": _rounded(self.metrics.recall),
            "detection_rate_ci": _rounded_interval(self.metrics.recall_interval(CONFIDENCE)),
            "adaptive": self.adaptive.to_dict() if self.adaptive is not None else None,
        }


@dataclass(frozen=True)
class DetectionEvaluation:
    """A detector against one attack, plain and (optionally) adaptive.

    Attributes:
        detector: the detector's configuration.
        attack: the attack's name and configuration.
        fit_fraction, seed: how the images were split.
        limit: the most held-out images used, a random subset drawn with ``seed``
            (None: all).
        n_fit: clean images the detector was fitted and calibrated on.
        n_test: held-out clean images used (the negatives).
        n_attacked: held-out images the model classified correctly, attacked.
        n_adversarial: adversarial images the attack found (the positives).
        auroc: area under the ROC curve (None without adversarial images).
        points: one per target false-positive rate.
        wall_time: seconds.
    """

    detector: dict[str, Any]
    attack: dict[str, Any]
    fit_fraction: float
    seed: int
    limit: int | None
    n_fit: int
    n_test: int
    n_attacked: int
    n_adversarial: int
    auroc: float | None
    points: list[OperatingPoint]
    wall_time: float

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable data (schema ``detection-1.0``)."""
        return {
            "schema_version": DETECTION_SCHEMA,
            "detector": self.detector,
            "attack": self.attack,
            "split": {
                "fit_fraction": self.fit_fraction,
                "seed": self.seed,
                "limit": self.limit,
                "n_fit": self.n_fit,
                "n_test": self.n_test,
            },
            "intervals": {"method": "clopper-pearson", "confidence": CONFIDENCE},
            "n_attacked": self.n_attacked,
            "n_adversarial": self.n_adversarial,
            "auroc": _rounded(self.auroc),
            "operating_points": [point.to_dict() for point in self.points],
            "wall_time": round(self.wall_time, 4),
        }


def evaluate_detector(
    model: Classifier,
    dataset: Dataset,
    detector: Detector,
    attack: Attack,
    *,
    fprs: Sequence[float] = (0.01, 0.05),
    fit_fraction: float = 0.5,
    adaptive: bool = True,
    limit: int | None = None,
    seed: int = 0,
    progress: RunsProgress | None = None,
) -> DetectionEvaluation:
    """Fit ``detector`` on part of ``dataset``, attack the rest, measure detection.

    Logs a warning for each target rate too small to be measured on the held-out
    clean images (fewer than ``1 / fpr`` of them).

    Args:
        model: the protected classifier.
        dataset: the images; a seeded ``fit_fraction`` of them fits the detector.
        detector: the detector to fit and evaluate.
        attack: the (untargeted) attack, run as configured.
        fprs: target false-positive rates, each in (0, 1).
        fit_fraction: share of the images used to fit and calibrate, in (0, 1).
        adaptive: also run the adaptive attacker at each threshold.
        limit: use at most this many held-out images, drawn at random with
            ``seed`` and kept in dataset order (None: all).
        seed: seed of the split and of the ``limit`` subset.
        progress: called after each attack run.

    Returns:
        The :class:`DetectionEvaluation`.

    Raises:
        ConfigError: bad rates, fraction or limit, or too few images to split.
        CapabilityError: an adaptive run with an attack that needs gradients (the
            model-plus-detector classifier offers none), or a model lacking what
            the attack needs.
    """
    _check_rates(fprs, fit_fraction)
    attack.check_model(model)
    if adaptive:
        attack.check_model(DetectorAwareClassifier(model, detector, threshold=0.0))
    start = time.perf_counter()
    fit_index, held_out, clean_scores = _fit_and_hold_out(
        detector, dataset, fprs, fit_fraction, limit, seed
    )
    x, y = held_out.x, held_out.y
    correct = model.predict(x).argmax(dim=1).cpu() == y
    xa, ya = x[correct], y[correct]
    runs = 1 + (len(fprs) if adaptive else 0)
    plain = attack.run(model, xa, ya)
    _report(progress, 1, runs)
    adv_scores = detector.score(plain.x_adv[plain.success])
    auroc = (
        roc_auc(clean_scores, adv_scores) if adv_scores.numel() and clean_scores.numel() else None
    )
    points = []
    for number, fpr in enumerate(fprs, start=2):
        threshold = detector.threshold_for_fpr(fpr)
        outcome = None
        if adaptive:
            outcome = _adaptive(model, detector, threshold, attack, xa, ya, plain.success)
            _report(progress, number, runs)
        points.append(
            OperatingPoint(fpr, detection_metrics(clean_scores, adv_scores, threshold), outcome)
        )
    return DetectionEvaluation(
        detector=detector.params(),
        attack={"name": attack.name, "params": attack.to_dict()},
        fit_fraction=fit_fraction,
        seed=seed,
        limit=limit,
        n_fit=int(fit_index.numel()),
        n_test=len(held_out),
        n_attacked=int(ya.numel()),
        n_adversarial=int(adv_scores.numel()),
        auroc=auroc,
        points=points,
        wall_time=time.perf_counter() - start,
    )


def evaluate_trigger_detector(
    model: Classifier,
    dataset: Dataset,
    detector: Detector,
    trigger: Trigger,
    *,
    target: int | None,
    fprs: Sequence[float] = (0.01, 0.05),
    fit_fraction: float = 0.5,
    limit: int | None = None,
    seed: int = 0,
    attack: Attack | None = None,
    progress: RunsProgress | None = None,
) -> DetectionEvaluation:
    """Fit ``detector`` on part of ``dataset``; the positives are the rest with ``trigger``.

    The inference-time side of a backdoor: the held-out clean images are the
    negatives; the same images with the trigger stamped that the model then sends to
    ``target`` (every class but ``target`` is stamped; with ``target=None``, an
    all-to-all backdoor, any changed prediction counts) are the positives. A trigger
    the model ignores is no attack, so those images are not positives.

    With ``attack`` (one that can be targeted, e.g. sparse-rs at a few pixels), the
    adaptive attacker runs at each threshold: it changes the positives further, within
    the attack's budget, to reach ``target`` on model plus detector, so it succeeds only
    with an input the model sends to the target and the detector does not flag. An
    all-to-all backdoor (``target=None``) has no adaptive run.

    Returns:
        The :class:`DetectionEvaluation`; its ``attack`` names the trigger (and the
        adaptive attack) and ``n_attacked`` counts the stamped images.

    Raises:
        ConfigError: bad rates, fraction or limit, or too few images to split.
        ShapeError: a trigger for images of another shape.
    """
    _check_rates(fprs, fit_fraction)
    start = time.perf_counter()
    fit_index, held_out, clean_scores = _fit_and_hold_out(
        detector, dataset, fprs, fit_fraction, limit, seed
    )
    stamp = (
        held_out.y != target
        if target is not None
        else torch.ones_like(held_out.y, dtype=torch.bool)
    )
    triggered = trigger.apply(held_out.x[stamp])
    predicted = model.predict(triggered).argmax(dim=1).cpu()
    hit = predicted == target if target is not None else predicted != held_out.y[stamp]
    adv_scores = detector.score(triggered[hit])
    auroc = (
        roc_auc(clean_scores, adv_scores) if adv_scores.numel() and clean_scores.numel() else None
    )
    adaptive = attack is not None and target is not None
    if attack is not None and target is not None:
        attack.check_model(DetectorAwareClassifier(model, detector, threshold=0.0))
    positives, positive_labels = triggered[hit], held_out.y[stamp][hit]
    points = []
    for number, fpr in enumerate(fprs, start=1):
        threshold = detector.threshold_for_fpr(fpr)
        outcome = None
        if attack is not None and target is not None and positives.shape[0]:
            outcome = _adaptive_trigger(
                model, detector, threshold, attack, positives, positive_labels, target
            )
            _report(progress, number, len(fprs))
        points.append(
            OperatingPoint(fpr, detection_metrics(clean_scores, adv_scores, threshold), outcome)
        )
    return DetectionEvaluation(
        detector=detector.params(),
        attack={
            "name": "trigger",
            "params": {"trigger": trigger.spec, "target": target},
            "adaptive": (
                {"name": attack.name, "params": attack.to_dict()}
                if attack is not None and adaptive
                else None
            ),
        },
        fit_fraction=fit_fraction,
        seed=seed,
        limit=limit,
        n_fit=int(fit_index.numel()),
        n_test=len(held_out),
        n_attacked=int(stamp.sum()),
        n_adversarial=int(adv_scores.numel()),
        auroc=auroc,
        points=points,
        wall_time=time.perf_counter() - start,
    )


def _check_rates(fprs: Sequence[float], fit_fraction: float) -> None:
    if not fprs or not all(0.0 < f < 1.0 for f in fprs):
        raise ConfigError(f"false-positive rates must lie in (0, 1), got {list(fprs)}")
    if not 0.0 < fit_fraction < 1.0:
        raise ConfigError(f"fit_fraction must lie in (0, 1), got {fit_fraction}")


def _fit_and_hold_out(
    detector: Detector,
    dataset: Dataset,
    fprs: Sequence[float],
    fit_fraction: float,
    limit: int | None,
    seed: int,
) -> tuple[torch.Tensor, Dataset, torch.Tensor]:
    """Split ``dataset`` (seeded), fit ``detector`` on one part and score the other:
    the fit indices, the held-out images (a ``limit`` sample) and their clean scores."""
    fit_index, test_index = _split(len(dataset), fit_fraction, seed)
    held_out = dataset.subset(test_index).sample(limit, seed)
    _warn_unmeasurable(len(held_out), fprs)
    detector.fit(dataset.x[fit_index])
    return fit_index, held_out, detector.score(held_out.x)


def _split(n: int, fit_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded fit and held-out image indices, each in ascending order."""
    n_fit = round(n * fit_fraction)
    if n_fit < 1 or n_fit >= n:
        raise ConfigError(
            f"cannot split {n} images into a fit part ({fit_fraction:g}) and a test part"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[:n_fit].sort().values, order[n_fit:].sort().values


def _warn_unmeasurable(n_clean: int, fprs: Sequence[float]) -> None:
    """Warn for each rate that ``n_clean`` clean images expect less than one false positive of."""
    for fpr in fprs:
        if n_clean * fpr < 1.0 - _EPS:
            logger.warning(
                "%d held-out clean images are too few to measure a false-positive rate of "
                "%g (that takes at least %d, for one expected false positive); "
                "see its confidence interval",
                n_clean,
                fpr,
                math.ceil(1.0 / fpr - _EPS),
            )


def _adaptive(
    model: Classifier,
    detector: Detector,
    threshold: float,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    plain_fooled: torch.Tensor,
) -> AdaptiveOutcome:
    """Run ``attack`` on model plus detector at ``threshold``; success means evading."""
    combined = DetectorAwareClassifier(model, detector, threshold=threshold)
    result = attack.run(combined, x, y)
    evaded = combined.evades(result.x_adv, y).cpu()
    fooled = plain_fooled.cpu()
    n_fooled = int(fooled.sum())
    return AdaptiveOutcome(
        n_attacked=int(y.numel()),
        n_evaded=int(evaded.sum()),
        n_fooled=n_fooled,
        n_caught=n_fooled - int((evaded & fooled).sum()),
    )


def _adaptive_trigger(
    model: Classifier,
    detector: Detector,
    threshold: float,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    target: int,
) -> AdaptiveOutcome:
    """Push triggered inputs on to ``target`` through model plus detector at ``threshold``."""
    combined = DetectorAwareClassifier(model, detector, threshold=threshold)
    result = attack.run(combined, x, y, target=target)
    pred = combined.predict(result.x_adv).argmax(dim=1).cpu()
    labels = y.cpu()
    evaded = fools(pred, labels, torch.full_like(labels, target), combined.detected_class)
    n, n_evaded = int(labels.numel()), int(evaded.sum())
    return AdaptiveOutcome(n_attacked=n, n_evaded=n_evaded, n_fooled=n, n_caught=n - n_evaded)


def _report(progress: RunsProgress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _rounded(value: float | None) -> float | None:
    """``value`` rounded for reports; None for None and for infinite thresholds."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, 6)


def _rounded_interval(interval: tuple[float, float] | None) -> list[float] | None:
    """``[low, high]`` rounded for reports; None for None."""
    return None if interval is None else [round(bound, 6) for bound in interval]
