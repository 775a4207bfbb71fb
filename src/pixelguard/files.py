"""Atomic file writes: a reader never sees a half-written report or checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; on success it replaces ``path``.

    The one crash-safe write of the project: whatever the block writes to the yielded
    path is flushed to disk (fsync) and renamed over ``path`` in one step, so a reader
    sees the old file or the new one, never half of one; on an error (or Ctrl-C) the
    temporary file is removed and ``path`` is untouched. Parent folders are created.

    Example:
        >>> with replaced_atomically("model.pt") as tmp:  # doctest: +SKIP
        ...     torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        descriptor = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through :func:`replaced_atomically`.

    Args:
        path: the file to (re)write; parent folders are created.
        write: called with the open temporary file (binary mode).

    Returns:
        The path written.
    """
    with replaced_atomically(path) as tmp, tmp.open("wb") as handle:
        write(handle)
    return Path(path)


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
