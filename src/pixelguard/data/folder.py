"""Image files in one sub-folder per class, on disk or packed in a tar archive.

Accepted layouts, below the folder or the archive root:

- ``<class>/<image>``;
- the same inside one or more wrapping folders, e.g. ``mnist_png/<class>/<image>``;
- ``train/<class>/<image>`` and ``test/<class>/<image>`` (the CIFAR-10 JPEG
  tarball), where ``split`` picks the folder and class names come from both.

Archives are streamed and read in memory: nothing from them is written to disk.
Class names are the sorted class folder names; files are read in sorted name order,
so the dataset is ordered class by class.
"""

from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pixelguard.data.base import Dataset, check_limit, check_split
from pixelguard.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SPLIT_FOLDERS = ("train", "test")
MAX_DEPTH = 4
"""Folders deeper than this below the root are not searched for images."""
MAX_IMAGE_BYTES = 64 * 2**20
"""Archive members larger than this are refused rather than read into memory."""
IN_MEMORY_BYTES = 512 * 2**20
"""Archives that decompress to at most this many bytes are read into memory in one go
(much faster than seeking through a compressed stream); larger ones are streamed."""
_OPENERS = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))

_GREY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)

Source = tuple[str, bytes | Path]
"""An image file: where it is (for messages) and its bytes or its path."""
Groups = dict[tuple[str, ...], dict[str, Source]]
"""Image files by folder (path parts below the root), then by file name."""


def is_tar(path: Path) -> bool:
    """True when ``path`` has a tar archive suffix (``.tar``, ``.tar.gz``, ``.tgz``, ...)."""
    return path.name.lower().endswith(TAR_SUFFIXES)


def _skipped(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _is_image(name: str) -> bool:
    return not _skipped(name) and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _prune(files: dict[str, Source], limit: int | None) -> None:
    if limit is not None and len(files) > 2 * limit:
        for name in sorted(files)[limit:]:
            del files[name]


def _scan_folder(root: Path, limit: int | None) -> Groups:
    groups: Groups = {}
    for folder, dirs, names in os.walk(root, followlinks=True):
        parts = Path(folder).relative_to(root).parts
        dirs[:] = [] if len(parts) >= MAX_DEPTH else sorted(d for d in dirs if not _skipped(d))
        images = sorted(n for n in names if _is_image(n))[:limit]
        if images:
            groups[parts] = {n: (str(Path(folder, n)), Path(folder, n)) for n in images}
    return groups


def _member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> bytes:
    """A regular member's bytes, read straight from the decompressed archive stream."""
    where = f"{path}:{member.name}"
    if member.size > MAX_IMAGE_BYTES:
        raise DataError(f"{where}: {member.size} bytes; expected under {MAX_IMAGE_BYTES} bytes")
    stream = archive.fileobj
    if stream is None:
        raise DataError(f"{where}: the archive is closed")
    stream.seek(member.offset_data)
    data = stream.read(member.size)
    if len(data) != member.size:
        raise DataError(f"{where}: truncated; expected {member.size} bytes, got {len(data)}")
    return data


def _open_tar(path: Path) -> tarfile.TarFile:
    if path.stat().st_size <= IN_MEMORY_BYTES:
        with path.open("rb") as f:
            magic = f.read(6)
        opener = next((o for m, o in _OPENERS if magic.startswith(m)), open)
        with opener(path, "rb") as f:
            raw = f.read(IN_MEMORY_BYTES + 1)
        if len(raw) <= IN_MEMORY_BYTES:
            return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    return tarfile.open(path, mode="r:*")


def _scan_tar(path: Path, limit: int | None) -> Groups:
    groups: Groups = {}
    try:
        with _open_tar(path) as archive:
            for member in archive:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if not member.isreg() or not parts or not _is_image(parts[-1]):
                    continue
                if member.name.startswith("/") or ".." in parts or member.issparse():
                    logger.warning("%s: skipping unsafe or sparse member %r", path, member.name)
                    continue
                if any(_skipped(p) for p in parts[:-1]):
                    continue
                files = groups.setdefault(parts[:-1], {})
                files[parts[-1]] = (f"{path}:{member.name}", _member_bytes(archive, member, path))
                _prune(files, limit)
    except _TAR_ERRORS as exc:
        raise DataError(
            f"{path}: cannot read the tar archive ({exc}); expected a valid .tar"
        ) from exc
    return groups


def _strip_wrappers(groups: Groups) -> Groups:
    while (
        all(len(k) >= 2 for k in groups)
        and len({k[0] for k in groups}) == 1
        and next(iter(groups))[0] not in SPLIT_FOLDERS
    ):
        groups = {k[1:]: v for k, v in groups.items()}
    return groups


def _resolve(
    groups: Groups, split: str, where: Path
) -> tuple[list[str], list[tuple[str, dict[str, Source]]], bool]:
    """Class names, the (class, files) groups to read in order, and whether splits were used."""
    if not groups:
        raise DataError(
            f"{where}: no image files found; expected one sub-folder per class holding "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} files"
        )
    if () in groups:
        example = sorted(groups[()])[0]
        raise DataError(
            f"{where}: image files such as {example} lie directly in the top folder; "
            "expected one sub-folder per class"
        )
    groups = _strip_wrappers(groups)
    depths = {len(k) for k in groups}
    if depths == {1}:
        names = sorted(k[0] for k in groups)
        return names, [(k[0], groups[k]) for k in sorted(groups)], False
    if depths == {2} and {k[0] for k in groups} <= set(SPLIT_FOLDERS):
        found = [s for s in SPLIT_FOLDERS if any(k[0] == s for k in groups)]
        chosen = found if split == "all" else [split]
        if split not in found and split != "all":
            raise DataError(
                f"{where}: no {split!r} folder; found split folders: {', '.join(found)}"
            )
        names = sorted({k[1] for k in groups})
        picked = [(k[1], groups[k]) for s in chosen for k in sorted(groups) if k[0] == s]
        return names, picked, True
    examples = ", ".join("/".join(k) for k in sorted(groups)[:3])
    raise DataError(
        f"{where}: cannot tell the classes from the folder layout (image folders such as "
        f"{examples}); expected <class>/<image>, optionally inside one folder, "
        "or train|test/<class>/<image>"
    )


def _decode(data: bytes | Path, where: str) -> np.ndarray:
    """Pixels of one image file: (H, W) for grey, (H, W, 3) for colour, uint8."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            image.load()
            if image.mode in _WIDE_MODES:
                raise DataError(
                    f"{where}: {image.mode} images (16-bit or float) are not supported; "
                    "expected 8-bit grey or RGB"
                )
            if image.mode in _GREY_MODES:
                return np.asarray(image.convert("L"))
            colour = image.convert("RGBA") if image.mode in ("P", "PA") else image
            return np.asarray(colour.convert("RGB"))
    except _DECODE_ERRORS as exc:
        raise DataError(
            f"{where}: cannot read the image ({exc}); expected a valid image file"
        ) from exc


def _stack(pixels: list[np.ndarray], where: list[str]) -> np.ndarray:
    """One (N, H, W, C) uint8 array; grey images become RGB if any image is RGB."""
    height, width = pixels[0].shape[:2]
    for array, name in zip(pixels, where, strict=True):
        if array.shape[:2] != (height, width):
            raise DataError(
                f"{name}: image is {array.shape[1]}x{array.shape[0]} but {where[0]} is "
                f"{width}x{height}; expected all images the same size"
            )
    channels = 3 if any(p.ndim == 3 for p in pixels) else 1
    out = np.empty((len(pixels), height, width, channels), dtype=np.uint8)
    for i, array in enumerate(pixels):
        out[i] = array if array.ndim == 3 else array[..., None]
    return out


def load_image_folder(
    path: str | Path, *, split: str = "test", limit_per_class: int | None = None
) -> Dataset:
    """Load a folder of image files with one sub-folder per class, or a tar of one.

    Grey images give one channel and colour images three; a mix is read as RGB.
    Alpha channels are dropped. ``split`` matters only for ``train``/``test`` layouts.

    Args:
        path: the folder, or a ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2`` or
            ``.tar.xz`` archive of it.
        split: ``"test"``, ``"train"`` or ``"all"`` (train then test).
        limit_per_class: read only the first this many files (by name) of each class.

    Returns:
        The dataset, ordered class by class; class names are the folder names.

    Shape:
        x: (N, C, H, W) float32 in [0, 1] with C in {1, 3}; y: (N,) int64.

    Raises:
        DataError: missing path, unreadable archive or image, no images, an
            unrecognised layout, a missing split, or images of different sizes.
        ConfigError: unknown ``split`` or a bad ``limit_per_class``.
    """
    path = Path(path)
    check_split(split)
    check_limit(limit_per_class)
    if path.is_dir():
        groups = _scan_folder(path, limit_per_class)
    elif path.is_file() and is_tar(path):
        groups = _scan_tar(path, limit_per_class)
    elif path.exists():
        raise DataError(f"{path}: expected a folder of class sub-folders or a .tar archive")
    else:
        raise DataError(f"no such file or folder: {path}")
    class_names, picked, has_splits = _resolve(groups, split, path)
    label_of = {name: i for i, name in enumerate(class_names)}
    counts = dict.fromkeys(class_names, 0)
    labels: list[int] = []
    where: list[str] = []
    pixels: list[np.ndarray] = []
    for class_name, files in picked:
        names = sorted(files)
        if limit_per_class is not None:
            names = names[: max(limit_per_class - counts[class_name], 0)]
        counts[class_name] += len(names)
        for name in names:
            display, data = files[name]
            where.append(display)
            pixels.append(_decode(data, display))
            labels.append(label_of[class_name])
    notes = [f"{split} split"] if has_splits else []
    if limit_per_class is not None:
        notes.append(f"at most {limit_per_class} per class")
    source = f"{path} ({', '.join(notes)})" if notes else str(path)
    logger.info("read %d images of %d classes from %s", len(pixels), len(class_names), source)
    return Dataset.from_arrays(
        _stack(pixels, where),
        np.asarray(labels, dtype=np.int64),
        class_names=class_names,
        source=source,
        layout="nhwc",
        value_range="0-255",
    )
