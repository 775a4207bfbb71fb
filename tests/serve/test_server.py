"""The guarded inference server, served by a real uvicorn on 127.0.0.1 and queried over HTTP."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from PIL import Image

from pixelguard.errors import ConfigError
from pixelguard.models.base import ClassifierWrapper
from pixelguard.models.http import EndpointConfig, HttpClassifier
from pixelguard.serve import KeyStore, create_app, hash_key
from pixelguard.serve.limits import FailedKeyGuesses

ALICE, BOB = "alice-secret-key", "bob-secret-key"


@contextlib.contextmanager
def serving(app) -> Iterator[httpx.Client]:
    """Run ``app`` on a free port of 127.0.0.1 in a thread; a client for it; stop it after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start within 10 s"
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def png(pixels: np.ndarray, fmt: str = "PNG") -> str:
    """Base64 of ``pixels`` (uint8 HxW grey or HxWx3 RGB) as a PNG or JPEG file."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def images(digits) -> list[np.ndarray]:
    """Ten held-out digits as uint8 8x8 grey images."""
    x = digits[0][1400:1410, 0].numpy()
    return [np.round(img * 255).astype(np.uint8) for img in x]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(f'[keys]\nalice = "{ALICE}"\nbob = "{hash_key(BOB)}"\n')
    return path


def _keys(path: Path) -> KeyStore:
    return KeyStore(path, check_every=0)


def _post(client: httpx.Client, body, key: str | None = ALICE) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    if isinstance(body, bytes):
        return client.post("/v1/classify", content=body, headers=headers)
    return client.post("/v1/classify", json=body, headers=headers)


def test_keys_sizes_and_images(digits_model, keys_file, images, tmp_path) -> None:
    audit = tmp_path / "audit" / "log.jsonl"
    app = create_app(digits_model, keys=_keys(keys_file), max_body_bytes=4096, audit_path=audit)
    good = {"image": png(images[0])}
    with serving(app) as client:
        assert client.get("/healthz").status_code == 200
        missing = _post(client, good, key=None)
        assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]
        assert _post(client, good, key="wrong").status_code == 401
        ok = _post(client, good)
        assert ok.status_code == 200
        hashed = _post(client, good, key=BOB)
        assert hashed.status_code == 200 and hashed.json() == ok.json()
        # label only: no score anywhere in the answer
        answer = ok.json()
        assert set(answer) == {"predictions"} and set(answer["predictions"][0]) == {"label"}
        assert "probabilit" not in ok.text and "top_k" not in ok.text

        big = _post(client, {"image": "A" * 5000})
        assert big.status_code == 413
        streamed = client.post(
            "/v1/classify",
            content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]),
            headers={"X-API-Key": ALICE},
        )
        assert streamed.status_code == 413

        broken = _post(client, {"image": base64.b64encode(b"\x89PNG\r\n\x1a\nnot").decode()})
        assert broken.status_code == 400 and "PNG or JPEG" in broken.json()["error"]
        assert _post(client, {"image": "%%%"}).status_code == 400
        assert _post(client, b"{not json").status_code == 400
        wrong_size = _post(client, {"image": png(np.zeros((9, 8), np.uint8))})
        assert wrong_size.status_code == 400 and "8x8" in wrong_size.json()["error"]
        rgb = _post(client, {"image": png(np.zeros((8, 8, 3), np.uint8))})
        assert rgb.status_code == 400 and "mode is RGB" in rgb.json()["error"]
        jpeg = _post(client, {"image": png(images[1], "JPEG")})
        assert jpeg.status_code == 200
        batch = _post(client, {"images": [png(img) for img in images[:4]]})
        assert batch.status_code == 200 and len(batch.json()["predictions"]) == 4

        metrics = client.get("/metrics").text
    for line in (
        'pixelguard_requests_total{status="200"} 4.0',
        'pixelguard_requests_total{status="401"} 2.0',
        'pixelguard_rejections_total{cause="too_large"} 2.0',
        'pixelguard_rejections_total{cause="auth"} 2.0',
        "pixelguard_request_latency_seconds_count 13.0",
        "pixelguard_detections_total 0.0",
    ):
        assert line in metrics, line

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(lines) == 13
    assert [r["status"] for r in lines[:4]] == [401, 401, 200, 200]
    assert [r["key_id"] for r in lines[:4]] == [None, None, "alice", "bob"]
    assert lines[2]["decision"] == "ok" and lines[0]["decision"] == "rejected:auth"
    assert lines[2]["images"] and lines[2]["images"][0].startswith("sha256:")
    assert lines[2]["images"] == lines[3]["images"]
    assert all({"time", "latency_ms"} <= set(r) for r in lines)
    text = audit.read_text()
    assert good["image"][:40] not in text and ALICE not in text and BOB not in text


def test_decompression_bombs_are_refused_from_the_header(
    digits_model, keys_file, monkeypatch
) -> None:
    bomb = io.BytesIO()
    Image.new("L", (6000, 6000)).save(bomb, format="PNG")  # ~36 MP of zeros, a few kB
    body = {"image": base64.b64encode(bomb.getvalue()).decode()}
    with serving(create_app(digits_model, keys=_keys(keys_file), max_pixels=64 * 64)) as client:
        ours = _post(client, body)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's own guard now fires first
    assert ours.status_code == 400 and "more than 4096 pixels" in ours.json()["error"]
    with serving(create_app(digits_model, keys=_keys(keys_file), max_pixels=10**9)) as client:
        pils = _post(client, body)
    assert pils.status_code == 400 and "decompression bomb" in pils.json()["error"]


def test_topk_and_probabilities(digits_model, keys_file, images) -> None:
    names = [f"digit-{i}" for i in range(10)]
    body = {"images": [png(img) for img in images[:3]]}
    with serving(
        create_app(digits_model, keys=_keys(keys_file), output="topk:3", class_names=names)
    ) as client:
        topk = _post(client, body).json()["predictions"]
    with serving(create_app(digits_model, keys=_keys(keys_file), output="probabilities")) as client:
        full = _post(client, body).json()["predictions"]
    for row, all_row in zip(topk, full):
        assert row["class_name"] == f"digit-{row['label']}"
        assert len(row["top_k"]) == 3 and row["top_k"][0]["class"] == row["label"]
        probabilities = [entry["probability"] for entry in row["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(round(p, 4) == p for p in probabilities)
        assert len(all_row["probabilities"]) == 10 and abs(sum(all_row["probabilities"]) - 1) < 1e-3
        assert all_row["label"] == row["label"]
        assert all_row["probabilities"][row["label"]] == row["top_k"][0]["probability"]


def _endpoint(client: httpx.Client, **fields) -> EndpointConfig:
    """pixelguard's own HTTP adapter pointed at the server, one image per request."""
    return EndpointConfig.from_dict(
        {
            "url": f"{str(client.base_url).rstrip('/')}/v1/classify",
            "input_shape": [1, 8, 8],
            "encoding": "png",
            "request_field": "image",
            "headers": {"X-API-Key": ALICE},
            "num_classes": 10,
            "concurrency": 1,
            "cache": False,
            **fields,
        }
    )


def test_the_http_adapter_reads_every_reveal_level(digits_model, keys_file, correct_digits) -> None:
    x = correct_digits[0][:4]
    rows = {}
    for reveal, fields in (
        ("probabilities", {"response_path": "predictions[0].probabilities"}),
        (
            "topk:2",
            {"response_path": "predictions[0].top_k", "top_k_fields": ["class", "probability"]},
        ),
        ("label", {"response_path": "predictions[0].label", "output": "labels"}),
    ):
        app = create_app(digits_model, keys=_keys(keys_file), output=reveal)
        with serving(app) as client:
            rows[reveal] = HttpClassifier(_endpoint(client, **fields)).predict(x)
    full, top2, label = rows["probabilities"], rows["topk:2"], rows["label"]
    expected = digits_model.predict(x).softmax(dim=1)
    assert torch.allclose(full, expected, atol=1e-3)
    assert ((top2 > 0).sum(dim=1) <= 2).all()
    kept = top2 > 0
    assert torch.allclose(top2[kept], full[kept], atol=1e-6)
    assert torch.equal(top2.argmax(dim=1), full.argmax(dim=1))
    assert torch.equal(label.argmax(dim=1), full.argmax(dim=1))
    assert set(label.unique().tolist()) == {0.0, 1.0}  # the label level leaks no score


def test_quota_and_rate_answer_429_with_retry_after(digits_model, keys_file, images) -> None:
    body = {"image": png(images[0])}
    with serving(create_app(digits_model, keys=_keys(keys_file), quota=3)) as client:
        codes = [_post(client, body).status_code for _ in range(3)]
        over = _post(client, body)
        other = _post(client, body, key=BOB)
    assert codes == [200, 200, 200] and other.status_code == 200
    assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    assert "quota" in over.json()["error"]
    with serving(create_app(digits_model, keys=_keys(keys_file), rate_per_minute=2)) as client:
        codes = [_post(client, body).status_code for _ in range(3)]
        limited = _post(client, body)
    assert codes == [200, 200, 429]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


class Slow(ClassifierWrapper):
    """Takes ``seconds`` to answer."""

    def __init__(self, model, seconds: float) -> None:
        super().__init__(model)
        self.seconds = seconds

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return self.model.predict(x)


def test_requests_time_out(digits_model, keys_file, images) -> None:
    app = create_app(Slow(digits_model, 1.0), keys=_keys(keys_file), request_timeout=0.3)
    body = json.dumps({"image": png(images[0])}).encode()
    with serving(app) as client:
        busy = _post(client, body)
        # a client that sends part of its body and stalls
        host, port = client.base_url.host, client.base_url.port
        with socket.create_connection((host, port), timeout=5) as sock:
            head = (
                f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {ALICE}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body[:10])
            reply = ""
            for _ in range(10):  # the status line and headers, then the body
                chunk = sock.recv(4096).decode()
                reply += chunk
                if not chunk or "request body" in reply:
                    break
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert "not answered within 0.3 s" in busy.json()["error"]
    assert reply.startswith("HTTP/1.1 408") and "request body not received" in reply


def test_key_guessing_locks_the_address_out(digits_model, keys_file, images) -> None:
    body = {"image": png(images[0])}
    app = create_app(digits_model, keys=_keys(keys_file), max_key_failures=3)
    with serving(app) as client:
        assert _post(client, body).status_code == 200
        guesses = [_post(client, body, key=f"guess-{i}").status_code for i in range(3)]
        locked = _post(client, body)  # even the right key, from this address
        metrics = client.get("/metrics").text
    assert guesses == [401, 401, 401]
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
    assert "too many invalid API keys" in locked.json()["error"]
    assert 'pixelguard_rejections_total{cause="auth_lockout"} 1.0' in metrics


def test_failed_key_guesses_count_within_a_window() -> None:
    now = [0.0]
    guesses = FailedKeyGuesses(3, window_s=60, lockout_s=300, max_addresses=2, clock=lambda: now[0])
    for t in (0, 50, 120, 130):  # never three within a minute
        now[0] = t
        guesses.record("10.0.0.1")
        assert guesses.refusal("10.0.0.1") is None
    now[0] = 140
    guesses.record("10.0.0.1")  # the third within a minute
    refusal = guesses.refusal("10.0.0.1")
    assert refusal is not None and refusal.retry_after == 300
    assert guesses.refusal("10.0.0.2") is None
    now[0] = 441
    assert guesses.refusal("10.0.0.1") is None
    for address in ("a", "b", "c"):
        guesses.record(address)
    assert set(guesses._failures) == {"b", "c"}  # bounded: the oldest address went first


def test_a_key_removed_from_the_file_is_refused_without_restart(
    digits_model, keys_file, images
) -> None:
    body = {"image": png(images[0])}
    with serving(create_app(digits_model, keys=_keys(keys_file))) as client:
        assert _post(client, body).status_code == 200
        keys_file.write_text(f'[keys]\nbob = "{hash_key(BOB)}"\n')
        stamp = keys_file.stat().st_mtime_ns + 2_000_000_000
        os.utime(keys_file, ns=(stamp, stamp))
        assert _post(client, body).status_code == 401
        assert _post(client, body, key=BOB).status_code == 200


class ThirdQuery:
    """A stub detector: flags the third query of each key."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def check(self, key_id: str, image: np.ndarray) -> bool:
        assert image.dtype == np.uint8 and image.shape == (8, 8, 1)
        self.seen[key_id] = self.seen.get(key_id, 0) + 1
        return self.seen[key_id] == 3


@pytest.mark.parametrize("on_detect", ["log", "reject", "suspend"])
def test_detections(digits_model, keys_file, images, tmp_path, on_detect) -> None:
    audit = tmp_path / "audit.jsonl"
    app = create_app(
        digits_model,
        keys=_keys(keys_file),
        detector=ThirdQuery(),
        on_detect=on_detect,
        audit_path=audit,
    )
    with serving(app) as client:
        codes = [_post(client, {"image": png(img)}).status_code for img in images[:5]]
        other = _post(client, {"image": png(images[0])}, key=BOB)
        metrics = client.get("/metrics").text
    decisions = [json.loads(line)["decision"] for line in audit.read_text().splitlines()]
    assert "pixelguard_detections_total 1.0" in metrics
    assert other.status_code == 200
    if on_detect == "log":
        assert codes == [200] * 5 and decisions[2] == "detected"
    elif on_detect == "reject":
        assert codes == [200, 200, 403, 200, 200] and decisions[2] == "rejected:detected"
    else:
        assert codes == [200, 200, 403, 403, 403]
        assert decisions[2:5] == ["rejected:detected"] + ["rejected:suspended"] * 2


def test_a_suspension_ends_when_the_keys_file_changes(digits_model, keys_file, images) -> None:
    app = create_app(
        digits_model, keys=_keys(keys_file), detector=ThirdQuery(), on_detect="suspend"
    )
    body = {"image": png(images[0])}
    with serving(app) as client:
        assert [_post(client, body).status_code for _ in range(4)] == [200, 200, 403, 403]
        stamp = keys_file.stat().st_mtime_ns + 2_000_000_000
        os.utime(keys_file, ns=(stamp, stamp))
        assert _post(client, body).status_code == 200


def test_no_keys_refuses_to_start_unless_no_auth(digits_model, images) -> None:
    with pytest.raises(ConfigError, match="--no-auth"):
        create_app(digits_model, keys=None)
    with serving(create_app(digits_model, keys=None, no_auth=True)) as client:
        assert _post(client, {"image": png(images[0])}, key=None).status_code == 200


def test_bad_settings_are_config_errors(digits_model, keys_file) -> None:
    for bad in (
        {"output": "top3"},
        {"on_detect": "ban"},
        {"quota": 0},
        {"class_names": ["a"]},
        {"request_timeout": 0},
        {"max_key_failures": 0},
    ):
        with pytest.raises(ConfigError):
            create_app(digits_model, keys=_keys(keys_file), **bad)
    keys_file.write_text("[keys]\nalice = 3\n")
    with pytest.raises(ConfigError, match="alice"):
        KeyStore(keys_file)


def test_blacklight_rejects_a_near_duplicate_query(digits_model, keys_file, images) -> None:
    blacklight = pytest.importorskip("pixelguard.serve.blacklight")
    app = create_app(
        digits_model,
        keys=_keys(keys_file),
        detector=blacklight.BlacklightDetector(neighbours=1),
        on_detect="reject",
    )
    with serving(app) as client:
        first = _post(client, {"image": png(images[0])})
        resent = _post(client, {"image": png(images[0])}, key=BOB)
        near = images[0].copy()
        near[3, 4] = 255 - near[3, 4]
        again = _post(client, {"image": png(near)})
        other_image = _post(client, {"image": png(images[5])}, key=BOB)
    assert first.status_code == resent.status_code == other_image.status_code == 200
    assert again.status_code == 403 and "similar to earlier queries" in again.json()["error"]
