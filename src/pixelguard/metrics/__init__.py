"""Measures: distances between images, and classification metrics."""

from pixelguard.metrics.classification import confusion_matrix, per_class_report
from pixelguard.metrics.distances import changed_pixels, l0_features, l0_pixels, l2, linf
from pixelguard.metrics.intervals import binomial_interval, clopper_pearson_lower

__all__ = [
    "binomial_interval",
    "changed_pixels",
    "clopper_pearson_lower",
    "confusion_matrix",
    "l0_features",
    "l0_pixels",
    "l2",
    "linf",
    "per_class_report",
]
