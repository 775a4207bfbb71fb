"""MNIST-style IDX files (``t10k-images-idx3-ubyte[.gz]`` and friends), parsed with NumPy.

IDX: two zero bytes, a type code, the number of dimensions, one big-endian uint32
per dimension, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from pixelguard.data.base import Dataset, check_split
from pixelguard.errors import DataError, ShapeError

IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
PREFIXES = {"train": "train", "test": "t10k"}
"""File name prefix of each split."""
_SEPARATORS = ("-", ".")


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file (gzipped when its name ends in ``.gz``) of ``ndim`` dimensions.

    Shape:
        -> the array the header describes, in native byte order.

    Raises:
        DataError: missing, unreadable, bad magic number, wrong dimensions or size.
    """
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc}); expected an IDX file") from exc
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise DataError(f"{path}: bad magic number {raw[:4].hex()}; expected an IDX file")
    if raw[3] != ndim:
        raise DataError(f"{path}: IDX file has {raw[3]} dimensions; expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; expected {header} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[raw[2]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: holds {len(raw) - header} bytes of data; "
            f"expected {expected} for shape {shape}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _find(folder: Path, prefix: str, kind: str) -> Path | None:
    """``<prefix>-<kind>-idxD-ubyte`` in ``folder``, plain or ``.gz``, ``-`` or ``.`` joined."""
    ndim = "3" if kind == "images" else "1"
    for sep in _SEPARATORS:
        for suffix in ("", ".gz"):
            candidate = folder / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{suffix}"
            if candidate.is_file():
                return candidate
    return None


def is_idx(path: Path) -> bool:
    """True when ``path`` is named like an IDX file, or is a folder holding one."""
    if path.is_dir():
        return any(is_idx(p) for p in path.iterdir() if p.is_file())
    return "idx1-ubyte" in path.name or "idx3-ubyte" in path.name


def _labels_beside(images: Path) -> Path:
    name = images.name
    for sep in _SEPARATORS:
        if f"images{sep}idx3" in name:
            base = name.replace(f"images{sep}idx3", f"labels{sep}idx1").removesuffix(".gz")
            for candidate in (images.with_name(base), images.with_name(base + ".gz")):
                if candidate.is_file():
                    return candidate
            raise DataError(f"{images}: no labels file {base}[.gz] beside it")
    raise DataError(f"{images}: expected an images file named like t10k-images-idx3-ubyte[.gz]")


def _pairs(path: Path, split: str) -> list[tuple[Path, Path]]:
    if path.is_file():
        return [(path, _labels_beside(path))]
    wanted = ["train", "test"] if split == "all" else [split]
    pairs = []
    for name in wanted:
        prefix = PREFIXES[name]
        images, labels = _find(path, prefix, "images"), _find(path, prefix, "labels")
        if images is None or labels is None:
            found = sorted(p.name for p in path.iterdir() if is_idx(p)) or ["none"]
            raise DataError(
                f"{path}: no MNIST {name} files ({prefix}-images-idx3-ubyte[.gz] and "
                f"{prefix}-labels-idx1-ubyte[.gz]); found IDX files: {', '.join(found)}"
            )
        pairs.append((images, labels))
    return pairs


def load_mnist(path: str | Path, *, split: str = "test") -> Dataset:
    """Load MNIST IDX files: a folder holding them, or an images file directly.

    In a folder, ``split`` picks ``t10k-*`` (test) or ``train-*`` files, or both
    (``"all"``, train first). Given an images file, its labels file is the one beside
    it with ``labels-idx1`` in place of ``images-idx3``, and ``split`` is ignored.

    Args:
        path: a folder of IDX files, or an ``*-images-idx3-ubyte[.gz]`` file.
        split: ``"test"``, ``"train"`` or ``"all"``.

    Returns:
        The dataset, class names ``"0"`` .. ``"9"`` (``None`` for labels above 9).

    Shape:
        x: (N, 1, H, W) float32 in [0, 1] (28x28 for MNIST); y: (N,) int64.

    Raises:
        DataError: missing, truncated or malformed files, or a missing split.
        ShapeError: not one label per image.
        ConfigError: unknown ``split``.
    """
    path = Path(path)
    check_split(split)
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    pairs = _pairs(path, split)
    images, labels = [], []
    for images_path, labels_path in pairs:
        images.append(read_idx(images_path, 3))
        labels.append(read_idx(labels_path, 1))
        if len(images[-1]) != len(labels[-1]):
            raise ShapeError(
                f"{labels_path}: {len(labels[-1])} labels for {len(images[-1])} images "
                f"in {images_path}; expected one each"
            )
    source = str(pairs[0][0]) if path.is_file() else f"{path} ({split} split)"
    y = np.concatenate(labels)
    digits = y.size > 0 and int(y.max()) < 10
    return Dataset.from_arrays(
        np.concatenate(images),
        y,
        class_names=[str(d) for d in range(10)] if digits else None,
        source=source,
        layout="nchw",
    )
