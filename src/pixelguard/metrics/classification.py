"""Classification metrics: the confusion matrix and per-class precision, recall and F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from pixelguard.errors import ConfigError, ShapeError


def _as_labels(values: torch.Tensor | Sequence[int], name: str) -> torch.Tensor:
    labels = torch.as_tensor(values).detach().cpu()
    if labels.ndim != 1:
        raise ShapeError(
            f"{name} must be one label per image (1-D), got shape {tuple(labels.shape)}"
        )
    return labels.to(torch.int64)


def confusion_matrix(
    y_true: torch.Tensor | Sequence[int], y_pred: torch.Tensor | Sequence[int], num_classes: int
) -> torch.Tensor:
    """Count how often each true class was predicted as each class.

    Args:
        y_true: the true labels.
        y_pred: the predicted labels.
        num_classes: the number of classes K; every label must lie in 0..K-1.

    Returns:
        ``matrix[t, p]``: the images of true class ``t`` predicted as ``p``.

    Shape:
        y_true, y_pred: (N,) -> (K, K) int64.

    Raises:
        ShapeError: the label lists are not 1-D or differ in length.
        ConfigError: ``num_classes`` below 1 or a label outside 0..K-1.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    true = _as_labels(y_true, "y_true")
    pred = _as_labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ShapeError(f"y_true has {true.numel()} labels but y_pred has {pred.numel()}")
    both = torch.cat([true, pred])
    if both.numel() and (int(both.min()) < 0 or int(both.max()) >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}")
    counts = torch.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def per_class_report(
    y_true: torch.Tensor | Sequence[int], y_pred: torch.Tensor | Sequence[int], num_classes: int
) -> list[dict[str, Any]]:
    """Precision, recall and F1 of every class (0.0 where a ratio is undefined).

    Args:
        y_true: the true labels.
        y_pred: the predicted labels.
        num_classes: the number of classes K.

    Returns:
        One record per class, in class order: ``class``, ``precision``, ``recall``,
        ``f1`` and ``support`` (the images of that true class).

    Shape:
        y_true, y_pred: (N,).

    Raises:
        ShapeError, ConfigError: as for :func:`confusion_matrix`.
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes).to(torch.float64)
    hits = matrix.diagonal()
    predicted = matrix.sum(dim=0)
    actual = matrix.sum(dim=1)
    rows = []
    for k in range(num_classes):
        precision = float(hits[k] / predicted[k]) if predicted[k] else 0.0
        recall = float(hits[k] / actual[k]) if actual[k] else 0.0
        total = precision + recall
        f1 = 2 * precision * recall / total if total else 0.0
        rows.append(
            {
                "class": k,
                "precision": round(precision, 6),
                "recall": round(recall, 6),
                "f1": round(f1, 6),
                "support": int(actual[k]),
            }
        )
    return rows
