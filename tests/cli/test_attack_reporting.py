"""What an attack reports: wire statistics of an HTTP endpoint, the attack that ran,
warnings, skipped targets, in results.json and in the printed summary.

The endpoint is a real HTTP server on 127.0.0.1 scoring with the session's digits CNN;
it answers chosen requests (by arrival number) with 429 or 503 and counts what it got,
so the statistics pixelguard reports are checked against the server's own count.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelguard.attacks.sparse_rs import SparseRS
from pixelguard.cli.output import wire_text
from pixelguard.data import Dataset
from pixelguard.evaluate import attack_dataset
from pixelguard.evaluate.attack_run import WireStats
from pixelguard.evaluate.checkpoint import Checkpoint
from pixelguard.models.base import Classifier, ClassifierWrapper
from pixelguard.models.http import EndpointConfig, HttpClassifier
from pixelguard.report import write_run_reports

FAULTS = {2: 429, 3: 503, 5: 429, 8: 429}
"""Arrival number of a request -> the error status the endpoint answers it with."""
ENDPOINT = {
    "input_shape": [1, 8, 8],
    "batch": True,
    "max_batch": 64,
    "request_field": "instances",
    "response_path": "predictions",
    "output": "logits",
    "num_classes": 10,
    "max_retries": 4,
    "backoff_s": 0.0,
    "timeout_s": 10.0,
}


@dataclass
class Endpoint:
    """A digits scoring endpoint: what it received and how it answered."""

    model: Classifier
    faults: dict[int, int]
    url: str = ""
    requests: int = 0
    images: int = 0
    answered: Counter[int] = field(default_factory=Counter)
    images_answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        x = torch.tensor(body["instances"], dtype=torch.float32)
        with self.lock:
            self.requests += 1
            self.images += len(x)
            status = self.faults.get(self.requests, 200)
            self.answered[status] += 1
            if status == 200:
                self.images_answered += len(x)
        if status == 200:
            reply = json.dumps({"predictions": self.model.predict(x).tolist()}).encode()
        else:
            reply = b'{"error": "try again"}'
        handler.send_response(status)
        if status != 200:
            handler.send_header("Retry-After", "0")
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def config(self, **fields: Any) -> EndpointConfig:
        return EndpointConfig(url=self.url, **{**ENDPOINT, **fields})


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.server.endpoint.handle(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        return


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch, digits_model) -> Iterator[Endpoint]:
    """The endpoint, serving on a free port until the test ends."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    state = Endpoint(digits_model, dict(FAULTS))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.endpoint = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/score"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


class RowCounter(ClassifierWrapper):
    """Counts the images asked of the wrapped model (a stand-in for a defense)."""

    rows = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model.predict(x)


def _check_against_server(wire: dict[str, Any], server: Endpoint, rows: int | None) -> None:
    """The wire statistics equal what the server received and answered."""
    failed = server.requests - server.answered[200]
    assert failed == len(FAULTS), "every planned fault was served"
    assert wire["requests_sent"] == server.requests
    assert wire["images_sent"] == server.images
    assert wire["retries"] == wire["requests_failed"] == failed
    assert wire["rate_limited"] == server.answered[429] == 3
    assert wire.get("unavailable", 1) == server.answered[503] == 1  # once the adapter counts 503s
    assert wire["requests_charged"] == server.answered[200]
    assert wire["images_charged"] == server.images_answered
    if rows is not None:
        assert wire["cache_hits"] == rows - server.images_answered > 0


@pytest.fixture(scope="module")
def held_out(digits: tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    x, y = digits
    return Dataset(x[1400:], y[1400:], [str(d) for d in range(10)], "held-out digits")


ATTACK = SparseRS(pixels=3, budget=40, seed=0)


def test_results_json_has_the_wire_statistics_the_server_counted(
    tmp_path: Path, endpoint: Endpoint, held_out: Dataset
) -> None:
    counted = RowCounter(HttpClassifier(endpoint.config(), max_requests=10_000))
    run = attack_dataset(counted, held_out, ATTACK, limit=12, chunk_size=5)
    reports = write_run_reports(tmp_path, run, held_out.x)
    wire = json.loads(reports.results.read_text())["wire"]
    _check_against_server(wire, endpoint, counted.rows)
    assert wire["max_requests"] == 10_000 and wire["max_images"] is None
    assert run.summary()["wire"] == wire


def test_a_resumed_run_reports_the_wire_statistics_of_the_whole_run(
    tmp_path: Path, endpoint: Endpoint, held_out: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_chunk = Checkpoint.save_chunk

    def save_then_stop(self: Checkpoint, index: int, arrays: dict[str, np.ndarray]) -> None:
        save_chunk(self, index, arrays)
        raise KeyboardInterrupt  # killed right after the first chunk was saved

    options = {"limit": 12, "chunk_size": 5, "checkpoint_dir": tmp_path}
    monkeypatch.setattr(Checkpoint, "save_chunk", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        attack_dataset(HttpClassifier(endpoint.config()), held_out, ATTACK, **options)
    monkeypatch.setattr(Checkpoint, "save_chunk", save_chunk)
    first_session = endpoint.requests
    resumed = attack_dataset(
        HttpClassifier(endpoint.config()), held_out, ATTACK, resume=True, **options
    )
    assert resumed.wire is not None and 0 < first_session < endpoint.requests
    _check_against_server(resumed.wire.to_dict(), endpoint, rows=None)


def test_a_local_model_has_no_wire_statistics(digits_model, held_out: Dataset) -> None:
    run = attack_dataset(digits_model, held_out, ATTACK, limit=2)
    assert run.wire is None and run.summary()["wire"] is None


def test_the_wire_line_names_requests_retries_cache_hits_and_charges() -> None:
    counts = {
        "requests_sent": 412,
        "retries": 3,
        "rate_limited": 2,
        "cache_hits": 35,
        "requests_charged": 377,
        "images_charged": 3_770,
    }
    assert wire_text(WireStats(counts, max_requests=1_000)) == (
        "412 requests (3 retries, 2 answered 429), 35 cache hits, 377 charged of 1,000"
    )
    assert wire_text(WireStats({**counts, "unavailable": 1}, max_images=5_000)) == (
        "412 requests (3 retries, 2 answered 429, 1 answered 503), 35 cache hits, "
        "377 charged, 3,770 images charged of 5,000"
    )


# --- the command line --------------------------------------------------------------------


def test_attack_through_an_endpoint_prints_and_writes_the_wire_statistics(
    cli, tmp_path: Path, endpoint: Endpoint
) -> None:
    config = tmp_path / "endpoint.json"
    config.write_text(json.dumps(ENDPOINT))
    result = cli(
        "attack", "--model", endpoint.url, "--http-config", config, "--data", "digits",
        "--attack", "sparse-rs", "--pixels", "3", "--budget", "40", "--limit", "20",
        "--quiet", "--out", tmp_path / "run",
    )  # fmt: skip
    wire = json.loads((tmp_path / "run" / "results.json").read_text())["wire"]
    _check_against_server(wire, endpoint, rows=None)
    answers = f"{len(FAULTS)} retries, 3 answered 429" + (
        ", 1 answered 503" if "unavailable" in wire else ""
    )
    assert (
        f"  wire            {endpoint.requests:,} requests ({answers}), "
        f"{wire['cache_hits']:,} cache hits, {endpoint.answered[200]:,} charged\n"
    ) in result.stdout
    assert "retry" in result.stderr, "each retry is logged as it happens"


def test_attack_prints_the_attack_budget_and_seed_that_ran(
    cli, tmp_path: Path, model_factory: str
) -> None:
    result = cli(
        "attack", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--attack", "sparse-rs", "--pixels", "3", "--budget", "40", "--seed", "5",
        "--limit", "8", "--quiet", "--out", tmp_path,
    )  # fmt: skip
    assert "  attack          sparse-rs (pixels=3, budget 40 queries/image, seed 5)" in (
        result.stdout
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["attack"]["budget"] == 40 and data["attack"]["seed"] == 5
    assert SparseRS(**data["attack"]["params"]) == SparseRS(pixels=3, budget=40, seed=5)
    assert "wire" not in result.stdout and data["wire"] is None


@pytest.mark.parametrize(("scale", "warned"), [("0.01", True), ("1", False)])
def test_attack_warns_about_a_model_fed_the_wrong_scale(
    cli, tmp_path: Path, model_factory: str, scale: str, warned: bool
) -> None:
    result = cli(
        "attack", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--scale", scale, "--limit", "40", "--quiet", "--out", tmp_path,
    )  # fmt: skip
    data = json.loads((tmp_path / "results.json").read_text())
    assert (data["clean_accuracy"] < 0.2) == warned and len(data["warnings"]) == warned
    assert ("near chance" in result.stdout) == ("near chance" in result.stderr) == warned
    if warned:
        assert result.stdout.splitlines()[1] == f"warning: {data['warnings'][0]}"


def test_attack_says_why_nothing_was_attacked(
    cli, tmp_path: Path, model_factory: str, digits
) -> None:
    x, y = digits
    fives = y[1400:] == 5
    np.savez(tmp_path / "fives.npz", x=x[1400:][fives].numpy(), y=y[1400:][fives].numpy())
    result = cli(
        "attack", "--model", model_factory, "--input-shape", "1,8,8",
        "--data", tmp_path / "fives.npz", "--target", "5", "--quiet", "--out", tmp_path / "run",
    )  # fmt: skip
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["n_attacked"] == 0 and data["n_already_target"] == data["n_correct"] > 0
    assert (
        f"attacked        0 images: {data['n_correct']} correctly classified, "
        "all already of the target class 5"
    ) in result.stdout
    assert "success rate" not in result.stdout and "0 of 0" not in result.stdout
