"""Images and labels stored as NumPy ``.npy`` / ``.npz`` files, never unpickled."""

from __future__ import annotations

import logging
import zipfile
import zlib
from pathlib import Path

import numpy as np

from pixelguard.data.base import Dataset
from pixelguard.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("x", "images")
LABEL_KEYS = ("y", "labels")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_READ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _unreadable(path: Path, exc: Exception, what: str) -> DataError:
    if "allow_pickle" in str(exc):
        return DataError(
            f"{path}: {what} holds a pickled object array, which pixelguard never loads; "
            "save plain integer or float arrays"
        )
    return DataError(f"{path}: cannot read {what} ({exc}); expected a valid NumPy file")


def _open(path: Path) -> np.ndarray | np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    with path.open("rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if not head.startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        raise DataError(f"{path}: not a NumPy .npy or .npz file (wrong magic bytes)")
    try:
        loaded: np.ndarray | np.lib.npyio.NpzFile = np.load(path, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc, "the file") from exc
    return loaded


def _member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except _READ_ERRORS as exc:
        raise _unreadable(path, exc, f"array {key!r}") from exc


def _read_array(path: Path) -> np.ndarray:
    loaded = _open(path)
    if not isinstance(loaded, np.ndarray):
        with loaded:
            keys = list(loaded.files)
            if len(keys) != 1:
                raise DataError(f"{path}: expected a single array, found arrays {keys}")
            return _member(loaded, keys[0], path)
    return loaded


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((k for k in wanted if k in keys), None)


_NEEDS_LABELS = (
    "{path} holds images without labels: give them with --labels labels.npy (labels= in "
    "the library), a .npy of one integer class per image, or use a .npz holding x and y"
)


def load_npy(
    path: str | Path,
    labels: str | Path | None = None,
    *,
    layout: str = "auto",
    value_range: str = "auto",
) -> Dataset:
    """Load images from a ``.npy`` file (labels from a second one) or a ``.npz``.

    A ``.npz`` holds arrays ``x`` and ``y`` (or ``images`` and ``labels``); a
    ``labels`` file, when given, replaces its label array. Files are read with
    ``allow_pickle=False``: object arrays are refused, never unpickled.

    Args:
        path: the ``.npy`` images or the ``.npz`` archive.
        labels: a ``.npy`` file of integer labels; required with a ``.npy`` of images.
        layout: ``"auto"``, ``"nchw"`` or ``"nhwc"`` (see :func:`to_canonical`).
        value_range: ``"auto"``, ``"0-1"`` or ``"0-255"``.

    Returns:
        The dataset; class names unknown (``None``).

    Shape:
        images: (N, H, W), (N, C, H, W) or (N, H, W, C); labels: (N,)
        -> x: (N, C, H, W) float32 in [0, 1], y: (N,) int64.

    Raises:
        DataError: missing, corrupt or pickled files, missing arrays, no images.
        ShapeError: wrong image shape or not one label per image.
        RangeError: pixel values out of range or not finite, bad labels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    loaded = _open(path)  # a corrupt file says so before anything asks for labels
    if isinstance(loaded, np.ndarray):
        images, label_array = loaded, None
    else:
        with loaded:
            keys = list(loaded.files)
            image_key, label_key = _pick(keys, IMAGE_KEYS), _pick(keys, LABEL_KEYS)
            if image_key is None or (label_key is None and labels is None):
                raise DataError(
                    f"{path}: expected arrays 'x' and 'y' (or 'images' and 'labels'), found {keys}"
                )
            images = _member(loaded, image_key, path)
            label_array = None if label_key is None else _member(loaded, label_key, path)
    source = str(path)
    if labels is not None:
        if label_array is not None:
            logger.info("%s: using labels from %s instead of its own", path, labels)
        label_array = _read_array(Path(labels))
        source = f"{path} with labels {labels}"
    elif label_array is None:
        raise DataError(_NEEDS_LABELS.format(path=path))
    return Dataset.from_arrays(
        images, label_array, source=source, layout=layout, value_range=value_range
    )
