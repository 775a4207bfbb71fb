"""A remote scoring endpoint as a :class:`~pixelguard.models.base.Classifier`.

:class:`HttpClassifier` converts canonical images (float32, [0, 1], NCHW) to what the
endpoint wants (a nested JSON array in its layout and scale, or a base64 PNG), sends
them with the standard library only (``urllib.request`` in a bounded thread pool),
retries what is worth retrying, and never sends the same image twice: every answer is
kept in a local cache, optionally on disk, so an interrupted run resumes without
spending queries again. A hard budget on what goes over the wire raises
:class:`~pixelguard.errors.QueryBudgetExceeded` before a request that would exceed it.

``QueryCounter`` counts what an attack asks for; ``HttpClassifier.stats`` counts what
actually went over the wire (cache hits are free, retries are not). See
``docs/endpoints.md``.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import hashlib
import http.client
import io
import json
import logging
import math
import re
import secrets
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image

from pixelguard._version import __version__
from pixelguard.checks import check_images
from pixelguard.errors import ConfigError, ModelError, QueryBudgetExceeded, ShapeError
from pixelguard.files import atomic_write
from pixelguard.models.base import Capabilities, OutputKind, detect_output_kind
from pixelguard.models.http_config import (
    EndpointConfig,
    PathToken,
    format_json_path,
    read_config_file,
)

__all__ = ["EndpointConfig", "HttpClassifier", "load_http_model"]

logger = logging.getLogger(__name__)

_WIRE_STATS = (
    "requests_sent",
    "requests_failed",
    "retries",
    "rate_limited",
    "unavailable",
    "cache_hits",
    "images_sent",
)
_CACHE_VERSION = 1
_EXCERPT_CHARS = 200
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


def _wait(seconds: float) -> None:
    """Sleep between attempts (a seam tests replace to record waits)."""
    time.sleep(seconds)


class _TransientError(Exception):
    """A failure worth retrying: 429, 5xx, connection error or timeout."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _MalformedReply(Exception):
    """A 2xx reply that does not hold what the config says it holds."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would turn a POST into a bodiless GET and forward headers."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class _WireBudget:
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


class _ScoreCache:
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


class HttpClassifier:
    """A remote scoring endpoint as a Classifier, with retries, a cache and a wire budget.

    Args:
        config: how to reach the endpoint and read its replies.
        max_requests: the most requests that may be charged on the wire, or None.
        max_images: the most images that may be charged on the wire, or None. A request
            that would exceed either raises :class:`QueryBudgetExceeded` before it is
            sent. Failed requests are charged only when ``config.failed_requests_count``;
            any 2xx reply is charged, even a malformed one.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> scores (N, K) float32, same device.
        Labels-only endpoints give one-hot rows.

    Raises:
        ConfigError: an invalid budget, or a ``cache_path`` for another endpoint.

    Example:
        >>> cfg = EndpointConfig(url="http://127.0.0.1:9/score", input_shape=(1, 8, 8),
        ...                      num_classes=10, output="logits")
        >>> model = HttpClassifier(cfg, max_images=1000)
        >>> model.capabilities.gradients
        False
    """

    def __init__(
        self,
        config: EndpointConfig,
        *,
        max_requests: int | None = None,
        max_images: int | None = None,
    ) -> None:
        if not isinstance(config, EndpointConfig):
            raise ConfigError(f"config must be an EndpointConfig, got {type(config).__name__}")
        self.config = config
        self._budget = _WireBudget(max_requests, max_images)
        self._lock = threading.Lock()
        self._stats = dict.fromkeys(_WIRE_STATS, 0)
        self._url = redact_url(config.url)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"pixelguard/{__version__}",
        }
        for name, value in config.resolved_headers.items():
            for default in [k for k in self._headers if k.lower() == name.lower()]:
                del self._headers[default]
            self._headers[name] = value
        self._opener = urllib.request.build_opener(_NoRedirect())
        token = secrets.token_hex(8)
        self._slot = "@@pixelguard-" + token + "-{}@@"
        self._slot_pattern = re.compile(r'"@@pixelguard-' + token + r'-(\d+)@@"')
        self._output: OutputKind | None = config.output
        self._cache: _ScoreCache | None = None
        self._num_classes = config.num_classes
        if config.cache:
            path = Path(config.cache_path) if config.cache_path is not None else None
            self._cache = _ScoreCache(path, self._fingerprint())
            cached = self._cache.num_classes
            if cached is not None and self._num_classes not in (None, cached):
                raise ConfigError(
                    f"cache_path {path} holds {cached} scores per image but num_classes is "
                    f"{self._num_classes}"
                )
            self._num_classes = self._num_classes or cached

    def __repr__(self) -> str:
        return (
            f"HttpClassifier(url={self._url!r}, input_shape={self.config.input_shape}, "
            f"batch={self.config.batch}, encoding={self.config.encoding!r}, "
            f"max_requests={self._budget.max_requests}, max_images={self._budget.max_images})"
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.config.input_shape

    @property
    def num_classes(self) -> int:
        """Number of classes; learnt from one probe image when neither config nor cache says."""
        if self._num_classes is None:
            self._probe("num_classes")
        assert self._num_classes is not None
        return self._num_classes

    @property
    def capabilities(self) -> Capabilities:
        """Scores or labels as configured; detected from one probe image when not set."""
        if self._output is None:
            self._probe("output")
        assert self._output is not None
        return Capabilities(output=self._output, gradients=False)

    @property
    def stats(self) -> dict[str, int]:
        """What went over the wire.

        ``requests_sent`` counts every attempt, retries included; ``images_sent`` the
        images in them; ``requests_failed`` attempts that failed (HTTP error, timeout,
        connection error, malformed reply); ``retries`` attempts after the first;
        ``rate_limited`` 429 replies; ``unavailable`` 503 replies; ``cache_hits`` images answered without sending
        (cached, or repeated within one call); ``requests_charged`` and
        ``images_charged`` what counts against ``max_requests`` / ``max_images``.
        """
        with self._lock:
            out = dict(self._stats)
        out["requests_charged"] = self._budget.requests
        out["images_charged"] = self._budget.images
        return out

    def report(self) -> dict[str, Any]:
        """Endpoint settings and wire statistics as plain data (no secrets), for reports."""
        return {
            "url": self._url,
            "batch": self.config.batch,
            "encoding": self.config.encoding,
            "output": self._output.value if self._output is not None else None,
            "failed_requests_count": self.config.failed_requests_count,
            "max_requests": self._budget.max_requests,
            "max_images": self._budget.max_images,
            "cache_size": len(self._cache) if self._cache is not None else 0,
            **self.stats,
        }

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for a canonical batch, from the cache or the endpoint.

        Shape:
            x: (N, C, H, W) float32 in [0, 1]; returns (N, K) float32 on x's device.

        Raises:
            ShapeError, RangeError: ``x`` is not a canonical batch of ``input_shape``.
            QueryBudgetExceeded: sending what is not cached would exceed the budget.
            ModelError: the endpoint refused a request or kept failing.
        """
        check_images(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"the endpoint expects images of shape {self.input_shape}, got {tuple(x.shape[1:])}"
            )
        n = x.shape[0]
        arrays = self._convert(x)
        keys = [self._key(a) for a in arrays]
        answers: dict[int, np.ndarray] = {}
        source = list(range(n))  # whose answer each image takes (itself, or an earlier twin)
        first_seen: dict[str, int] = {}
        to_send: list[int] = []
        for i, key in enumerate(keys):
            cached = self._cache.get(key) if self._cache is not None else None
            if cached is not None:
                answers[i] = cached
            elif self._cache is not None and key in first_seen:
                source[i] = first_seen[key]
            else:
                first_seen.setdefault(key, i)
                to_send.append(i)
        self._bump("cache_hits", n - len(to_send))
        step = self.config.max_batch if self.config.batch else 1
        groups = [to_send[s : s + step] for s in range(0, len(to_send), step)]
        self._budget.check(len(groups), len(to_send))
        try:
            for group, scores in self._send_all(groups, arrays, keys):
                answers.update(zip(group, scores, strict=True))
        finally:
            if self._cache is not None:
                self._cache.flush()
        k = self._num_classes or 0
        out = np.stack([answers[j] for j in source]) if n else np.zeros((0, k), dtype=np.float32)
        scores_t = torch.from_numpy(out.astype(np.float32, copy=False)).to(x.device)
        if self._output is None and n:
            self._output = detect_output_kind(scores_t)
            logger.info(
                "%s: detected %s output from the replies; set 'output' in the config to be sure",
                self._url,
                self._output.value,
            )
        return scores_t

    def _probe(self, what: str) -> None:
        logger.info(
            "%s: querying one grey image to learn %s (set it in the config to avoid this)",
            self._url,
            what,
        )
        self.predict(torch.full((1, *self.input_shape), 0.5))

    def _bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[name] += amount

    def _fingerprint(self) -> str:
        fields = self.config.to_dict()
        described = {name: fields[name] for name in _FINGERPRINT_FIELDS}
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    # --- converting images -------------------------------------------------------------

    def _convert(self, x: torch.Tensor) -> np.ndarray:
        """Canonical batch -> per-image arrays exactly as they will be sent.

        Shape:
            x: (N, C, H, W) float32 in [0, 1]. Returns (N, H, W, C) uint8 for png, the
            json conversion (N, ...) otherwise.
        """
        if self.config.encoding == "png":
            with torch.no_grad():
                pixels = (x.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
            return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())
        return self.config.input_spec.to_model_numpy(x)

    def _key(self, image: np.ndarray) -> str:
        """SHA-256 of one converted image (its values, dtype and shape)."""
        digest = hashlib.sha256(f"{self.config.encoding}:{image.dtype}:{image.shape}:".encode())
        digest.update(image.tobytes())
        return digest.hexdigest()

    def _fragment(self, image: np.ndarray) -> str:
        """The JSON text of one image in a request body."""
        if self.config.encoding == "png":
            text = json.dumps(base64.b64encode(_png_bytes(image)).decode("ascii"))
        else:
            text = _json_array(image)
        if self.config.image_key is None:
            return text
        return "{" + json.dumps(self.config.image_key) + ":" + text + "}"

    def _body(self, images: Sequence[np.ndarray]) -> bytes:
        fragments = [self._fragment(image) for image in images]
        slots = [self._slot.format(i) for i in range(len(fragments))]
        body = copy.deepcopy(self.config.extra_body)
        *parents, leaf = self.config.request_field.split(".")
        node = body
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = slots if self.config.batch else slots[0]
        template = json.dumps(body, separators=(",", ":"))
        return self._slot_pattern.sub(lambda m: fragments[int(m.group(1))], template).encode()

    # --- sending -------------------------------------------------------------------------

    def _send_all(
        self, groups: list[list[int]], arrays: np.ndarray, keys: list[str]
    ) -> Iterable[tuple[list[int], np.ndarray]]:
        """Send every group (concurrently), yielding ``(group, rows)`` as replies arrive.

        After a failure, queued requests are cancelled, those in flight finish (their
        answers reach the cache) and the first error is raised.
        """
        if len(groups) <= 1 or self.config.concurrency == 1:
            for group in groups:
                yield group, self._fetch([arrays[i] for i in group], [keys[i] for i in group])
            return
        workers = min(self.config.concurrency, len(groups))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixelguard-http")
        error: Exception | None = None
        try:
            futures = {
                pool.submit(self._fetch, [arrays[i] for i in g], [keys[i] for i in g]): g
                for g in groups
            }
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

    def _fetch(self, images: list[np.ndarray], keys: list[str]) -> np.ndarray:
        """One request with retries; its rows go to the cache as soon as they arrive."""
        rows = self._request(images)
        if self._cache is not None:
            self._cache.put(keys, rows)
        return rows

    def _request(self, images: list[np.ndarray]) -> np.ndarray:
        """Send one request, retrying transient failures and malformed replies.

        Returns:
            (n, K) float32 rows for the ``n`` images.
        """
        cfg = self.config
        n = len(images)
        data = self._body(images)
        attempts = cfg.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self._bump("retries")
            self._budget.reserve(n)
            self._bump("requests_sent")
            self._bump("images_sent", n)
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
                    return self._parse(payload, n)
                except _MalformedReply as exc:
                    problem = f"malformed reply: {exc}"
                    self._bump("requests_failed")
            if attempt == attempts - 1:
                break
            wait = min(cfg.backoff_s * 2**attempt, cfg.backoff_max_s)
            if retry_after is not None:
                if retry_after > cfg.backoff_max_s:
                    raise ModelError(
                        f"{self._url}: {problem}; the endpoint asks to retry after "
                        f"{retry_after:.0f} s, more than backoff_max_s={cfg.backoff_max_s:g}"
                    )
                wait = retry_after
            logger.warning(
                "%s: %s; retry %d/%d in %.2f s",
                self._url,
                problem,
                attempt + 1,
                cfg.max_retries,
                wait,
            )
            _wait(wait)
        raise ModelError(f"{self._url}: giving up after {attempts} attempt(s): {problem}")

    def _failed(self, n: int) -> None:
        self._bump("requests_failed")
        if not self.config.failed_requests_count:
            self._budget.refund(n)

    def _post(self, data: bytes) -> bytes:
        """One HTTP exchange; returns a 2xx body or raises.

        Raises:
            _TransientError: 429, 5xx, connection error, timeout.
            ModelError: any other HTTP error (4xx, 3xx), or a TLS certificate failure.
        """
        request = urllib.request.Request(
            self.config.url, data=data, headers=self._headers, method=self.config.method
        )
        try:
            with self._opener.open(request, timeout=self.config.timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                excerpt = _excerpt(exc.read(4 * _EXCERPT_CHARS))
            except (OSError, http.client.HTTPException):
                excerpt = ""
            message = f"HTTP {status} {exc.reason}" + (f": {excerpt}" if excerpt else "")
            if status == 429 or 500 <= status < 600:
                if status == 429:
                    self._bump("rate_limited")
                elif status == 503:
                    self._bump("unavailable")
                raise _TransientError(
                    message, parse_retry_after(exc.headers.get("Retry-After"))
                ) from None
            if 300 <= status < 400:
                message += " (redirects are not followed; put the final URL in the config)"
            raise ModelError(f"{self._url} answered {message}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise ModelError(f"{self._url}: TLS certificate check failed: {reason}") from None
            if isinstance(reason, TimeoutError):
                raise _TransientError(
                    f"no reply within timeout_s={self.config.timeout_s:g}"
                ) from None
            raise _TransientError(f"connection failed: {reason}") from None

    # --- reading replies ------------------------------------------------------------------

    def _parse(self, payload: bytes, n: int) -> np.ndarray:
        """Read ``n`` score rows from a reply body.

        Raises:
            _MalformedReply: not JSON, path missing, wrong length, non-numeric, NaN.
        """
        try:
            doc = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise _MalformedReply(f"not JSON (starts with {_excerpt(payload)!r})") from None
        tokens = self.config.response_tokens
        value = _follow(doc, tokens)
        where = format_json_path(tokens)
        if self.config.batch:
            if not isinstance(value, list) or len(value) != n:
                got = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
                raise _MalformedReply(
                    f"expected a list of {n} per-image results at {where}, got {got}"
                )
            items = [(item, f"{where}[{i}]") for i, item in enumerate(value)]
        else:
            items = [(value, where)]
        if self._output is OutputKind.LABELS:
            k = self.num_classes
            return np.stack([self._one_hot(item, at, k) for item, at in items])
        rows = [self._scores(item, at) for item, at in items]
        with self._lock:
            if self._num_classes is None:
                self._num_classes = len(rows[0])
            for row, (_, at) in zip(rows, items, strict=True):
                if len(row) != self._num_classes:
                    raise _MalformedReply(
                        f"expected {self._num_classes} scores per image at {at}, got {len(row)}"
                    )
        return np.stack(rows)

    def _scores(self, item: object, where: str) -> np.ndarray:
        if (
            not self.config.batch
            and isinstance(item, list)
            and len(item) == 1
            and isinstance(item[0], list)
        ):
            item, where = item[0], f"{where}[0]"
        if not isinstance(item, list):
            raise _MalformedReply(f"expected a list of scores at {where}, got {_kind(item)}")
        for j, value in enumerate(item):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise _MalformedReply(f"non-numeric score {_kind(value)} at {where}[{j}]")
            if not math.isfinite(value):
                raise _MalformedReply(f"non-finite score {value} at {where}[{j}]")
        if len(item) < 2:
            raise _MalformedReply(f"expected at least 2 scores at {where}, got {len(item)}")
        return np.asarray(item, dtype=np.float32)

    def _one_hot(self, item: object, where: str, k: int) -> np.ndarray:
        names = self.config.class_names
        if isinstance(item, str) and names is not None and item in names:
            label = names.index(item)
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item < k:
            label = item
        else:
            expected = "a class index" + (" or one of class_names" if names else "")
            raise _MalformedReply(f"expected {expected} at {where}, got {item!r:.60}")
        row = np.zeros(k, dtype=np.float32)
        row[label] = 1.0
        return row


def load_http_model(
    url: str | None,
    *,
    config: str | Path | None = None,
    **overrides: Any,
) -> HttpClassifier:
    """Build an :class:`HttpClassifier` from a config file, with command-line overrides.

    Args:
        url: the endpoint; replaces the config file's ``url`` when given.
        config: a ``.json`` / ``.yaml`` endpoint config (required: at least
            ``input_shape`` cannot be probed).
        **overrides: config fields to replace (None values are ignored), and the
            classifier's ``max_requests`` / ``max_images``.

    Raises:
        ConfigError: no config, an unknown override, or an invalid value.
    """
    if config is None:
        raise ConfigError(
            "a remote endpoint needs a config file (JSON or YAML) that declares at least "
            "input_shape and how to read the reply; see docs/endpoints.md"
        )
    data = read_config_file(config)
    budget = {k: overrides.pop(k) for k in ("max_requests", "max_images") if k in overrides}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if url:
        data["url"] = url
    return HttpClassifier(EndpointConfig.from_dict(data), **budget)


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


def _follow(doc: object, tokens: tuple[PathToken, ...]) -> object:
    """The value at ``tokens`` in ``doc``, or a :class:`_MalformedReply` saying where not."""
    node = doc
    for depth, token in enumerate(tokens):
        here = format_json_path(tokens[:depth])
        if isinstance(token, int):
            if not isinstance(node, list):
                raise _MalformedReply(f"expected a list at {here}, got {_kind(node)}")
            if not -len(node) <= token < len(node):
                raise _MalformedReply(
                    f"index [{token}] out of range at {here} (length {len(node)})"
                )
        elif not isinstance(node, dict):
            raise _MalformedReply(f"expected an object at {here}, got {_kind(node)}")
        elif token not in node:
            keys = ", ".join(list(map(str, node))[:8]) or "none"
            raise _MalformedReply(f"no key {token!r} in the object at {here} (keys: {keys})")
        node = node[token]  # type: ignore[index]
    return node


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _excerpt(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "..."


def _json_array(array: np.ndarray) -> str:
    """Nested JSON array text of ``array`` with the shortest exact number strings."""
    text = array.astype(str)

    def nest(a: np.ndarray) -> str:
        if a.ndim == 1:
            return "[" + ",".join(a.tolist()) + "]"
        return "[" + ",".join(nest(sub) for sub in a) + "]"

    return nest(text)


def _png_bytes(image: np.ndarray) -> bytes:
    """PNG of one uint8 image.

    Shape:
        image: (H, W, C) uint8 with C in (1, 3, 4).
    """
    channels = image.shape[2]
    pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    return buffer.getvalue()
