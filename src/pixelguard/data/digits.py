"""The embedded default: scikit-learn's bundled 8x8 digits, available offline."""

from __future__ import annotations

import numpy as np

from pixelguard.data.base import Dataset, check_split

TEST_SIZE = 360
"""Images in the test split; the other 1,437 of the 1,797 form the train split."""
SEED = 0
"""Seed of the fixed permutation that splits the digits."""


def load_digits(split: str = "test") -> Dataset:
    """Load scikit-learn's 8x8 digits (values 0..16, scaled to [0, 1]).

    The split is fixed: a permutation from ``numpy.random.default_rng(0)`` of the
    1,797 images, whose last 360 are ``"test"`` and the rest ``"train"``; ``"all"``
    gives every image in the original order.

    Args:
        split: ``"test"``, ``"train"`` or ``"all"``.

    Returns:
        A dataset with class names ``"0"`` .. ``"9"``.

    Shape:
        x: (N, 1, 8, 8) float32 in [0, 1] with N = 360, 1437 or 1797; y: (N,) int64.

    Raises:
        ConfigError: unknown ``split``.

    Example:
        >>> load_digits().x.shape
        torch.Size([360, 1, 8, 8])
    """
    check_split(split)
    from sklearn.datasets import load_digits as sklearn_digits  # slow import: only when used

    bunch = sklearn_digits()
    images, labels = bunch.images / 16.0, bunch.target
    if split != "all":
        order = np.random.default_rng(SEED).permutation(len(labels))
        chosen = order[-TEST_SIZE:] if split == "test" else order[:-TEST_SIZE]
        images, labels = images[chosen], labels[chosen]
    return Dataset.from_arrays(
        images,
        labels,
        class_names=[str(d) for d in range(10)],
        source=f"digits ({split} split)",
        value_range="0-1",
    )
