"""The server's audit log: one JSON line per request, never the image itself."""

from __future__ import annotations

import datetime
import hashlib
import json
import threading
from pathlib import Path
from typing import Any


def digest(data: bytes) -> str:
    """``sha256:<hexdigest>`` of an image's bytes: names the image without holding it."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class AuditLog:
    """Appends one JSON line per request to ``path`` (created with its folder).

    Each line holds the UTC time (ISO 8601), the key's name (never the key), the digest
    of each image, the decision (``ok``, ``detected``, ``rejected:<cause>``), the HTTP
    status and the latency in milliseconds.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(
        self,
        *,
        key_id: str | None,
        digests: list[str],
        decision: str,
        status: int,
        latency_ms: float,
        **extra: Any,
    ) -> None:
        """Append one request's line."""
        record = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "key_id": key_id,
            "images": digests,
            "decision": decision,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            **extra,
        }
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)
