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

One job per module:

- ``transport``: one request with retries, backoff and ``Retry-After``; concurrency
- ``codec``: images to request bodies, reply bodies to score rows
- ``cache``: answers by image key, in memory and on disk, bound to one endpoint
- ``budget``: the wire budget (``max_requests``/``max_images``) and the wire counters
- ``classifier``: :class:`HttpClassifier` composing them, and :func:`load_http_model`
- the endpoint config itself is :mod:`pixelguard.models.http_config`
"""

from __future__ import annotations

from pixelguard.models.http.classifier import HttpClassifier, load_http_model
from pixelguard.models.http.transport import parse_retry_after, redact_url
from pixelguard.models.http_config import EndpointConfig

__all__ = [
    "EndpointConfig",
    "HttpClassifier",
    "load_http_model",
    "parse_retry_after",
    "redact_url",
]
