"""The transport to a remote scoring endpoint: one request with retries, backoff and Retry-After.

Standard library only (``urllib.request``; a bounded thread pool for concurrent
requests). Redirects are refused, 429/5xx/timeouts/connection errors are retried with
exponential backoff (or the endpoint's ``Retry-After``), any other HTTP error is a
:class:`~pixelguard.errors.ModelError`. Every attempt is charged to the
:class:`~pixelguard.models.http.budget.WireBudget` before it is sent.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import math
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from pixelguard._version import __version__
from pixelguard.errors import ModelError, QueryRejected
from pixelguard.models.http.budget import WireBudget, WireStats
from pixelguard.models.http.codec import MalformedReply, excerpt
from pixelguard.models.http_config import EndpointConfig

logger = logging.getLogger(__name__)

_EXCERPT_BYTES = 800


def _wait(seconds: float) -> None:
    """Sleep between attempts (a seam: tests replace ``transport._wait``)."""
    time.sleep(seconds)


class _TransientError(Exception):
    """A failure worth retrying: 429, 5xx, connection error or timeout."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would turn a POST into a bodiless GET and forward headers."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Transport:
    """Sends request bodies to ``config.url``, charging ``budget`` and counting in ``stats``."""

    def __init__(self, config: EndpointConfig, budget: WireBudget, stats: WireStats) -> None:
        self.config = config
        self.url = redact_url(config.url)
        self._budget = budget
        self._stats = stats
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"pixelguard/{__version__}",
        }
        for name, value in config.resolved_headers.items():
            for default in [k for k in self._headers if k.lower() == name.lower()]:
                del self._headers[default]
            self._headers[name] = value
        self.opener = urllib.request.build_opener(_NoRedirect())

    def request(self, data: bytes, n: int, parse: Callable[[bytes], np.ndarray]) -> np.ndarray:
        """Send one body of ``n`` images, retrying transient failures and malformed replies.

        Args:
            data: the request body.
            n: how many images it carries (what the budget charges).
            parse: reads the rows from a 2xx body; raises :class:`MalformedReply`.

        Returns:
            What ``parse`` returned for the first well-formed reply.

        Raises:
            QueryBudgetExceeded: an attempt would exceed the wire budget.
            ModelError: a non-retryable HTTP error, or retries exhausted.
        """
        cfg = self.config
        attempts = cfg.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self._stats.bump("retries")
            self._budget.reserve(n)
            self._stats.bump("requests_sent")
            self._stats.bump("images_sent", n)
            retry_after: float | None = None
            try:
                payload = self._post(data)
            except _TransientError as exc:
                problem = str(exc)
                retry_after = exc.retry_after
                self._failed(n)
            except ModelError:
                self._failed(n)
                raise
            else:
                try:
                    return parse(payload)
                except MalformedReply as exc:
                    problem = f"malformed reply: {exc}"
                    self._stats.bump("requests_failed")
            if attempt == attempts - 1:
                break
            wait = min(cfg.backoff_s * 2**attempt, cfg.backoff_max_s)
            if retry_after is not None:
                if retry_after > cfg.backoff_max_s:
                    raise ModelError(
                        f"{self.url}: {problem}; the endpoint asks to retry after "
                        f"{retry_after:.0f} s, more than backoff_max_s={cfg.backoff_max_s:g}"
                    )
                wait = retry_after
            logger.warning(
                "%s: %s; retry %d/%d in %.2f s",
                self.url,
                problem,
                attempt + 1,
                cfg.max_retries,
                wait,
            )
            _wait(wait)
        raise ModelError(f"{self.url}: giving up after {attempts} attempt(s): {problem}")

    def _failed(self, n: int) -> None:
        self._stats.bump("requests_failed")
        if not self.config.failed_requests_count:
            self._budget.refund(n)

    def _post(self, data: bytes) -> bytes:
        """One HTTP exchange; returns a 2xx body or raises.

        Raises:
            _TransientError: 429, 5xx, connection error, timeout.
            QueryRejected: 403, the endpoint refused this query.
            ModelError: any other HTTP error (4xx, 3xx), or a TLS certificate failure.
        """
        request = urllib.request.Request(
            self.config.url, data=data, headers=self._headers, method=self.config.method
        )
        try:
            with self.opener.open(request, timeout=self.config.timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                text = excerpt(exc.read(_EXCERPT_BYTES))
            except (OSError, http.client.HTTPException):
                text = ""
            message = f"HTTP {status} {exc.reason}" + (f": {text}" if text else "")
            if status == 429 or 500 <= status < 600:
                if status == 429:
                    self._stats.bump("rate_limited")
                elif status == 503:
                    self._stats.bump("unavailable")
                raise _TransientError(
                    message, parse_retry_after(exc.headers.get("Retry-After"))
                ) from None
            if 300 <= status < 400:
                message += " (redirects are not followed; put the final URL in the config)"
            if status == 403:
                raise QueryRejected(f"{self.url} answered {message}") from None
            raise ModelError(f"{self.url} answered {message}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise ModelError(f"{self.url}: TLS certificate check failed: {reason}") from None
            if isinstance(reason, TimeoutError):
                raise _TransientError(
                    f"no reply within timeout_s={self.config.timeout_s:g}"
                ) from None
            raise _TransientError(f"connection failed: {reason}") from None


def send_all(
    groups: list[list[int]], fetch: Callable[[list[int]], np.ndarray], concurrency: int
) -> Iterable[tuple[list[int], np.ndarray]]:
    """``fetch`` every group (at most ``concurrency`` at once), yielding ``(group, rows)``.

    Replies are yielded as they arrive. After a failure, queued requests are cancelled,
    those in flight finish (their answers reach the cache) and the first error is raised.
    """
    if len(groups) <= 1 or concurrency == 1:
        for group in groups:
            yield group, fetch(group)
        return
    workers = min(concurrency, len(groups))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixelguard-http")
    error: Exception | None = None
    try:
        futures = {pool.submit(fetch, g): g for g in groups}
        for future in as_completed(futures):
            if future.cancelled():
                continue
            exc = future.exception()
            if exc is None:
                yield futures[future], future.result()
            elif error is None and isinstance(exc, Exception):
                error = exc
                for other in futures:
                    other.cancel()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if error is not None:
        raise error


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` without credentials, query or fragment, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None
