"""Loaders into the canonical tensor (float32, [0, 1], NCHW) plus integer labels.

:func:`load_data` picks the loader from what it is given; the loaders can also be
called directly.
"""

from __future__ import annotations

from pathlib import Path

from pixelguard.data.arrays import load_npy
from pixelguard.data.base import Dataset, check_limit, check_split
from pixelguard.data.cifar10 import is_cifar10, load_cifar10
from pixelguard.data.class_names import nearest_class_names, read_class_names, resolve_class
from pixelguard.data.convert import check_layout, check_value_range, to_canonical
from pixelguard.data.digits import load_digits
from pixelguard.data.download import download_cifar10, download_mnist
from pixelguard.data.folder import is_tar, load_image_folder
from pixelguard.data.mnist import is_idx, load_mnist
from pixelguard.errors import ConfigError, DataError

__all__ = [
    "Dataset",
    "download_cifar10",
    "download_mnist",
    "load_cifar10",
    "load_data",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "load_npy",
    "nearest_class_names",
    "read_class_names",
    "resolve_class",
    "to_canonical",
]

DIGITS = "digits"
"""The name of the embedded default dataset."""


def _load_path(
    path: Path,
    labels: str | Path | None,
    layout: str,
    value_range: str,
    split: str,
    limit_per_class: int | None,
) -> Dataset:
    if path.is_file() and path.name.lower().endswith((".npy", ".npz")):
        dataset = load_npy(path, labels, layout=layout, value_range=value_range)
    elif labels is not None or layout != "auto" or value_range != "auto":
        raise ConfigError(
            f"{path}: labels=, layout= and value_range= apply only to .npy/.npz files"
        )
    elif is_idx(path):
        dataset = load_mnist(path, split=split)
    elif is_cifar10(path):
        dataset = load_cifar10(path, split=split)
    elif path.is_dir() or is_tar(path):
        return load_image_folder(path, split=split, limit_per_class=limit_per_class)
    else:
        raise DataError(
            f"{path}: unrecognised data file; expected .npy, .npz, a .tar(.gz) of class "
            "folders, an MNIST IDX file or a CIFAR-10 batch"
        )
    return dataset if limit_per_class is None else dataset.take_per_class(limit_per_class)


def load_data(
    spec: str | Path,
    *,
    labels: str | Path | None = None,
    layout: str = "auto",
    value_range: str = "auto",
    split: str = "test",
    limit_per_class: int | None = None,
) -> Dataset:
    """Load a dataset from a name or a path, choosing the loader from what it finds.

    - ``"digits"``: scikit-learn's bundled 8x8 digits (:func:`load_digits`), offline.
    - ``.npy`` images with ``labels=`` a ``.npy`` of labels, or a ``.npz`` with
      ``x``/``y`` (:func:`load_npy`); ``layout`` and ``value_range`` apply here only.
    - a folder holding MNIST IDX files, or an images IDX file (:func:`load_mnist`).
    - a folder holding CIFAR-10 python batches, or one batch (:func:`load_cifar10`).
    - any other folder, or a ``.tar``/``.tar.gz``/``.tgz``, of class sub-folders of
      image files (:func:`load_image_folder`).

    Args:
        spec: ``"digits"`` or a path.
        labels: the labels file for ``.npy`` images.
        layout: ``"auto"``, ``"nchw"`` or ``"nhwc"`` (see :func:`to_canonical`).
        value_range: ``"auto"``, ``"0-1"`` or ``"0-255"``.
        split: ``"test"``, ``"train"`` or ``"all"``, where the source has splits.
        limit_per_class: keep only the first this many images of each class (read
            only those from folders and archives).

    Returns:
        The dataset.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64.

    Raises:
        DataError: missing path, unreadable or inconsistent data.
        ShapeError: wrong shapes, or not one label per image.
        RangeError: pixel values or labels out of range.
        ConfigError: unknown ``layout``/``value_range``/``split``, a bad
            ``limit_per_class``, or options that do not apply to the source.

    Example:
        >>> load_data("digits", limit_per_class=5).x.shape
        torch.Size([50, 1, 8, 8])
    """
    check_layout(layout)
    check_value_range(value_range)
    check_split(split)
    check_limit(limit_per_class)
    if isinstance(spec, str) and spec == DIGITS:
        if labels is not None or layout != "auto" or value_range != "auto":
            raise ConfigError("labels=, layout= and value_range= do not apply to 'digits'")
        dataset = load_digits(split)
        return dataset if limit_per_class is None else dataset.take_per_class(limit_per_class)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"no such file or folder: {path} (expected a path or {DIGITS!r})")
    return _load_path(path, labels, layout, value_range, split, limit_per_class)
