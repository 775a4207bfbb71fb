""":class:`HttpClassifier`: a remote scoring endpoint as a Classifier, and :func:`load_http_model`.

Composes the parts: :class:`~pixelguard.models.http.codec.Codec` (images to request
bodies, replies to score rows), :class:`~pixelguard.models.http.cache.ScoreCache`
(never send the same image twice), :class:`~pixelguard.models.http.budget.WireBudget`
and :class:`~pixelguard.models.http.budget.WireStats` (what may and what did go over
the wire) and :class:`~pixelguard.models.http.transport.Transport` (retries, backoff).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelguard.checks import check_images
from pixelguard.errors import ConfigError, ModelError, ShapeError
from pixelguard.models.base import (
    DEFAULT_MAX_MEMORY,
    Capabilities,
    OutputKind,
    detect_output_kind,
)
from pixelguard.models.http.budget import WireBudget, WireStats
from pixelguard.models.http.cache import ScoreCache, endpoint_fingerprint
from pixelguard.models.http.codec import Codec
from pixelguard.models.http.transport import Transport, send_all
from pixelguard.models.http_config import EndpointConfig, read_config_file

logger = logging.getLogger(__name__)


class HttpClassifier:
    """A remote scoring endpoint as a Classifier, with retries, a cache and a wire budget.

    Args:
        config: how to reach the endpoint and read its replies.
        max_requests: the most requests that may be charged on the wire, or None.
        max_images: the most images that may be charged on the wire, or None. A request
            that would exceed either raises :class:`QueryBudgetExceeded` before it is
            sent. Failed requests are charged only when ``config.failed_requests_count``;
            any 2xx reply is charged, even a malformed one.

    Attributes:
        max_memory: bytes an attack may hold in candidate images at once for this
            endpoint (its batch size is the config's, never measured).

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
        self.max_memory: int = DEFAULT_MAX_MEMORY
        self._budget = WireBudget(max_requests, max_images)
        self._stats = WireStats()
        self._transport = Transport(config, self._budget, self._stats)
        self._url = self._transport.url
        self._opener = self._transport.opener  # the same object: a test may fault-inject on it
        self._codec = Codec(config)
        self._output: OutputKind | None = config.output
        self._cache: ScoreCache | None = None
        if config.cache:
            path = Path(config.cache_path) if config.cache_path is not None else None
            self._cache = ScoreCache(path, endpoint_fingerprint(config))
            cached = self._cache.num_classes
            if cached is not None and self._codec.num_classes not in (None, cached):
                raise ConfigError(
                    f"cache_path {path} holds {cached} scores per image but num_classes is "
                    f"{self._codec.num_classes}"
                )
            self._codec.num_classes = self._codec.num_classes or cached

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
        """Number of classes; learnt from one probe image when neither config nor cache says.

        Raises:
            ModelError: the probe reply did not tell.
        """
        if self._codec.num_classes is None:
            self._probe("num_classes")
        if self._codec.num_classes is None:
            raise ModelError(
                f"{self._url}: could not learn num_classes from a probe reply; "
                f"set num_classes in the endpoint config"
            )
        return self._codec.num_classes

    @property
    def capabilities(self) -> Capabilities:
        """Scores or labels as configured; detected from one probe image when not set.

        Raises:
            ModelError: the probe reply did not tell.
        """
        if self._output is None:
            self._probe("output")
        if self._output is None:
            raise ModelError(
                f"{self._url}: could not detect the output kind from a probe reply; "
                f"set output ('logits', 'probabilities' or 'labels') in the endpoint config"
            )
        return Capabilities(output=self._output, gradients=False)

    @property
    def stats(self) -> dict[str, int]:
        """What went over the wire.

        ``requests_sent`` counts every attempt, retries included; ``images_sent`` the
        images in them; ``requests_failed`` attempts that failed (HTTP error, timeout,
        connection error, malformed reply); ``retries`` attempts after the first;
        ``rate_limited`` 429 replies; ``unavailable`` 503 replies; ``cache_hits`` images
        answered without sending (cached, or repeated within one call);
        ``requests_charged`` and ``images_charged`` what counts against
        ``max_requests`` / ``max_images``.
        """
        out = self._stats.snapshot()
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
        arrays = self._codec.convert(x)
        keys = [self._codec.key(a) for a in arrays]
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
        self._stats.bump("cache_hits", n - len(to_send))
        step = self.config.max_batch if self.config.batch else 1
        groups = [to_send[s : s + step] for s in range(0, len(to_send), step)]
        self._budget.check(len(groups), len(to_send))

        def fetch(group: list[int]) -> np.ndarray:
            return self._fetch([arrays[i] for i in group], [keys[i] for i in group])

        try:
            for group, scores in send_all(groups, fetch, self.config.concurrency):
                answers.update(zip(group, scores, strict=True))
        finally:
            if self._cache is not None:
                self._cache.flush()
        k = self._codec.num_classes or 0
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

    def _fetch(self, images: list[np.ndarray], keys: list[str]) -> np.ndarray:
        """One request with retries; its rows go to the cache as soon as they arrive."""
        n = len(images)
        rows = self._transport.request(
            self._codec.body(images),
            n,
            lambda payload: self._codec.decode(payload, n, self._output),
        )
        if self._cache is not None:
            self._cache.put(keys, rows)
        return rows

    def _probe(self, what: str) -> None:
        logger.info(
            "%s: querying one grey image to learn %s (set it in the config to avoid this)",
            self._url,
            what,
        )
        self.predict(torch.full((1, *self.input_shape), 0.5))


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
