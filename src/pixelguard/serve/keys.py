"""API keys of the server: a TOML file, re-read when it changes.

The file holds one ``[keys]`` table of ``name = "key"`` or ``name = "sha256:<hexdigest>"``
entries; hashed entries let the file hold no secret. The name identifies the client in
the audit log, the metrics and the limits; the key itself is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import sys
import threading
import time
from pathlib import Path

from pixelguard.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10: the serve extra installs tomli
    import tomli as tomllib

logger = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"


def hash_key(key: str) -> str:
    """The ``sha256:<hexdigest>`` form of ``key``, for a keys file that holds no secret."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def read_keys(path: Path) -> dict[str, str]:
    """The ``[keys]`` table of ``path``: name -> key or ``sha256:<hexdigest>``.

    Raises:
        ConfigError: an unreadable file, no ``[keys]`` table, or an entry that is not
            a non-empty string (or a malformed digest).
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the keys file {path}: {exc}") from exc
    table = data.get("keys")
    if not isinstance(table, dict):
        raise ConfigError(f'the keys file {path} has no [keys] table of name = "key" entries')
    keys: dict[str, str] = {}
    for name, value in table.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"keys file {path}: the key of {name!r} must be a non-empty string")
        if value.startswith(HASH_PREFIX):
            digest = value[len(HASH_PREFIX) :].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigError(
                    f"keys file {path}: the key of {name!r} is not sha256:<64 hex digits>"
                )
            value = HASH_PREFIX + digest
        keys[name] = value
    return keys


class KeyStore:
    """The API keys of a keys file, re-read when its modification time changes.

    The file is checked at most every ``check_every`` seconds (0: on every request), so
    a key removed from the file stops working without a restart. A file that becomes
    unreadable or malformed admits no key until it is fixed (fail closed).

    Args:
        path: the TOML keys file.
        check_every: seconds between checks of the file's modification time.

    Raises:
        ConfigError: the file cannot be read or parsed when the store is created.
    """

    def __init__(self, path: str | Path, *, check_every: float = 1.0) -> None:
        self.path = Path(path)
        self.check_every = check_every
        self._lock = threading.Lock()
        self._stamp = self._mtime()
        self._keys = read_keys(self.path)
        self._checked = time.monotonic()
        self.version = 0
        """Counts reloads of the file: state tied to one version (suspensions) ends with it."""

    def _mtime(self) -> int | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    def refresh(self) -> None:
        """Re-read the file if its modification time changed since the last read."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < self.check_every:
                return
            self._checked = now
            stamp = self._mtime()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            self.version += 1
            try:
                self._keys = read_keys(self.path)
                logger.info("re-read %d keys from %s", len(self._keys), self.path)
            except ConfigError as exc:
                self._keys = {}
                logger.error("%s; no key is accepted until the file is fixed", exc)

    def identify(self, presented: str | None) -> str | None:
        """The name of the key ``presented``, or None for no key or an unknown one.

        Every entry is compared in constant time (``hmac.compare_digest``), so the
        answer's timing says nothing about how close a guess came.
        """
        self.refresh()
        if not presented:
            return None
        raw = presented.encode("utf-8")
        hashed = hash_key(presented).encode("ascii")
        with self._lock:
            entries = list(self._keys.items())
        found = None
        for name, value in entries:
            expected = value.encode("utf-8")
            candidate = hashed if value.startswith(HASH_PREFIX) else raw
            if hmac.compare_digest(candidate, expected) and found is None:
                found = name
        return found

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)
