"""The :class:`Dataset` record every loader returns, and the split names loaders accept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pixelguard.checks import check_images, check_labels
from pixelguard.data.convert import to_canonical, to_labels
from pixelguard.errors import ConfigError, DataError, RangeError, ShapeError

SPLITS = ("train", "test", "all")
"""The values of every loader's ``split`` argument."""


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise :class:`ConfigError`."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return split


def check_limit(limit_per_class: int | None) -> int | None:
    """Return ``limit_per_class`` if it is ``None`` or a positive int, else raise."""
    if limit_per_class is not None and (
        isinstance(limit_per_class, bool)
        or not isinstance(limit_per_class, int)
        or limit_per_class < 1
    ):
        raise ConfigError(f"limit_per_class must be a positive integer, got {limit_per_class!r}")
    return limit_per_class


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images in the canonical convention with their integer labels.

    Construction validates the record, so a :class:`Dataset` always holds a canonical
    batch and one non-negative label per image (below ``len(class_names)`` when the
    class names are known).

    Shape:
        x: (N, C, H, W) float32 in [0, 1].
        y: (N,) int64.

    Raises:
        ShapeError: ``x`` is not 4-D, ``y`` is not 1-D int64, or the counts differ.
        RangeError: pixels outside [0, 1] or not finite, labels negative or too large.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str] | None
    source: str
    index: torch.Tensor | None = None
    """Each image's position in the data as loaded, once a subset or sample was taken
    (None: the images are the loaded data, in order)."""

    def __post_init__(self) -> None:
        check_images(self.x, name=f"images from {self.source}")
        if not isinstance(self.y, torch.Tensor) or self.y.dtype != torch.int64:
            got = self.y.dtype if isinstance(self.y, torch.Tensor) else type(self.y).__name__
            raise ShapeError(f"labels from {self.source} must be an int64 tensor, got {got}")
        check_labels(self.y, int(self.x.shape[0]), name=f"labels from {self.source}")
        if (
            self.class_names is not None
            and len(self.y)
            and int(self.y.max()) >= len(self.class_names)
        ):
            raise RangeError(
                f"labels from {self.source} contain label {int(self.y.max())} "
                f"but there are only {len(self.class_names)} class names"
            )

    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray | torch.Tensor,
        labels: np.ndarray | Sequence[int] | torch.Tensor,
        *,
        class_names: list[str] | None = None,
        source: str = "arrays",
        layout: str = "auto",
        value_range: str = "auto",
    ) -> Dataset:
        """Build a non-empty dataset from image and label arrays, converting and checking.

        Args:
            images: the images; layout and value range as in :func:`to_canonical`.
            labels: one integer label per image.
            class_names: the class names, indexed by label, when known.
            source: where the arrays came from (a path), for messages and reports.
            layout: ``"auto"``, ``"nchw"`` or ``"nhwc"``.
            value_range: ``"auto"``, ``"0-1"`` or ``"0-255"``.

        Shape:
            images: (N, H, W), (N, C, H, W) or (N, H, W, C); labels: (N,)
            -> x: (N, C, H, W) float32 in [0, 1], y: (N,) int64.

        Raises:
            DataError: no images, or a non-numeric dtype.
            ShapeError: wrong image shape, or not one label per image.
            RangeError: pixel values out of range or not finite, labels not whole
                numbers, negative, or beyond the class names.
        """
        x = to_canonical(images, layout=layout, value_range=value_range, name=source)
        if x.shape[0] == 0:
            raise DataError(f"{source}: holds no images; expected at least one")
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        y = to_labels(np.asarray(labels), int(x.shape[0]), name=source)
        return cls(x, y, class_names, source)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:
        return (
            f"Dataset(source={self.source!r}, n={len(self)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )

    @property
    def num_classes(self) -> int:
        """``len(class_names)`` when known, else ``max(y) + 1`` (0 when empty)."""
        if self.class_names is not None:
            return len(self.class_names)
        return int(self.y.max()) + 1 if len(self.y) else 0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: slice | Sequence[int] | np.ndarray | torch.Tensor) -> Dataset:
        """The images at ``indices`` (a slice, integer indices, or a boolean mask).

        Shape:
            indices: slice, (M,) int or (N,) bool -> Dataset of M images.

        Raises:
            ShapeError: ``indices`` is not one-dimensional.
        """
        if isinstance(indices, slice):
            index: torch.Tensor = torch.arange(len(self))[indices]
        else:
            index = torch.as_tensor(
                np.asarray(indices) if isinstance(indices, Sequence) else indices
            )
        if index.dim() != 1:
            raise ShapeError(f"subset indices must be 1-D, got shape {tuple(index.shape)}")
        index = index.nonzero().flatten() if index.dtype == torch.bool else index.to(torch.int64)
        origin = index if self.index is None else self.index[index]
        return Dataset(self.x[index], self.y[index], self.class_names, self.source, origin)

    def take_per_class(self, limit: int) -> Dataset:
        """The first ``limit`` images of each class, in their original order.

        Shape:
            -> Dataset of at most ``limit * num_classes`` images.

        Raises:
            ConfigError: ``limit`` is not a positive integer.
        """
        check_limit(limit)
        order = torch.argsort(self.y, stable=True)
        sorted_y = self.y[order]
        starts = torch.searchsorted(sorted_y, sorted_y, right=False)
        rank = torch.arange(len(sorted_y)) - starts
        keep = order[rank < limit].sort().values
        return self.subset(keep)

    def sample(self, limit: int | None, seed: int = 0) -> Dataset:
        """At most ``limit`` images drawn at random with ``seed``, kept in dataset order.

        What ``--limit N`` means on every command: on ordered data (the MNIST test file
        is sorted by writer, some folders by class) the first N images are not a fair
        sample. ``None`` or ``limit >= len(self)`` keeps every image.

        Raises:
            ConfigError: ``limit`` is not a positive integer.
        """
        if limit is None:
            return self
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be a positive number of images, got {limit!r}")
        if limit >= len(self):
            return self
        generator = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(len(self), generator=generator)[:limit].sort().values
        return self.subset(chosen)

    def in_class_order(self, names: Sequence[str]) -> Dataset:
        """The same images labelled in the model's class order ``names``.

        Label ``i`` becomes the class ``names[i]``. Data that carries class names (an
        image folder's sub-folders, sorted alphabetically; CIFAR-10's meta file) is
        relabelled by name; data without names (arrays) is only given ``names``.

        Raises:
            ConfigError: repeated names, or a class of the data missing from ``names``.
        """
        names = [str(n) for n in names]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"class names must be distinct and non-empty, got {names}")
        if self.class_names is None:
            return Dataset(self.x, self.y, names, self.source, self.index)
        missing = [n for n in self.class_names if n not in names]
        if missing:
            raise ConfigError(
                f"{self.source} has classes {', '.join(missing)} that the class order "
                f"({', '.join(names)}) does not name"
            )
        mapping = torch.tensor([names.index(n) for n in self.class_names], dtype=torch.int64)
        return Dataset(self.x, mapping[self.y], names, self.source, self.index)
