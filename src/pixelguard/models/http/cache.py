"""The on-disk cache of endpoint answers: score rows by image key, bound to one endpoint.

A run that is interrupted resumes without spending queries again: every answer is
kept in memory and, with ``cache_path``, in a ``.jsonl`` (appended as answers arrive)
or ``.npz`` (rewritten atomically) file that records a fingerprint of the endpoint
config and refuses to load for another endpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pixelguard.errors import ConfigError
from pixelguard.files import atomic_write
from pixelguard.models.http_config import EndpointConfig

logger = logging.getLogger(__name__)

_CACHE_VERSION = 1
# Fields that change what the endpoint answers; a disk cache belongs to one such set.
_FINGERPRINT_FIELDS = (
    "url",
    "method",
    "input_shape",
    "encoding",
    "layout",
    "scale",
    "mean",
    "std",
    "dtype",
    "flatten",
    "request_field",
    "image_key",
    "extra_body",
    "response_path",
    "output",
    "class_names",
)


def endpoint_fingerprint(config: EndpointConfig) -> str:
    """SHA-256 of the config fields that change what the endpoint answers."""
    fields = config.to_dict()
    described = {name: fields[name] for name in _FINGERPRINT_FIELDS}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


class ScoreCache:
    """Score rows by image key, in memory and optionally in a ``.jsonl`` or ``.npz`` file.

    A ``.jsonl`` file gets one line per answer as it arrives (a header line first);
    an ``.npz`` file is rewritten atomically by :meth:`flush`. Both record a
    fingerprint of the endpoint config and refuse to load for another endpoint.
    """

    def __init__(self, path: Path | None, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self._rows: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._jsonl_started = False
        self._needs_newline = False
        if path is not None and path.exists() and path.stat().st_size > 0:
            if path.suffix == ".jsonl":
                self._load_jsonl(path)
            else:
                self._load_npz(path)
            logger.info("loaded %d cached answers from %s", len(self._rows), path)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def num_classes(self) -> int | None:
        """Length of the cached rows, or None when the cache is empty."""
        with self._lock:
            for row in self._rows.values():
                return int(row.shape[0])
        return None

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._rows.get(key)

    def put(self, keys: Sequence[str], rows: np.ndarray) -> None:
        """Store rows (and append them to a ``.jsonl`` file at once)."""
        with self._lock:
            for key, row in zip(keys, rows, strict=True):
                self._rows[key] = row
            if self.path is None:
                return
            if self.path.suffix == ".npz":
                self._dirty = True
                return
            lines = []
            if self._needs_newline:  # a torn last line from an interrupted run
                self._needs_newline = False
                lines.append("")
            if not self._jsonl_started:
                self._jsonl_started = True
                if not self.path.exists() or self.path.stat().st_size == 0:
                    header = {"pixelguard_http_cache": _CACHE_VERSION, "endpoint": self.fingerprint}
                    lines.append(json.dumps(header))
            lines.extend(
                json.dumps({"key": key, "scores": row.tolist()})
                for key, row in zip(keys, rows, strict=True)
            )
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")

    def flush(self) -> None:
        """Write an ``.npz`` cache atomically if it changed."""
        with self._lock:
            if self.path is None or not self._dirty:
                return
            keys = np.array(list(self._rows), dtype="<U64")
            scores = np.stack(list(self._rows.values())).astype(np.float32)
            fields = {
                "keys": keys,
                "scores": scores,
                "endpoint": np.array(self.fingerprint),
                "version": np.array(_CACHE_VERSION),
            }
            atomic_write(self.path, lambda handle: np.savez(handle, **fields))  # type: ignore[arg-type]
            self._dirty = False

    def _load_jsonl(self, path: Path) -> None:
        text = path.read_text(encoding="utf-8")
        self._needs_newline = not text.endswith("\n")
        lines = text.splitlines()
        try:
            header = json.loads(lines[0])
        except (ValueError, IndexError):
            header = None
        if not isinstance(header, dict) or "pixelguard_http_cache" not in header:
            raise ConfigError(f"cache_path {path} is not a pixelguard endpoint cache")
        self._check_fingerprint(path, header.get("endpoint"))
        self._jsonl_started = True
        skipped = 0
        for line in lines[1:]:
            try:
                record = json.loads(line)
                row = np.asarray(record["scores"], dtype=np.float32)
                key = str(record["key"])
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            if row.ndim != 1 or not np.isfinite(row).all():
                skipped += 1
                continue
            self._rows[key] = row
        if skipped:
            logger.warning("skipped %d unreadable line(s) in cache %s", skipped, path)
        self._check_rows(path)

    def _load_npz(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                fingerprint = str(data["endpoint"])
                keys = data["keys"].tolist()
                scores = np.asarray(data["scores"], dtype=np.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"cache_path {path} is not a readable pixelguard cache: {exc}"
            ) from None
        self._check_fingerprint(path, fingerprint)
        self._rows = {str(k): row for k, row in zip(keys, scores, strict=True)}
        self._check_rows(path)

    def _check_fingerprint(self, path: Path, fingerprint: object) -> None:
        if fingerprint != self.fingerprint:
            raise ConfigError(
                f"cache_path {path} was written for a different endpoint config (url, request "
                f"or response format); point cache_path at a new file or delete this one"
            )

    def _check_rows(self, path: Path) -> None:
        lengths = {row.shape[0] for row in self._rows.values()}
        if len(lengths) > 1:
            raise ConfigError(
                f"cache_path {path} holds rows of different lengths {sorted(lengths)}"
            )
