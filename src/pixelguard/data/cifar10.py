"""CIFAR-10 "python version" batches, read with an unpickler that builds only arrays.

The official files (``data_batch_1`` .. ``data_batch_5``, ``test_batch``,
``batches.meta``) are pickled dicts. A pickle can run any code when loaded, so
:class:`SafeUnpickler` resolves only the NumPy helpers that rebuild arrays and
dtypes; any other global (``os.system``, a class, ...) is refused with a DataError.
"""

from __future__ import annotations

import codecs
import importlib
import pickle
import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from pixelguard.data.base import Dataset, check_split
from pixelguard.errors import DataError, ShapeError

CLASS_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
"""The standard CIFAR-10 class names, used when ``batches.meta`` is absent."""
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
WRAPPER = "cifar-10-batches-py"
"""The folder the official archive unpacks into; looked for inside the given folder."""
_BATCH_NAME = re.compile(r"data_batch_\d+|test_batch")
_TRAIN_NAME = re.compile(r"data_batch_(\d+)")
_SIDE, _PIXELS = 32, 3 * 32 * 32
_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
)


def _core(module: str) -> Any:
    """``numpy._core.<module>`` (NumPy 2) or ``numpy.core.<module>`` (NumPy 1)."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


def _allowed() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _core("multiarray"), _core("numeric")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


ALLOWED_GLOBALS = _allowed()
"""The only globals a CIFAR-10 pickle may name: NumPy array and dtype rebuilders."""


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses the rest."""

    def __init__(self, file: IO[bytes], where: str) -> None:
        super().__init__(file, encoding="bytes")
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.where}: refusing to unpickle {module}.{name}; CIFAR-10 batches "
                "hold only NumPy arrays, lists and bytes"
            ) from None


def _text(key: object) -> object:
    return key.decode("latin1") if isinstance(key, bytes) else key


def read_pickle(path: Path) -> dict[str, Any]:
    """Unpickle a CIFAR-10 batch or meta file safely; keys come back as ``str``.

    Raises:
        DataError: missing or corrupt file, a refused global, or not a dict.
    """
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        with path.open("rb") as f:
            loaded = SafeUnpickler(f, str(path)).load()
    except _READ_ERRORS as exc:
        raise DataError(
            f"{path}: cannot read the pickle ({exc}); expected a CIFAR-10 batch"
        ) from exc
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: holds a {type(loaded).__name__}; expected a dict")
    return {str(_text(k)): v for k, v in loaded.items()}


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one batch file.

    Shape:
        -> images (N, 3, 32, 32) uint8, labels (N,).

    Raises:
        DataError: unreadable file or missing ``data``/``labels`` entries.
        ShapeError: data not (N, 3072) uint8, or not one label per image.
    """
    batch = read_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{path}: expected entries 'data' and 'labels', found {sorted(batch)}")
    data = batch["data"]
    try:
        labels = np.asarray(batch["labels"])
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: 'labels' is not a flat list of integers ({exc})") from exc
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ShapeError(f"{path}: 'data' is {got}; expected a uint8 array (N, {_PIXELS})")
    if data.shape[1] != _PIXELS:
        raise ShapeError(f"{path}: 'data' has shape {data.shape}; expected (N, {_PIXELS})")
    if labels.shape != (len(data),):
        raise ShapeError(f"{path}: {labels.size} labels for {len(data)} images; expected one each")
    return data.reshape(-1, 3, _SIDE, _SIDE), labels


def _class_names(folder: Path) -> list[str]:
    meta_path = folder / META
    if not meta_path.is_file():
        return list(CLASS_NAMES)
    names = read_pickle(meta_path).get("label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{meta_path}: expected a non-empty 'label_names' list")
    return [str(_text(n)) for n in names]


def is_cifar10(path: Path) -> bool:
    """True when ``path`` is a batch file, or a folder holding batches (or their folder)."""
    if path.is_file():
        return bool(_BATCH_NAME.fullmatch(path.name))
    if (path / WRAPPER).is_dir():
        return True
    return any(p.is_file() and _BATCH_NAME.fullmatch(p.name) for p in path.iterdir())


def load_cifar10(path: str | Path, *, split: str = "test") -> Dataset:
    """Load CIFAR-10 python batches: a folder of them, or one batch file.

    In a folder (or its ``cifar-10-batches-py`` sub-folder), ``split`` picks
    ``test_batch``, the ``data_batch_*`` files present, or both (``"all"``, train
    first). Class names come from ``batches.meta`` when present. Files are read with
    :class:`SafeUnpickler`, never with plain :func:`pickle.load`.

    Args:
        path: the folder, or one ``data_batch_N`` / ``test_batch`` file.
        split: ``"test"``, ``"train"`` or ``"all"``; ignored for a single file.

    Returns:
        The dataset.

    Shape:
        x: (N, 3, 32, 32) float32 in [0, 1]; y: (N,) int64.

    Raises:
        DataError: missing or corrupt files, a refused pickle, or a missing split.
        ShapeError: malformed batch arrays.
        ConfigError: unknown ``split``.
    """
    path = Path(path)
    check_split(split)
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_file():
        files, folder, source = [path], path.parent, str(path)
    else:
        folder = path / WRAPPER if (path / WRAPPER).is_dir() else path
        numbered = {
            int(match[1]): p
            for p in folder.iterdir()
            if p.is_file() and (match := _TRAIN_NAME.fullmatch(p.name))
        }
        train = [numbered[i] for i in sorted(numbered)]
        test = [folder / TEST_BATCH] if (folder / TEST_BATCH).is_file() else []
        files = {"train": train, "test": test, "all": train + test}[split]
        if not files:
            found = sorted(p.name for p in folder.iterdir())
            shown = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "")
            raise DataError(
                f"{folder}: no CIFAR-10 {split} batches (data_batch_1..5 / test_batch); "
                f"found {shown or 'nothing'}"
            )
        source = f"{folder} ({split} split)"
    batches = [read_batch(f) for f in files]
    return Dataset.from_arrays(
        np.concatenate([images for images, _ in batches]),
        np.concatenate([labels for _, labels in batches]),
        class_names=_class_names(folder),
        source=source,
        layout="nchw",
        value_range="0-255",
    )
