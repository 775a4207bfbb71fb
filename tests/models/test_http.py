"""Tests of the HTTP endpoint adapter against a local stub server with injected faults.

The stub scores an image as a fixed linear map of its channel means, so every expected
score is computed locally. Faults (HTTP errors, slow replies, malformed bodies) are
queued on the stub and consumed one per request, in arrival order.
"""

from __future__ import annotations

import base64
import email.utils
import io
import json
import socket
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

import pixelguard.models.http.transport as transport
from pixelguard.errors import (
    ConfigError,
    ModelError,
    QueryBudgetExceeded,
    QueryRejected,
    ShapeError,
)
from pixelguard.models.base import Classifier, OutputKind
from pixelguard.models.http import (
    EndpointConfig,
    HttpClassifier,
    load_http_model,
    parse_retry_after,
    redact_url,
)
from pixelguard.models.http_config import parse_json_path

REPO = Path(__file__).resolve().parents[2]
SHAPE = (3, 4, 4)
WEIGHTS = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, -1.0, 0.25]])
BIAS = np.array([0.0, 0.1, -0.1, 0.2])
CLASS_NAMES = ["cat", "dog", "bird", "fish"]


def reference_scores(x: torch.Tensor) -> torch.Tensor:
    """The stub's scoring function computed locally: (N, 3, H, W) -> (N, 4)."""
    means = x.double().mean(dim=(2, 3)).numpy()
    return torch.from_numpy(means @ WEIGHTS.T + BIAS).float()


def images(n: int, seed: int = 0) -> torch.Tensor:
    """Random canonical images on the uint8 grid, so PNG encoding is exact."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *SHAPE), generator=gen).float() / 255


# --- the stub server -----------------------------------------------------------------------


@dataclass
class Fault:
    """What the stub does instead of (or before) answering one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass
class Stub:
    """Shared state of the stub server: queued faults and a log of what arrived."""

    base: str = ""
    faults: deque[Fault | None] = field(default_factory=deque)
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    inflight: int = 0
    max_inflight: int = 0

    @property
    def requests(self) -> int:
        with self.lock:
            return len(self.log)

    @property
    def images(self) -> int:
        with self.lock:
            return sum(entry["n"] for entry in self.log)

    def fail(self, *faults: Fault | None) -> None:
        """Queue faults for the next requests; None lets one request through."""
        self.faults.extend(faults)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
        url = urlsplit(handler.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(raw)
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
            fault = self.faults.popleft() if self.faults else None
        try:
            decoded = _decode_request(url.path, body, params)
            with self.lock:
                self.log.append(
                    {"path": url.path, "n": len(decoded), "body": body, "headers": handler.headers}
                )
            if fault is not None:
                reply = (fault.status, fault.body or b"", fault.headers)
            else:
                if "delay" in params:
                    self.stop.wait(float(params["delay"]))
                if url.path == "/auth" and handler.headers.get("Authorization") != "Bearer s3cret":
                    reply = (401, b'{"error": "bad API key"}', None)
                else:
                    reply = (200, json.dumps(_reply(url.path, decoded, params)).encode(), None)
        finally:
            # done before the answer goes out: the client may send its next request the
            # moment it has this one's answer
            with self.lock:
                self.inflight -= 1
        _send(handler, *reply)


def _decode_image(value: Any, params: dict[str, str]) -> np.ndarray:
    """One image as the endpoint received it -> (3, H, W) float64 in [0, 1]."""
    if isinstance(value, dict):
        value = value["b64"]
    if isinstance(value, str):
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(value))), dtype=np.float64)
        return pixels.transpose(2, 0, 1) / 255
    array = np.asarray(value, dtype=np.float64) / float(params.get("scale", 1))
    return array.transpose(2, 0, 1) if params.get("layout") == "nhwc" else array


def _decode_request(path: str, body: dict[str, Any], params: dict[str, str]) -> list[np.ndarray]:
    if path == "/batch":
        return [_decode_image(v, params) for v in body["instances"]]
    if path == "/nested":
        assert body["model"] == "m1" and body["inputs"]["version"] == 2
        return [_decode_image(body["inputs"]["image"], params)]
    return [_decode_image(body["image"], params)]


def _reply(path: str, decoded: list[np.ndarray], params: dict[str, str]) -> dict[str, Any]:
    scores = [(WEIGHTS @ img.reshape(3, -1).mean(axis=1) + BIAS).tolist() for img in decoded]
    if path == "/batch":
        return {"predictions": scores}
    if path == "/nested":
        return {"data": [{"probs": scores[0]}]}
    if path == "/label":
        label = int(np.argmax(scores[0]))
        return {"label": label if params.get("as") == "index" else CLASS_NAMES[label]}
    return {"scores": scores[0]}


def _send(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    try:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # the client gave up (timeout test); nothing to answer
        return


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.stub.handle(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        return


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    state = Stub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.stub = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    state.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the adapter's waits between attempts instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr(transport, "_wait", recorded.append)
    return recorded


def config(stub: Stub, path: str = "/batch", **fields: Any) -> EndpointConfig:
    defaults: dict[str, Any] = {
        "url": stub.base + path,
        "input_shape": SHAPE,
        "output": "logits",
        "timeout_s": 5.0,
        "backoff_s": 0.01,
        "max_retries": 3,
    }
    if urlsplit(path).path == "/batch":
        defaults.update(batch=True, request_field="instances", response_path="predictions")
    else:
        defaults.update(batch=False, request_field="image", response_path="scores")
    defaults.update(fields)
    return EndpointConfig(**defaults)


def model(stub: Stub, path: str = "/batch", *, budget: dict[str, int] | None = None, **fields: Any):
    return HttpClassifier(config(stub, path, **fields), **(budget or {}))


# --- scores ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["json", "png"])
@pytest.mark.parametrize("path", ["/batch", "/single"])
def test_scores_match_local_computation(stub: Stub, path: str, encoding: str) -> None:
    m = model(stub, path, encoding=encoding, max_batch=2)
    x = images(5)
    scores = m.predict(x)
    assert isinstance(m, Classifier)
    assert scores.shape == (5, 4) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, reference_scores(x), atol=1e-5, rtol=0)
    assert stub.images == 5
    assert stub.requests == (3 if path == "/batch" else 5)
    assert m.stats["images_sent"] == 5 and m.stats["retries"] == 0


def test_json_conversion_to_model_layout_and_scale(stub: Stub) -> None:
    m = model(stub, "/batch?layout=nhwc&scale=255", layout="nhwc", scale=255, dtype="uint8")
    x = images(2)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    sent = stub.log[0]["body"]["instances"][0]
    assert np.asarray(sent).shape == (4, 4, 3)
    assert all(isinstance(v, int) for v in np.asarray(sent, dtype=object).ravel())


def test_png_wrapped_under_image_key(stub: Stub) -> None:
    m = model(stub, "/batch", encoding="png", image_key="b64")
    x = images(3)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    assert set(stub.log[0]["body"]["instances"][0]) == {"b64"}


def test_dotted_request_field_extra_body_and_indexed_response_path(stub: Stub) -> None:
    m = model(
        stub,
        "/nested",
        request_field="inputs.image",
        extra_body={"model": "m1", "inputs": {"version": 2}},
        response_path="data[0].probs",
    )
    x = images(2)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)


def test_num_classes_and_output_learnt_from_one_probe(stub: Stub) -> None:
    m = model(stub, "/single", output=None)
    assert m.num_classes == 4
    assert m.capabilities.output is OutputKind.LOGITS
    assert stub.images == 1
    m.predict(torch.full((1, *SHAPE), 0.5))
    assert stub.images == 1


def test_wrong_image_shape_rejected(stub: Stub) -> None:
    with pytest.raises(ShapeError, match="expects images of shape"):
        model(stub).predict(torch.zeros(1, 3, 5, 5))
    assert stub.requests == 0


def test_concurrency_is_bounded(stub: Stub) -> None:
    m = model(stub, "/single?delay=0.2", concurrency=3)
    m.predict(images(9))
    assert stub.requests == 9
    assert 1 < stub.max_inflight <= 3


# --- labels ------------------------------------------------------------------------------


def test_labels_endpoint_gives_one_hot_rows(stub: Stub) -> None:
    m = model(stub, "/label", output="labels", class_names=CLASS_NAMES, response_path="label")
    x = images(6)
    scores = m.predict(x)
    assert m.capabilities.output is OutputKind.LABELS
    assert not m.capabilities.scores and not m.capabilities.gradients
    assert m.num_classes == 4
    assert torch.equal(scores.sum(dim=1), torch.ones(6))
    assert torch.equal(scores.argmax(dim=1), reference_scores(x).argmax(dim=1))


def test_labels_as_class_index(stub: Stub) -> None:
    m = model(stub, "/label?as=index", output="labels", num_classes=4, response_path="label")
    x = images(3)
    assert torch.equal(m.predict(x).argmax(dim=1), reference_scores(x).argmax(dim=1))


def test_unknown_label_name_is_malformed(stub: Stub) -> None:
    stub.fail(*[Fault(body=b'{"label": "zebra"}')] * 2)
    m = model(
        stub,
        "/label",
        output="labels",
        class_names=CLASS_NAMES,
        response_path="label",
        max_retries=1,
    )
    with pytest.raises(ModelError, match="one of class_names at label"):
        m.predict(images(1))


# --- retries -----------------------------------------------------------------------------


def test_rate_limited_then_success_honours_retry_after(stub: Stub, waits: list[float]) -> None:
    stub.fail(Fault(status=429, headers={"Retry-After": "3"}))
    m = model(stub)
    x = images(2)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    assert waits == [3.0]
    assert stub.requests == 2
    stats = m.stats
    assert stats["retries"] == 1 and stats["rate_limited"] == 1
    assert stats["requests_failed"] == 1 and stats["requests_sent"] == 2
    assert stats["images_sent"] == 4 and stats["images_charged"] == 2


def test_retry_after_as_http_date(
    stub: Stub, waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = 1_800_000_000.0  # a fixed clock: the wait is exact, however slow the machine
    monkeypatch.setattr(transport.time, "time", lambda: now)
    when = email.utils.formatdate(now + 30, usegmt=True)
    stub.fail(Fault(status=503, headers={"Retry-After": when}))
    model(stub).predict(images(1))
    assert waits == [30.0]


def test_retry_after_beyond_backoff_max_stops(stub: Stub, waits: list[float]) -> None:
    stub.fail(Fault(status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(ModelError, match="retry after 3600 s"):
        model(stub, backoff_max_s=60).predict(images(1))
    assert waits == []


def test_server_errors_retried_with_exponential_backoff(stub: Stub, waits: list[float]) -> None:
    stub.fail(Fault(status=503), Fault(status=502), Fault(status=500))
    m = model(stub, backoff_s=0.01)
    x = images(2)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    assert waits == pytest.approx([0.01, 0.02, 0.04])
    assert m.stats["retries"] == 3 and m.stats["requests_failed"] == 3
    assert m.stats["unavailable"] == 1 and m.stats["rate_limited"] == 0
    assert stub.requests == 4


def test_server_errors_exhaust_retries(stub: Stub) -> None:
    stub.fail(*[Fault(status=503, body=b"overloaded")] * 3)
    m = model(stub, max_retries=2)
    with pytest.raises(ModelError, match=r"after 3 attempt\(s\): HTTP 503.*overloaded"):
        m.predict(images(1))
    assert stub.requests == 3


def test_timeout_then_success(stub: Stub, waits: list[float]) -> None:
    m = model(stub, timeout_s=0.2)
    real_open = m._opener.open
    timeouts: list[float] = []

    def open_timing_out_once(request: Any, timeout: float) -> Any:
        # What the socket raises when no reply arrives within the timeout, without waiting.
        timeouts.append(timeout)
        if len(timeouts) == 1:
            raise TimeoutError("timed out")
        return real_open(request, timeout=timeout)

    m._opener.open = open_timing_out_once  # type: ignore[method-assign]
    x = images(1)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    assert timeouts == [0.2, 0.2], "every attempt is bounded by timeout_s"
    assert waits == [0.01], "one backoff before the retry"
    assert m.stats["retries"] == 1 and m.stats["requests_failed"] == 1
    assert m.stats["requests_sent"] == 2 and stub.requests == 1


def test_connection_refused_retried_then_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = EndpointConfig(
        url=f"http://127.0.0.1:{port}/x",
        input_shape=SHAPE,
        output="logits",
        max_retries=1,
        backoff_s=0.0,
    )
    m = HttpClassifier(cfg)
    with pytest.raises(ModelError, match="connection failed"):
        m.predict(images(1))
    assert m.stats["requests_failed"] == 2 and m.stats["retries"] == 1


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_fail_at_once(stub: Stub, status: int, waits: list[float]) -> None:
    stub.fail(Fault(status=status, body=b'{"error": "bad key"}'))
    m = model(stub)
    with pytest.raises(ModelError, match=f"HTTP {status}.*bad key"):
        m.predict(images(1))
    assert stub.requests == 1 and waits == []
    assert m.stats["retries"] == 0 and m.stats["requests_failed"] == 1


def test_a_403_is_a_rejected_query(stub: Stub, waits: list[float]) -> None:
    # A stateful defense (pixelguard serve --on-detect reject) answers 403: not retried
    # as such, but distinguishable, so an adaptive attacker can react to it.
    stub.fail(Fault(status=403, body=b'{"error": "query rejected"}'))
    with pytest.raises(QueryRejected, match="HTTP 403.*query rejected"):
        model(stub).predict(images(1))
    assert stub.requests == 1 and waits == []


def test_redirect_not_followed(stub: Stub) -> None:
    stub.fail(Fault(status=302, headers={"Location": "/single"}))
    with pytest.raises(ModelError, match="redirects are not followed"):
        model(stub).predict(images(1))
    assert stub.requests == 1


MALFORMED = {
    "not json": b"<html>oops</html>",
    "missing path": b'{"outputs": [[1, 2, 3, 4], [1, 2, 3, 4]]}',
    "wrong length": b'{"predictions": [[1, 2, 3, 4]]}',
    "non-numeric": b'{"predictions": [[1, "x", 3, 4], [1, 2, 3, 4]]}',
    "nan": b'{"predictions": [[NaN, 2, 3, 4], [1, 2, 3, 4]]}',
    "ragged": b'{"predictions": [[1, 2, 3, 4], [1, 2, 3]]}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_reply_retried_then_success(stub: Stub, body: bytes) -> None:
    stub.fail(Fault(body=body))
    m = model(stub)
    x = images(2)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    assert m.stats["retries"] == 1 and m.stats["requests_failed"] == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (MALFORMED["not json"], r"not JSON \(starts with '<html>oops"),
        (MALFORMED["missing path"], r"no key 'predictions' in the object at \$ \(keys: outputs\)"),
        (MALFORMED["wrong length"], "expected a list of 2 per-image results at predictions"),
        (MALFORMED["non-numeric"], r"non-numeric score a string at predictions\[0\]\[1\]"),
        (MALFORMED["nan"], r"non-finite score nan at predictions\[0\]\[0\]"),
    ],
)
def test_malformed_reply_persisting_names_the_problem(stub: Stub, body: bytes, message: str):
    stub.fail(*[Fault(body=body)] * 3)
    with pytest.raises(ModelError, match=message):
        model(stub, max_retries=2).predict(images(2))
    assert stub.requests == 3


def test_reply_with_wrong_number_of_classes(stub: Stub) -> None:
    stub.fail(*[Fault(body=b'{"scores": [1, 2, 3]}')] * 2)
    m = model(stub, "/single", num_classes=4, max_retries=1)
    with pytest.raises(ModelError, match="expected 4 scores per image at scores, got 3"):
        m.predict(images(1))


# --- cache -------------------------------------------------------------------------------


def test_same_image_is_sent_once(stub: Stub) -> None:
    m = model(stub)
    a, b = images(2)
    first = m.predict(torch.stack([a, b, a]))
    assert stub.images == 2
    again = m.predict(torch.stack([b, a]))
    assert stub.images == 2
    assert torch.equal(first[2], first[0]) and torch.equal(again, first[[1, 0]])
    assert m.stats["cache_hits"] == 3 and m.stats["images_sent"] == 2


def test_cache_disabled_sends_every_image(stub: Stub) -> None:
    m = model(stub, cache=False)
    x = images(1)
    m.predict(torch.cat([x, x]))
    m.predict(x)
    assert stub.images == 3 and m.stats["cache_hits"] == 0


@pytest.mark.parametrize("suffix", [".jsonl", ".npz"])
def test_disk_cache_resumes_without_sending(stub: Stub, tmp_path: Path, suffix: str) -> None:
    path = str(tmp_path / f"cache{suffix}")
    x = images(4)
    expected = model(stub, cache_path=path).predict(x)
    assert stub.images == 4
    resumed = model(stub, cache_path=path)
    torch.testing.assert_close(resumed.predict(x), expected, atol=0, rtol=0)
    assert stub.images == 4 and resumed.stats["cache_hits"] == 4
    resumed.predict(torch.cat([x, images(1, seed=1)]))
    assert stub.images == 5
    assert model(stub, cache_path=path).report()["cache_size"] == 5


def test_disk_cache_keeps_answers_before_a_failure(stub: Stub, tmp_path: Path) -> None:
    path = str(tmp_path / "cache.npz")
    stub.fail(None, Fault(status=401))  # first request answers, second is refused
    m = model(stub, cache_path=path, max_batch=1, concurrency=1)
    with pytest.raises(ModelError, match="401"):
        m.predict(images(3))
    assert model(stub, cache_path=path).report()["cache_size"] == 1


def test_disk_cache_of_another_endpoint_is_refused(stub: Stub, tmp_path: Path) -> None:
    path = str(tmp_path / "cache.jsonl")
    model(stub, cache_path=path).predict(images(1))
    with pytest.raises(ConfigError, match="different endpoint config"):
        model(stub, cache_path=path, extra_body={"model": "v2"})


def test_jsonl_cache_tolerates_a_torn_last_line(stub: Stub, tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    model(stub, cache_path=str(path)).predict(images(2))
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"key": "abc", "scor')
    m = model(stub, cache_path=str(path))
    assert m.report()["cache_size"] == 2
    m.predict(images(1, seed=1))
    assert model(stub, cache_path=str(path)).report()["cache_size"] == 3


# --- budget ------------------------------------------------------------------------------


def test_max_images_raises_before_sending(stub: Stub) -> None:
    m = model(stub, budget={"max_images": 5})
    m.predict(images(3))
    with pytest.raises(QueryBudgetExceeded, match="max_images=5"):
        m.predict(images(3, seed=1))
    assert stub.images == 3
    m.predict(images(3))  # cached: free
    m.predict(images(2, seed=2))
    assert stub.images == 5 and m.stats["images_charged"] == 5


def test_max_requests_raises_before_sending(stub: Stub) -> None:
    m = model(stub, "/single", budget={"max_requests": 2})
    with pytest.raises(QueryBudgetExceeded, match="max_requests=2"):
        m.predict(images(3))
    assert stub.requests == 0


def test_failed_requests_not_charged_by_default(stub: Stub) -> None:
    stub.fail(Fault(status=503), Fault(status=503))
    m = model(stub, budget={"max_images": 1})
    m.predict(images(1))
    assert stub.requests == 3 and m.stats["images_charged"] == 1


def test_failed_requests_charged_when_configured(stub: Stub) -> None:
    stub.fail(*[Fault(status=503)] * 5)
    m = model(stub, failed_requests_count=True, budget={"max_images": 2})
    with pytest.raises(QueryBudgetExceeded):
        m.predict(images(1))
    assert stub.images == 2 and m.stats["images_charged"] == 2


def test_budget_holds_under_concurrency_and_keeps_answers(stub: Stub) -> None:
    stub.fail(Fault(status=503), Fault(status=503))
    m = model(stub, "/single", concurrency=4, failed_requests_count=True, budget={"max_images": 6})
    with pytest.raises(QueryBudgetExceeded):
        m.predict(images(5))
    assert stub.images == 6
    assert m.report()["cache_size"] == 4


# --- headers and secrets -----------------------------------------------------------------


def test_header_from_environment(stub: Stub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_TEST_KEY", "s3cret")
    m = model(stub, "/auth", headers={"Authorization": "Bearer ${PG_TEST_KEY}"})
    x = images(1)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    assert stub.log[0]["headers"]["Authorization"] == "Bearer s3cret"
    shown = [repr(m.config), repr(m), json.dumps(m.config.to_dict()), str(m.report())]
    assert not any("s3cret" in text for text in shown)


def test_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PG_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError, match=r"'X-Api-Key'.*\$\{PG_TEST_MISSING\}.*not set"):
        EndpointConfig(
            url="http://127.0.0.1/x", input_shape=SHAPE, headers={"X-Api-Key": "${PG_TEST_MISSING}"}
        )


def test_user_headers_replace_defaults(stub: Stub) -> None:
    stub.fail(Fault(body=b'{"predictions": [[1, 2]]}'))
    model(stub, headers={"content-type": "application/vnd+json"}).predict(images(1))
    assert stub.log[0]["headers"]["Content-Type"] == "application/vnd+json"


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"input_shape": (3, 4)}, "input_shape"),
        ({"url": "ftp://host/x"}, "url"),
        ({"encoding": "bmp"}, "encoding"),
        ({"encoding": "png", "input_shape": (2, 4, 4)}, "png"),
        ({"output": "scores"}, "output"),
        ({"output": "labels"}, "num_classes"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_batch": 0}, "max_batch"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"backoff_s": 2.0, "backoff_max_s": 1.0}, "backoff_max_s"),
        ({"response_path": "a..b"}, "response_path"),
        ({"request_field": "a[0]"}, "request_field"),
        ({"extra_body": {"inputs": 1}, "request_field": "inputs.image"}, "extra_body"),
        ({"cache_path": "cache.txt"}, "cache_path"),
        ({"cache": False, "cache_path": "c.npz"}, "cache_path"),
        ({"class_names": ["a", "b"], "num_classes": 3}, "num_classes"),
        ({"layout": "hwc"}, "layout"),
        ({"mean": [0.5, 0.5]}, "mean"),
        ({"batch": "yes"}, "batch"),
        ({"top_k_fields": ["class"], "num_classes": 4}, "top_k_fields"),
        ({"top_k_fields": ["class", "p"]}, "num_classes"),
        ({"top_k_fields": ["class", "p"], "num_classes": 4, "output": "labels"}, "top_k_fields"),
    ],
)
def test_invalid_config_names_the_field(fields: dict[str, Any], name: str) -> None:
    data = {"url": "http://127.0.0.1/x", "input_shape": SHAPE, **fields}
    with pytest.raises(ConfigError, match=name):
        EndpointConfig.from_dict(data)


def test_unknown_and_missing_fields() -> None:
    with pytest.raises(ConfigError, match="unknown endpoint config field.*'colour'"):
        EndpointConfig.from_dict({"url": "http://h/x", "input_shape": SHAPE, "colour": 1})
    with pytest.raises(ConfigError, match="input_shape is required"):
        EndpointConfig.from_dict({"url": "http://h/x"})


def test_to_dict_round_trips() -> None:
    cfg = EndpointConfig(
        url="http://h/x", input_shape=SHAPE, output="labels", class_names=["a", "b"]
    )
    assert EndpointConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("path", "tokens"),
    [
        ("predictions", ("predictions",)),
        ("result.scores", ("result", "scores")),
        ("data[0].probs", ("data", 0, "probs")),
        ("$.a[1][-1]", ("a", 1, -1)),
        ("", ()),
    ],
)
def test_parse_json_path(path: str, tokens: tuple[Any, ...]) -> None:
    assert parse_json_path(path) == tokens


def test_parse_retry_after() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    # An HTTP date already past means "retry now".
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_redact_url_drops_credentials_and_query() -> None:
    assert redact_url("https://u:pw@host:8443/v1/score?token=abc") == "https://host:8443/v1/score"


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "examples").glob("endpoint-*")))
def test_example_configs_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", "example-key")
    monkeypatch.setenv("PIXELGUARD_KEY", "example-key")
    cfg = EndpointConfig.from_file(REPO / "examples" / name)
    assert cfg.input_shape[0] in (1, 3)


def test_from_file_json_and_yaml(tmp_path: Path) -> None:
    data = {"url": "http://h/x", "input_shape": [1, 8, 8], "output": "probabilities"}
    (tmp_path / "e.json").write_text(json.dumps(data))
    (tmp_path / "e.yaml").write_text(
        "url: http://h/x\ninput_shape: [1, 8, 8]\noutput: probabilities\n"
    )
    assert EndpointConfig.from_file(tmp_path / "e.json") == EndpointConfig.from_file(
        tmp_path / "e.yaml"
    )
    with pytest.raises(ConfigError, match="cannot read"):
        EndpointConfig.from_file(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        EndpointConfig.from_file(tmp_path / "bad.json")


def test_load_http_model(stub: Stub, tmp_path: Path) -> None:
    path = tmp_path / "endpoint.json"
    path.write_text(json.dumps(config(stub, url="http://elsewhere/x").to_dict()))
    m = load_http_model(stub.base + "/batch", config=path, max_images=3, concurrency=None)
    assert m.config.url == stub.base + "/batch" and m.config.concurrency == 4
    x = images(3)
    torch.testing.assert_close(m.predict(x), reference_scores(x), atol=1e-5, rtol=0)
    with pytest.raises(QueryBudgetExceeded):
        m.predict(images(1, seed=1))
    with pytest.raises(ConfigError, match="unknown endpoint config field.*'colour'"):
        load_http_model(stub.base, config=path, colour="red")


def test_load_http_model_needs_a_config() -> None:
    with pytest.raises(ConfigError, match=r"input_shape.*docs/endpoints\.md"):
        load_http_model("http://127.0.0.1/x", config=None)
