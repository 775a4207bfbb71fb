"""What a training-set screen returns, and how well its flags match the true poison.

Each screening method (:mod:`~pixelguard.poisoning.spectral`,
:mod:`~pixelguard.poisoning.activation_clustering`) is a frozen dataclass with
``scan(features, labels) -> ScanResult``; :func:`screening_metrics` scores the flags
against a known poison mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from pixelguard.errors import ShapeError
from pixelguard.metrics.intervals import binomial_interval


@dataclass(frozen=True)
class ClassScan:
    """What a screen found in one class.

    Attributes:
        label: the class.
        n: its training images.
        n_flagged: how many of them were flagged.
        details: method-specific numbers (cluster sizes, separation, ...).
    """

    label: int
    n: int
    n_flagged: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "n": self.n, "n_flagged": self.n_flagged, **self.details}


@dataclass(frozen=True)
class ScanResult:
    """The flags of one screen over a training set.

    Attributes:
        method: the method's name (``"spectral"``, ``"activation-clustering"``).
        settings: its settings, as passed to its constructor.
        flagged: which training images look poisoned.
        scores: how suspicious each image is (higher: more; comparable within a
            method, across classes).
        classes: per-class findings, in class order (classes without images omitted).

    Shape:
        flagged: (N,) bool; scores: (N,) float32.
    """

    method: str
    settings: dict[str, Any]
    flagged: torch.Tensor
    scores: torch.Tensor
    classes: list[ClassScan]

    @property
    def n_flagged(self) -> int:
        return int(self.flagged.sum())

    def most_suspicious(self, limit: int) -> torch.Tensor:
        """Indices of up to ``limit`` flagged images, the highest score first."""
        index = torch.nonzero(self.flagged).flatten()
        order = torch.argsort(self.scores[index], descending=True, stable=True)
        return index[order[:limit]]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: method, settings, counts and per-class findings (no per-image arrays)."""
        return {
            "method": self.method,
            "settings": dict(self.settings),
            "n_images": int(self.flagged.numel()),
            "n_flagged": self.n_flagged,
            "classes": [c.to_dict() for c in self.classes],
        }


@dataclass(frozen=True)
class ScreeningMetrics:
    """Flags against the true poison mask: counts, precision, recall, F1 (with intervals).

    Precision is 0.0 when nothing was flagged, recall 0.0 when nothing was poisoned;
    their Clopper-Pearson intervals are None then.
    """

    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int
    precision: float
    recall: float
    f1: float
    precision_ci: tuple[float, float] | None
    recall_ci: tuple[float, float] | None
    confidence: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "precision_ci": None if self.precision_ci is None else list(self.precision_ci),
            "recall_ci": None if self.recall_ci is None else list(self.recall_ci),
            "confidence": self.confidence,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "false_negatives": self.false_negatives,
            "true_negatives": self.true_negatives,
        }


def screening_metrics(
    flagged: torch.Tensor, true_mask: torch.Tensor, *, confidence: float = 0.95
) -> ScreeningMetrics:
    """Precision, recall and F1 of ``flagged`` as a detector of ``true_mask``.

    Shape:
        flagged, true_mask: (N,) bool.

    Raises:
        ShapeError: not two 1-D masks of the same length.

    Example:
        >>> m = screening_metrics(torch.tensor([1, 1, 0, 0]).bool(), torch.tensor([1, 0, 1, 0]).bool())
        >>> m.precision, m.recall, m.f1
        (0.5, 0.5, 0.5)
    """
    flags = torch.as_tensor(flagged).detach().cpu().bool()
    truth = torch.as_tensor(true_mask).detach().cpu().bool()
    if flags.ndim != 1 or flags.shape != truth.shape:
        raise ShapeError(
            f"flags and poison mask must be 1-D of one length, got {tuple(flags.shape)} "
            f"and {tuple(truth.shape)}"
        )
    tp = int((flags & truth).sum())
    fp = int((flags & ~truth).sum())
    fn = int((~flags & truth).sum())
    tn = int((~flags & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return ScreeningMetrics(
        true_positives=tp,
        false_positives=fp,
        false_negatives=fn,
        true_negatives=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        precision_ci=binomial_interval(tp, tp + fp, confidence) if tp + fp else None,
        recall_ci=binomial_interval(tp, tp + fn, confidence) if tp + fn else None,
        confidence=confidence,
    )


def class_indices(labels: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """``(label, indices)`` for every class present, in label order (one sort, no image loop)."""
    order = torch.argsort(labels, stable=True)
    values, counts = torch.unique_consecutive(labels[order], return_counts=True)
    return list(zip(values.tolist(), torch.split(order, counts.tolist()), strict=True))


def check_features(
    features: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``features`` as float32 (N, D) and ``labels`` as int64 (N,), on the CPU.

    Raises:
        ShapeError: wrong ranks, lengths, or features that are not finite.
    """
    feats = torch.as_tensor(features).detach().cpu().float()
    labs = torch.as_tensor(labels).detach().cpu().long()
    if feats.ndim != 2 or labs.ndim != 1 or feats.shape[0] != labs.shape[0]:
        raise ShapeError(
            f"need features (N, D) and labels (N,), got {tuple(feats.shape)} and {tuple(labs.shape)}"
        )
    if not bool(torch.isfinite(feats).all()):
        raise ShapeError("features contain NaN or infinite values")
    return feats, labs
