"""Per-key limits of the server: a rate per minute and a daily quota, counted in images.

A query attack needs many queries; the limits make them slow and few. Both count
images, not requests, so a batch of images costs what the same images sent one by one do.
"""

from __future__ import annotations

import datetime
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    """Why a request is over a limit, and the seconds after which to retry."""

    cause: str
    reason: str
    retry_after: int


class Limits:
    """Token buckets per key (``rate_per_minute`` images, refilled evenly over a minute)
    and a quota of ``quota`` images per key per UTC day. None: no such limit.

    Args:
        rate_per_minute: images a key may send per minute (also the most at once).
        quota: images a key may send per UTC day.
        clock: seconds, monotonic (for tests).
    """

    def __init__(
        self,
        rate_per_minute: int | None = None,
        quota: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("rate_per_minute", rate_per_minute), ("quota", quota)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        self.rate = rate_per_minute
        self.quota = quota
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self._used: dict[str, tuple[datetime.date, int]] = {}

    def take(self, key_id: str, images: int) -> Refusal | None:
        """Count ``images`` against ``key_id``'s limits; a :class:`Refusal` (nothing
        counted) when that would go past one of them, else None."""
        now = self._clock()
        today = datetime.datetime.now(datetime.timezone.utc)
        with self._lock:
            day, used = self._used.get(key_id, (today.date(), 0))
            if day != today.date():
                used = 0
            if self.quota is not None and used + images > self.quota:
                midnight = datetime.datetime.combine(
                    today.date() + datetime.timedelta(days=1),
                    datetime.time(),
                    tzinfo=datetime.timezone.utc,
                )
                wait = math.ceil((midnight - today).total_seconds())
                return Refusal(
                    "quota",
                    f"daily quota of {self.quota} images used up ({used} used today)",
                    max(1, wait),
                )
            tokens = 0.0
            if self.rate is not None:
                per_second = self.rate / 60.0
                tokens, last = self._buckets.get(key_id, (float(self.rate), now))
                tokens = min(float(self.rate), tokens + (now - last) * per_second)
                if images > self.rate:
                    return Refusal(
                        "rate",
                        f"{images} images in one request is more than the rate limit of "
                        f"{self.rate} per minute",
                        60,
                    )
                if tokens < images:
                    wait = math.ceil((images - tokens) / per_second)
                    self._buckets[key_id] = (tokens, now)
                    return Refusal(
                        "rate", f"rate limit of {self.rate} images per minute", max(1, wait)
                    )
                self._buckets[key_id] = (tokens - images, now)
            self._used[key_id] = (today.date(), used + images)
            return None
