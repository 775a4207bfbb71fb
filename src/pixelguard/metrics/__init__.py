"""Measures: distances between images, and classification metrics."""

from pixelguard.metrics.classification import confusion_matrix, per_class_report
from pixelguard.metrics.distances import changed_pixels, l0_features, l0_pixels, l2, linf

__all__ = [
    "changed_pixels",
    "confusion_matrix",
    "l0_features",
    "l0_pixels",
    "l2",
    "linf",
    "per_class_report",
]
