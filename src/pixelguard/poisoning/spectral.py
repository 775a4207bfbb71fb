"""Spectral signatures: poison stands out along the top singular vector of a class.

References:
    Tran, Li, Madry, "Spectral Signatures in Backdoor Attacks", NeurIPS 2018,
    https://arxiv.org/abs/1811.00636
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from pixelguard.errors import ConfigError
from pixelguard.poisoning.screening import ClassScan, ScanResult, check_features, class_indices


@dataclass(frozen=True, kw_only=True)
class SpectralSignatures:
    """Per class, project the centred penultimate features on their top singular vector.

    Two ways to choose how many images of a class to flag:

    - ``epsilon`` given (the paper's rule): the share of poison expected in a class;
      the ``removal_factor * epsilon`` share with the largest squared projection is
      flagged in *every* class (Tran et al. remove 1.5 epsilon).
    - ``epsilon=None`` (the default): estimate it per class. The projections of a
      class are split in two by exact 1-D 2-means; the *separation* is the share of
      their variance the split explains (about 2/pi = 0.64 for a Gaussian, near 1 for
      two distant groups; clean MNIST classes give 0.64-0.70 with a small CNN). A
      class counts as poisoned when its separation is at least ``min_separation``
      and its smaller side holds at most ``max_share`` of it. Then
      ``removal_factor`` times the smaller side's size is flagged, nearest the small
      side first; other classes are left alone.

    Args:
        epsilon: expected poison share per class in (0, 1], or None to estimate it.
        removal_factor: flag this many times the (expected or estimated) poison.
        min_separation: least separation of a poisoned class; only with
            ``epsilon=None``.
        max_share: largest share of a class the smaller side may hold.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> feats = torch.randn(200, 8, generator=g)
        >>> feats[:20] += 6.0
        >>> result = SpectralSignatures().scan(feats, torch.zeros(200, dtype=torch.long))
        >>> bool(result.flagged[:20].all())
        True
    """

    epsilon: float | None = None
    removal_factor: float = 1.5
    min_separation: float = 0.8
    max_share: float = 0.5

    name = "spectral"

    def __post_init__(self) -> None:
        if self.epsilon is not None and not 0.0 < self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in (0, 1] or None, got {self.epsilon}")
        if not self.removal_factor >= 1.0:
            raise ConfigError(f"removal_factor must be at least 1, got {self.removal_factor}")
        if not 0.0 <= self.min_separation <= 1.0:
            raise ConfigError(f"min_separation must be in [0, 1], got {self.min_separation}")
        if not 0.0 < self.max_share <= 0.5:
            raise ConfigError(f"max_share must be in (0, 0.5], got {self.max_share}")

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scan(self, features: torch.Tensor, labels: torch.Tensor) -> ScanResult:
        """Flag the images whose features carry a class's spectral signature.

        Shape:
            features: (N, D) float; labels: (N,) int64.

        Returns:
            The flags; ``scores`` are squared projections over the class's variance
            (with ``epsilon``) or the signed distance past the 2-means split toward the
            small side, in projection standard deviations (without).
        """
        feats, labs = check_features(features, labels)
        flagged = torch.zeros(labs.shape[0], dtype=torch.bool)
        scores = torch.zeros(labs.shape[0])
        groups = class_indices(labs)
        splits = [_ClassSplit.of(feats[index]) for _, index in groups]
        classes = []
        for (label, index), split in zip(groups, splits, strict=True):
            score, flags, details = self._flag(split)
            flagged[index] = flags
            scores[index] = score
            classes.append(ClassScan(label, int(index.numel()), int(flags.sum()), details))
        return ScanResult(self.name, self.settings(), flagged, scores, classes)

    def _flag(self, split: _ClassSplit) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        n = split.projection.shape[0]
        flags = torch.zeros(n, dtype=torch.bool)
        if n < 3:
            return torch.zeros(n), flags, {"skipped": "fewer than 3 images", "poisoned": False}
        spread = split.projection.std().clamp_min(1e-12)
        if self.epsilon is not None:
            score = (split.projection / spread) ** 2
            count = min(n, math.ceil(self.removal_factor * self.epsilon * n))
            flags[torch.topk(score, count).indices] = True
            return score, flags, {"expected_share": self.epsilon, "poisoned": True}
        direction = 1.0 if split.small_high else -1.0
        score = direction * (split.projection - split.threshold) / spread
        share = split.small_size / n
        poisoned = split.separation >= self.min_separation and share <= self.max_share
        if poisoned:
            count = min(n, math.ceil(self.removal_factor * split.small_size))
            flags[torch.topk(score, count).indices] = True
        details = {
            "separation": round(split.separation, 4),
            "small_share": round(share, 4),
            "poisoned": poisoned,
        }
        return score, flags, details


@dataclass(frozen=True)
class _ClassSplit:
    """A class's top-direction projections and their 2-means split."""

    projection: torch.Tensor
    threshold: float
    separation: float
    small_high: bool
    small_size: int

    @classmethod
    def of(cls, feats: torch.Tensor) -> _ClassSplit:
        if feats.shape[0] < 3:
            return cls(torch.zeros(feats.shape[0]), 0.0, 0.0, True, 0)
        projection = top_projection(feats)
        return cls(projection, *two_means_1d(projection))


def top_projection(feats: torch.Tensor) -> torch.Tensor:
    """The centred rows of ``feats`` projected on their top right singular vector.

    Shape:
        feats: (n, D) -> (n,) float32.
    """
    centred = feats.double() - feats.double().mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ vh[0]).float()


def two_means_1d(values: torch.Tensor) -> tuple[float, float, bool, int]:
    """The best split of 1-D values in two groups (exact 2-means, by sorting once).

    Returns:
        ``(threshold, separation, small_is_high, small_size)``: the midpoint between
        the two groups, the share of the variance the split explains (between-group
        variance over total, in [0, 1]), whether the smaller group holds the high
        values, and its size.

    Shape:
        values: (n,) with n >= 2.
    """
    v = torch.sort(values.double()).values
    n = v.shape[0]
    sizes = torch.arange(1, n, dtype=torch.float64)
    prefix = torch.cumsum(v, 0)[:-1]
    mean_low = prefix / sizes
    mean_high = (v.sum() - prefix) / (n - sizes)
    between = sizes * (n - sizes) * (mean_low - mean_high) ** 2 / n**2
    total = v.var(unbiased=False)
    best = int(torch.argmax(between))
    separation = float(between[best] / total) if total > 0 else 0.0
    low_size = best + 1
    threshold = float((v[best] + v[best + 1]) / 2)
    small_high = n - low_size < low_size
    return threshold, min(separation, 1.0), small_high, min(low_size, n - low_size)
