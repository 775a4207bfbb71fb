"""What the stateful detectors (Blacklight, feature k-NN) share: the identity of a query's
exact pixels, the SQLite file that keeps their state across restarts, and the lock and
lifecycle around it."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Self

import numpy as np

from pixelguard.errors import ConfigError

META_TABLE = "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"
"""The settings a state file was made with; every detector's file has it, so a file of
one detector (or of other settings) is refused by another."""


def pixel_digest(image: np.ndarray) -> bytes:
    """16 bytes that identify the image's exact pixels and shape."""
    arr = np.ascontiguousarray(image)
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).digest()[:16]


def open_state(
    path: Path, params: dict[str, str], name: str, *, before: dict[str, str] | None = None
) -> sqlite3.Connection:
    """Open (or create) a detector's SQLite state file (WAL) and check what made it.

    Args:
        path: the file; its folder is created.
        params: the settings the state depends on, recorded in a new file.
        name: the detector, for messages.
        before: values of settings that files from earlier versions lack.

    Raises:
        ConfigError: the file was made with other settings (or by another detector).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(META_TABLE)
        stored = dict(db.execute("SELECT name, value FROM meta").fetchall())
        if stored:
            stored = {**(before or {}), **stored}
            if stored != params:
                raise ConfigError(f"{name} state in {path} was made with {stored}, not {params}")
        else:
            db.executemany("INSERT INTO meta VALUES (?, ?)", params.items())
        db.commit()
    except BaseException:
        db.close()
        raise
    return db


class DetectorState(ABC):
    """The lock, the optional state file and the lifecycle of a stateful detector.

    Subclasses set ``_lock`` in ``__init__`` and end it with :meth:`_load`; they say
    how to read their file in :meth:`_open` and how many queries they hold in
    :meth:`_size`.
    """

    _lock: threading.Lock
    _db: sqlite3.Connection | None

    def _load(self, db_path: str | Path | None) -> None:
        """Keep the state in memory only, or in ``db_path``, loading what it holds."""
        self._db = None
        if db_path is not None:
            self._open(Path(db_path))

    @abstractmethod
    def _open(self, path: Path) -> None:
        """Open the state file, load its state and keep the connection in ``_db``."""

    @abstractmethod
    def _size(self) -> int:
        """The number of stored queries (called with the lock held)."""

    def __len__(self) -> int:
        """The number of stored queries."""
        with self._lock:
            return self._size()

    def close(self) -> None:
        """Close the state file (the state in memory stays usable)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
