"""What goes over the wire: the hard budget (``max_requests``/``max_images``) and the counters.

:class:`WireBudget` charges requests and images before they are sent and refuses one
that would not fit; :class:`WireStats` counts attempts, failures, retries and cache hits
for :attr:`HttpClassifier.stats <pixelguard.models.http.HttpClassifier.stats>`.
"""

from __future__ import annotations

import threading

from pixelguard.errors import ConfigError, QueryBudgetExceeded

WIRE_STATS = (
    "requests_sent",
    "requests_failed",
    "retries",
    "rate_limited",
    "unavailable",
    "cache_hits",
    "images_sent",
)


class WireStats:
    """Thread-safe counters of what went over the wire, named in :data:`WIRE_STATS`."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys(WIRE_STATS, 0)
        self._lock = threading.Lock()

    def bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class WireBudget:
    """Requests and images charged on the wire, with reservation for requests in flight."""

    def __init__(self, max_requests: int | None, max_images: int | None) -> None:
        for name, value in (("max_requests", max_requests), ("max_images", max_images)):
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ConfigError(f"{name} must be None or an integer >= 0, got {value!r}")
        self.max_requests = max_requests
        self.max_images = max_images
        self.requests = 0
        self.images = 0
        self._lock = threading.Lock()

    def check(self, n_requests: int, n_images: int) -> None:
        """Raise if ``n_requests`` more requests carrying ``n_images`` would not fit."""
        with self._lock:
            self._check(n_requests, n_images)

    def reserve(self, n_images: int) -> None:
        """Charge one request of ``n_images`` before it is sent, or raise."""
        with self._lock:
            self._check(1, n_images)
            self.requests += 1
            self.images += n_images

    def refund(self, n_images: int) -> None:
        """Take back a reservation for a request the server does not charge."""
        with self._lock:
            self.requests -= 1
            self.images -= n_images

    def _check(self, n_requests: int, n_images: int) -> None:
        if self.max_images is not None and self.images + n_images > self.max_images:
            raise QueryBudgetExceeded(
                f"sending {n_images} more image(s) would exceed the wire budget "
                f"max_images={self.max_images} ({self.images} already charged); "
                f"answers received so far are in the cache"
            )
        if self.max_requests is not None and self.requests + n_requests > self.max_requests:
            raise QueryBudgetExceeded(
                f"sending {n_requests} more request(s) would exceed the wire budget "
                f"max_requests={self.max_requests} ({self.requests} already charged); "
                f"answers received so far are in the cache"
            )
