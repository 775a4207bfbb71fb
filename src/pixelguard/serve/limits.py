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


class FailedKeyGuesses:
    """Locks out a client address after ``max_failures`` wrong or missing API keys within
    ``window_s`` seconds, for ``lockout_s`` seconds (429 with Retry-After), so that keys
    cannot be guessed at the server's speed. A correct key does not reset the count: an
    address that guesses between its own valid requests is still counted.

    At most ``max_addresses`` addresses are tracked; the one with the oldest failure is
    dropped first, so a flood of addresses cannot exhaust memory.

    Args:
        max_failures: failures within the window that lock the address out.
        window_s: how far back failures count.
        lockout_s: how long a locked-out address is refused.
        max_addresses: addresses tracked at most.
        clock: seconds, monotonic (for tests).
    """

    def __init__(
        self,
        max_failures: int = 20,
        window_s: float = 60.0,
        lockout_s: float = 300.0,
        *,
        max_addresses: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(max_failures, int) or max_failures < 1:
            raise ValueError(f"max_failures must be a positive integer, got {max_failures!r}")
        if window_s <= 0 or lockout_s <= 0 or max_addresses < 1:
            raise ValueError("window_s, lockout_s and max_addresses must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        # address -> (times of its recent failures, end of its lockout or 0)
        self._failures: dict[str, tuple[list[float], float]] = {}

    def refusal(self, address: str) -> Refusal | None:
        """A :class:`Refusal` while ``address`` is locked out, else None."""
        now = self._clock()
        with self._lock:
            _, until = self._failures.get(address, ((), 0.0))
        if until > now:
            return Refusal(
                "auth_lockout",
                f"too many invalid API keys from this address; retry after "
                f"{math.ceil(until - now)} s",
                max(1, math.ceil(until - now)),
            )
        return None

    def record(self, address: str) -> None:
        """Count one failed key from ``address``; lock it out at ``max_failures``."""
        now = self._clock()
        with self._lock:
            times, until = self._failures.pop(address, ([], 0.0))
            times = [t for t in times if now - t < self.window_s] + [now]
            if len(times) >= self.max_failures:
                until, times = now + self.lockout_s, []
            self._failures[address] = (times, until)  # re-inserted: newest last
            while len(self._failures) > self.max_addresses:
                del self._failures[next(iter(self._failures))]
