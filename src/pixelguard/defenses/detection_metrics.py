"""How well a detector separates adversarial from clean images, from its scores.

Scores are "higher = more suspicious"; an image is flagged when its score is
strictly above the threshold. Adversarial images are the positive class.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pixelguard.errors import ConfigError, RangeError, ShapeError
from pixelguard.metrics.intervals import binomial_interval

logger = logging.getLogger(__name__)

Scores = torch.Tensor | np.ndarray | Sequence[float]
"""Detector scores: any 1-D array of numbers."""

_EPS = 1e-9
"""Slack for ``fpr * n`` landing a hair off an integer in floating point."""


def as_scores(scores: Scores, *, name: str = "scores") -> torch.Tensor:
    """Detector scores as a 1-D float64 CPU tensor.

    Raises:
        ShapeError: not one-dimensional.
        RangeError: NaN among the scores.
    """
    if isinstance(scores, torch.Tensor):
        s = scores.detach().to(device="cpu", dtype=torch.float64)
    else:
        s = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    if s.dim() != 1:
        raise ShapeError(f"{name} must be one score per image (1-D), got shape {tuple(s.shape)}")
    if bool(torch.isnan(s).any()):
        raise RangeError(f"{name} contain NaN")
    return s


def _check_fpr(fpr: float) -> None:
    if not 0.0 <= fpr <= 1.0:
        raise ConfigError(f"fpr must lie in [0, 1], got {fpr}")


def empirical_threshold(clean_scores: Scores, fpr: float) -> float:
    """The lowest clean score above which at most ``fpr`` of the clean scores lie.

    Flagging ``score > threshold`` then flags at most ``floor(fpr * n)`` of these
    clean images (fewer when scores tie). ``-inf`` when ``fpr`` allows flagging all.

    Shape:
        clean_scores: (n,).
    """
    _check_fpr(fpr)
    s = as_scores(clean_scores, name="clean scores").sort().values
    n = s.numel()
    if n == 0:
        raise ShapeError("no clean scores to set a threshold from")
    allowed = math.floor(fpr * n + _EPS)
    return float("-inf") if allowed >= n else float(s[n - allowed - 1])


def conformal_threshold(calibration_scores: Scores, fpr: float) -> float:
    """A threshold whose false-positive rate on *new* clean images is at most ``fpr``.

    The ``ceil((1 - fpr) * (n + 1))``-th smallest of ``n`` held-out clean scores
    (split conformal): for a new clean image exchangeable with them,
    ``P(score > threshold) <= fpr``. ``+inf`` (flag nothing) when ``n`` is too small
    for the requested rate, with a warning; ``-inf`` (flag everything) when
    ``fpr`` is 1.

    Shape:
        calibration_scores: (n,).

    References:
        Vovk, Gammerman, Shafer. "Algorithmic Learning in a Random World." 2005;
        Angelopoulos, Bates. "A gentle introduction to conformal prediction."
        arXiv:2107.07511.
    """
    _check_fpr(fpr)
    s = as_scores(calibration_scores, name="calibration scores").sort().values
    n = s.numel()
    if n == 0:
        raise ShapeError("no calibration scores to set a threshold from")
    rank = math.ceil((1.0 - fpr) * (n + 1) - _EPS)
    if rank < 1:
        return float("-inf")
    if rank > n:
        logger.warning(
            "%d calibration images cannot guarantee a false-positive rate of %g "
            "(that takes at least 1/fpr - 1); the threshold flags nothing",
            n,
            fpr,
        )
        return float("inf")
    return float(s[rank - 1])


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values``, ties sharing the mean of their ranks.

    Shape:
        values: (n,) -> (n,) float64.

    Example:
        >>> average_ranks(torch.tensor([3.0, 1.0, 3.0])).tolist()
        [2.5, 1.0, 2.5]
    """
    ordered, order = values.sort()
    _, inverse, counts = torch.unique_consecutive(ordered, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)
    mean_rank = last - (counts.to(torch.float64) - 1.0) / 2.0
    ranks = torch.empty_like(mean_rank[inverse])
    ranks[order] = mean_rank[inverse]
    return ranks


def roc_auc(clean_scores: Scores, adv_scores: Scores) -> float:
    """Area under the ROC curve: the probability that an adversarial image scores
    higher than a clean one, ties counting one half (the Mann-Whitney statistic).

    1.0 is perfect separation, 0.5 no better than chance.

    Shape:
        clean_scores: (n_clean,); adv_scores: (n_adv,).

    Raises:
        ShapeError: either set is empty.

    Example:
        >>> roc_auc([0.1, 0.2], [0.3, 0.4])
        1.0
    """
    clean = as_scores(clean_scores, name="clean scores")
    adv = as_scores(adv_scores, name="adversarial scores")
    n_clean, n_adv = clean.numel(), adv.numel()
    if n_clean == 0 or n_adv == 0:
        raise ShapeError(f"AUROC needs clean and adversarial scores, got {n_clean} and {n_adv}")
    ranks = average_ranks(torch.cat([clean, adv]))
    u = float(ranks[n_clean:].sum()) - n_adv * (n_adv + 1) / 2.0
    return u / (n_clean * n_adv)


def tpr_at_fpr(clean_scores: Scores, adv_scores: Scores, fpr: float) -> float:
    """Share of adversarial images flagged at the threshold that flags at most ``fpr``
    of the clean images (:func:`empirical_threshold`).

    Shape:
        clean_scores: (n_clean,); adv_scores: (n_adv,).
    """
    threshold = empirical_threshold(clean_scores, fpr)
    adv = as_scores(adv_scores, name="adversarial scores")
    if adv.numel() == 0:
        raise ShapeError("no adversarial scores")
    return float((adv > threshold).double().mean())


@dataclass(frozen=True)
class DetectionMetrics:
    """Confusion counts and rates at one threshold; adversarial is positive.

    Precision is 0.0 when nothing is flagged, F1 is 0.0 when precision and recall are.
    """

    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float
    recall: float
    f1: float
    fpr: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain, JSON-serialisable values."""
        return asdict(self)

    def fpr_interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """:func:`binomial_interval` of the false-positive rate (None without clean images)."""
        n_clean = self.false_positives + self.true_negatives
        return binomial_interval(self.false_positives, n_clean, confidence) if n_clean else None

    def recall_interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """:func:`binomial_interval` of the recall (None without adversarial images)."""
        n_adv = self.true_positives + self.false_negatives
        return binomial_interval(self.true_positives, n_adv, confidence) if n_adv else None


def detection_metrics(
    clean_scores: Scores, adv_scores: Scores, threshold: float
) -> DetectionMetrics:
    """Precision, recall (true-positive rate), F1 and false-positive rate at ``threshold``.

    Shape:
        clean_scores: (n_clean,); adv_scores: (n_adv,).

    Example:
        >>> detection_metrics([0.1, 0.6], [0.7, 0.2], 0.5).f1
        0.5
    """
    clean = as_scores(clean_scores, name="clean scores")
    adv = as_scores(adv_scores, name="adversarial scores")
    tp = int((adv > threshold).sum())
    fp = int((clean > threshold).sum())
    fn, tn = adv.numel() - tp, clean.numel() - fp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / adv.numel() if adv.numel() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return DetectionMetrics(
        threshold=float(threshold),
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        fpr=fp / clean.numel() if clean.numel() else 0.0,
    )
