"""Measures: distances between images, and (later) robustness and classification metrics."""

from pixelguard.metrics.distances import changed_pixels, l0_features, l0_pixels, l2, linf

__all__ = ["changed_pixels", "l0_features", "l0_pixels", "l2", "linf"]
