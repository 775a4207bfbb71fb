"""Atomic file writes: a reader never sees a half-written report or checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through a temporary file beside it, then rename it into place.

    Args:
        path: the file to (re)write; parent folders are created.
        write: called with the open temporary file (binary mode).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented UTF-8 JSON with a final newline."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Atomically write ``arrays`` as a compressed ``.npz`` (the name is kept as given)."""

    def write(handle: IO[bytes]) -> None:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    return atomic_write(path, write)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` as UTF-8."""
    encoded = text.encode("utf-8")

    def write(handle: IO[bytes]) -> None:
        handle.write(encoded)

    return atomic_write(path, write)
