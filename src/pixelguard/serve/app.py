"""The guarded inference server: a FastAPI app around one pixelguard Classifier.

``POST /v1/classify`` answers with as little as the operator chooses (the label only,
the top k, or all probabilities), behind API keys, size checks, per-key limits and an
optional stateful detector of query attacks; every request goes to the audit log and
the Prometheus metrics (``GET /metrics``). ``GET /healthz`` needs no key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from pixelguard.errors import ConfigError
from pixelguard.models.base import OutputKind
from pixelguard.serve.audit import AuditLog, digest
from pixelguard.serve.images import ImageRejected, decode_base64, decode_image
from pixelguard.serve.keys import KeyStore
from pixelguard.serve.limits import FailedKeyGuesses, Limits

if TYPE_CHECKING:
    from pixelguard.models.base import Classifier

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 10 * 2**20
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_REQUEST_TIMEOUT = 30.0
ON_DETECT = ("log", "reject", "suspend")
ANONYMOUS = "anonymous"
"""The key id of every request of a server started with ``no_auth``."""


class Detector(Protocol):
    """A stateful detector of query attacks (e.g. Blacklight)."""

    def check(self, key_id: str, image: np.ndarray) -> bool:
        """True when ``image`` (uint8 HxWxC) matches earlier queries of ``key_id``."""
        ...


def parse_output(text: str) -> tuple[str, int | None]:
    """``"label"``, ``"probabilities"`` or ``"topk:K"`` -> (kind, K).

    Raises:
        ConfigError: any other text, or K not a positive integer.
    """
    if text in ("label", "probabilities"):
        return text, None
    kind, _, k = text.partition(":")
    if kind == "topk" and k.isdigit() and int(k) > 0:
        return "topk", int(k)
    raise ConfigError(f"output must be label, topk:K (K >= 1) or probabilities, got {text!r}")


class _Refused(Exception):
    """End a request with ``status`` and a one-line ``reason``."""

    def __init__(
        self, status: int, cause: str, reason: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.cause = cause
        self.reason = reason
        self.headers = headers or {}


class _Metrics:
    """The server's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pixelguard_requests",
            "Classify requests by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pixelguard_request_latency_seconds",
            "Time to answer a classify request.",
            registry=self.registry,
        )
        self.rejections = Counter(
            "pixelguard_rejections",
            "Classify requests refused, by cause.",
            ["cause"],
            registry=self.registry,
        )
        self.detections = Counter(
            "pixelguard_detections",
            "Queries the detector flagged as part of a query attack.",
            registry=self.registry,
        )
        self.images = Counter("pixelguard_images", "Images classified.", registry=self.registry)


@dataclass
class _Outcome:
    """What one request came to, for the audit log and the metrics."""

    key_id: str | None = None
    digests: list[str] = field(default_factory=list)
    decision: str = "ok"


class _Server:
    """The state and the request handling behind one app."""

    def __init__(
        self,
        model: Classifier,
        *,
        keys: KeyStore | None,
        output: str,
        detector: Detector | None,
        on_detect: str,
        limits: Limits,
        max_body_bytes: int,
        max_pixels: int,
        audit: AuditLog | None,
        class_names: list[str] | None,
        key_guesses: FailedKeyGuesses,
        request_timeout: float,
    ) -> None:
        self.model = model
        self.keys = keys
        self.key_guesses = key_guesses
        self.request_timeout = request_timeout
        self.output, self.k = parse_output(output)
        self.detector = detector
        self.on_detect = on_detect
        self.limits = limits
        self.max_body_bytes = max_body_bytes
        self.max_pixels = max_pixels
        self.audit = audit
        self.class_names = class_names
        self.metrics = _Metrics()
        self._suspended: dict[str, int] = {}
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._detector_lock = threading.Lock()

    # --- keys -------------------------------------------------------------------------
    def authenticate(self, request: Request) -> str:
        if self.keys is None:
            return ANONYMOUS
        address = request.client.host if request.client is not None else "unknown"
        lockout = self.key_guesses.refusal(address)
        if lockout is not None:
            raise _Refused(
                429, lockout.cause, lockout.reason, {"Retry-After": str(lockout.retry_after)}
            )
        presented = request.headers.get("x-api-key")
        key_id = self.keys.identify(presented) if presented else None
        if key_id is None:
            self.key_guesses.record(address)
            if not presented:
                raise _Refused(401, "auth", "missing API key: send it in the X-API-Key header")
            raise _Refused(401, "auth", "invalid API key")
        return key_id

    def _version(self) -> int:
        return self.keys.version if self.keys is not None else 0

    def is_suspended(self, key_id: str) -> bool:
        with self._lock:
            version = self._suspended.get(key_id)
            return version is not None and version == self._version()

    def suspend(self, key_id: str) -> None:
        with self._lock:
            self._suspended[key_id] = self._version()
        logger.warning("key %s suspended: its queries match earlier ones", key_id)

    # --- body -------------------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise _Refused(400, "bad_request", "invalid Content-Length header")
            if int(declared) > self.max_body_bytes:
                raise _Refused(413, "too_large", f"request body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _Refused(413, "too_large", f"request body over {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse_images(self, body: bytes) -> list[bytes]:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Refused(400, "bad_request", f"body is not valid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise _Refused(400, "bad_request", 'body must be {"image": ...} or {"images": [...]}')
        if ("image" in payload) == ("images" in payload):
            raise _Refused(
                400, "bad_request", 'body must have one of "image" (a string) or "images" (a list)'
            )
        if "image" in payload:
            items, names = [payload["image"]], ["image"]
        else:
            items = payload["images"]
            if not isinstance(items, list) or not items:
                raise _Refused(400, "bad_request", '"images" must be a non-empty list')
            names = [f"images[{i}]" for i in range(len(items))]
        try:
            return [decode_base64(item, name) for item, name in zip(items, names)]
        except ImageRejected as exc:
            raise _Refused(400, "bad_request", str(exc)) from None

    # --- classification ---------------------------------------------------------------
    def classify(self, key_id: str, blobs: list[bytes], outcome: _Outcome) -> dict[str, Any]:
        """Decode, check, detect and classify; the answer's JSON."""
        c, h, w = self.model.input_shape
        try:
            images = [
                decode_image(
                    blob, (c, h, w), self.max_pixels, "image" if len(blobs) == 1 else f"images[{i}]"
                )
                for i, blob in enumerate(blobs)
            ]
        except ImageRejected as exc:
            raise _Refused(400, "bad_request", str(exc)) from None
        if self.detector is not None:
            with self._detector_lock:
                flagged = [bool(self.detector.check(key_id, image)) for image in images]
            if any(flagged):
                self.metrics.detections.inc(sum(flagged))
                if self.on_detect == "log":
                    outcome.decision = "detected"
                else:
                    if self.on_detect == "suspend":
                        self.suspend(key_id)
                    raise _Refused(403, "detected", "query rejected: similar to earlier queries")
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        with self._model_lock, torch.no_grad():
            scores = self.model.predict(batch).detach().float().cpu()
        self.metrics.images.inc(len(images))
        return {"predictions": [self._answer(row) for row in self._probabilities(scores)]}

    def _probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        kind = getattr(getattr(self.model, "capabilities", None), "output", OutputKind.LOGITS)
        return scores.softmax(dim=1) if kind is OutputKind.LOGITS else scores

    def _answer(self, probabilities: torch.Tensor) -> dict[str, Any]:
        label = int(probabilities.argmax())
        answer: dict[str, Any] = {"label": label}
        if self.class_names is not None:
            answer["class_name"] = self.class_names[label]
        if self.output == "topk":
            values, indices = probabilities.topk(min(self.k or 1, probabilities.numel()))
            answer["top_k"] = [
                {"class": int(i), "probability": round(float(v), 4)}
                for v, i in zip(values, indices)
            ]
        elif self.output == "probabilities":
            answer["probabilities"] = [round(float(v), 4) for v in probabilities]
        return answer

    # --- one request, end to end ------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        start = time.perf_counter()
        outcome = _Outcome()
        status = 200
        try:
            outcome.key_id = self.authenticate(request)
            if self.is_suspended(outcome.key_id):
                raise _Refused(
                    403, "suspended", "API key suspended: its queries matched earlier ones"
                )
            deadline = start + self.request_timeout
            try:
                body = await asyncio.wait_for(
                    self.read_body(request), max(0.0, deadline - time.perf_counter())
                )
            except TimeoutError:
                raise _Refused(
                    408, "timeout", f"request body not received within {self.request_timeout:g} s"
                ) from None
            blobs = self.parse_images(body)
            outcome.digests = [digest(blob) for blob in blobs]
            refusal = self.limits.take(outcome.key_id, len(blobs))
            if refusal is not None:
                raise _Refused(
                    429, refusal.cause, refusal.reason, {"Retry-After": str(refusal.retry_after)}
                )
            try:
                answer = await asyncio.wait_for(
                    run_in_threadpool(self.classify, outcome.key_id, blobs, outcome),
                    max(0.0, deadline - time.perf_counter()),
                )
            except TimeoutError:
                raise _Refused(
                    503,
                    "timeout",
                    f"not answered within {self.request_timeout:g} s: the server is busy",
                    {"Retry-After": "1"},
                ) from None
            response: Response = JSONResponse(answer)
        except _Refused as refused:
            status = refused.status
            outcome.decision = f"rejected:{refused.cause}"
            self.metrics.rejections.labels(cause=refused.cause).inc()
            response = JSONResponse(
                {"error": refused.reason}, status_code=status, headers=refused.headers
            )
        except Exception:
            logger.exception("classify request failed")
            status = 500
            outcome.decision = "error"
            response = JSONResponse({"error": "internal server error"}, status_code=status)
        elapsed = time.perf_counter() - start
        self.metrics.requests.labels(status=str(status)).inc()
        self.metrics.latency.observe(elapsed)
        if self.audit is not None:
            self.audit.write(
                key_id=outcome.key_id,
                digests=outcome.digests,
                decision=outcome.decision,
                status=status,
                latency_ms=elapsed * 1000.0,
            )
        return response


def create_app(
    model: Classifier,
    *,
    keys: KeyStore | None,
    no_auth: bool = False,
    output: str = "label",
    detector: Detector | None = None,
    on_detect: str = "log",
    rate_per_minute: int | None = None,
    quota: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    audit_path: str | Path | None = None,
    class_names: list[str] | None = None,
    max_key_failures: int = 20,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> FastAPI:
    """The guarded inference server for ``model`` as a FastAPI app (run it with uvicorn).

    Args:
        model: any pixelguard Classifier; its ``input_shape`` (C,H,W) is the one image
            size and mode (grey for C=1, RGB for C=3) the server accepts.
        keys: the API keys; None serves without keys, only with ``no_auth=True``.
        no_auth: allow serving without keys (every request is ``anonymous``).
        output: what an answer reveals besides the label: ``"label"`` (nothing),
            ``"topk:K"`` (the K most likely classes) or ``"probabilities"`` (all).
        detector: a stateful query-attack detector, ``check(key_id, image) -> bool``.
        on_detect: on a detection, ``"log"`` (audit and metric only), ``"reject"``
            (403) or ``"suspend"`` (403, and the key is refused until a restart or
            until the keys file changes).
        rate_per_minute: images a key may send per minute (None: no limit).
        quota: images a key may send per UTC day (None: no quota).
        max_body_bytes: largest request body (413 above it).
        max_pixels: largest image (width x height) decoded; checked from the header.
        audit_path: the JSON-lines audit log (None: no log).
        class_names: one name per class, added to answers.
        max_key_failures: missing or wrong API keys from one client address within a
            minute that lock the address out for 5 minutes (429 with Retry-After).
        request_timeout: seconds from the start of a request to its answer: a body
            not received by then is answered 408, an image not classified by then 503
            with Retry-After (its work finishes in the background).

    Raises:
        ConfigError: no keys without ``no_auth``, an unknown ``output`` or
            ``on_detect``, or class names that do not match the model's classes.
    """
    if keys is None and not no_auth:
        raise ConfigError(
            "refusing to serve without API keys: give a keys file (--keys keys.toml) "
            "or allow anonymous access explicitly (--no-auth)"
        )
    if on_detect not in ON_DETECT:
        raise ConfigError(f"on_detect must be one of {', '.join(ON_DETECT)}, got {on_detect!r}")
    if class_names is not None and len(class_names) != model.num_classes:
        raise ConfigError(
            f"{len(class_names)} class names for a model of {model.num_classes} classes"
        )
    for name, value in (
        ("max_body_bytes", max_body_bytes),
        ("max_pixels", max_pixels),
        ("request_timeout", request_timeout),
    ):
        if value <= 0:
            raise ConfigError(f"{name} must be positive, got {value}")
    try:
        limits = Limits(rate_per_minute, quota)
        key_guesses = FailedKeyGuesses(max_key_failures)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    server = _Server(
        model,
        keys=keys,
        output=output,
        detector=detector,
        on_detect=on_detect,
        limits=limits,
        max_body_bytes=max_body_bytes,
        max_pixels=max_pixels,
        audit=AuditLog(audit_path) if audit_path is not None else None,
        class_names=class_names,
        key_guesses=key_guesses,
        request_timeout=float(request_timeout),
    )
    app = FastAPI(title="pixelguard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pixelguard = server

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "input_shape": list(model.input_shape)}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Response:
        return await server.handle(request)

    return app
