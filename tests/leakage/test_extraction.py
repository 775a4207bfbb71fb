"""Model extraction: budgets held (by the counter and by a local server), agreement, resume."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pixelguard.errors import ConfigError, QueryBudgetExceeded, ShapeError
from pixelguard.leakage.extraction import (
    JacobianAugmentation,
    KnockoffNets,
    budget_schedule,
    create_extraction,
    make_holdout,
)
from pixelguard.models.base import Capabilities, ClassifierWrapper, OutputKind
from pixelguard.models.http import EndpointConfig, HttpClassifier
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.zoo import load_checkpoint


class RowCounter(ClassifierWrapper):
    """Counts every row the victim is asked about, independently of pixelguard's counter;
    optionally interrupts (like a killed process) once ``stop_after`` rows were answered."""

    def __init__(self, model: Any, stop_after: int | None = None) -> None:
        super().__init__(model)
        self.rows = 0
        self.stop_after = stop_after

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.stop_after is not None and self.rows + x.shape[0] > self.stop_after:
            raise KeyboardInterrupt
        self.rows += x.shape[0]
        return self.model.predict(x)


class LabelsOnly(ClassifierWrapper):
    """The victim answering with one-hot labels only."""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(output=OutputKind.LABELS, gradients=False)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        pred = self.model.predict(x).argmax(dim=1)
        return torch.nn.functional.one_hot(pred, self.model.num_classes).float()


@pytest.fixture(scope="module")
def split(digits):
    """Pool: the victim's first 1,400 training digits; held out: the last 397 digits."""
    x, y = digits
    return x[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def holdout(digits_model, split):
    return make_holdout(digits_model, split[1], split[2])


def test_schedule_ends_at_budget() -> None:
    assert budget_schedule(1600, None) == [100, 200, 400, 800, 1600]
    assert budget_schedule(1000, (100, 5000, 300)) == [100, 300, 1000]
    assert budget_schedule(1, None) == [1]


@pytest.mark.parametrize("budget", [1, 250, 1000])
def test_knockoff_spends_exactly_its_budget(digits_model, split, budget: int) -> None:
    victim = RowCounter(digits_model)
    result = KnockoffNets(budget=budget, epochs=1, query_batch=64).run(victim, split[0])
    assert victim.rows == budget
    assert result.queries == budget == result.x_queried.shape[0] == result.answers.shape[0]
    assert result.replayed == 0
    # the answers are the victim's probabilities on the very images queried
    expected = torch.softmax(digits_model.predict(result.x_queried), dim=1)
    torch.testing.assert_close(result.answers, expected)


def test_knockoff_pool_smaller_than_budget_spends_the_pool(digits_model, split) -> None:
    victim = RowCounter(digits_model)
    result = KnockoffNets(budget=500, epochs=1).run(victim, split[0][:120])
    assert victim.rows == result.queries == 120


@pytest.mark.parametrize("budget", [37, 333])
def test_jacobian_spends_exactly_its_budget(digits_model, split, budget: int) -> None:
    victim = RowCounter(digits_model)
    result = JacobianAugmentation(budget=budget, seed_size=20, epochs=1).run(victim, split[0])
    assert victim.rows == result.queries == budget
    # every augmented image lies lam from an earlier one in Linf, and in [0, 1]
    grown = result.x_queried[20:]
    assert grown.min() >= 0 and grown.max() <= 1
    assert [p.queries for p in result.curve] == sorted(p.queries for p in result.curve)
    assert result.curve[-1].queries == budget


def test_agreement_grows_with_the_budget(digits_model, split, holdout) -> None:
    agreements = []
    for budget in (30, 1000):
        result = KnockoffNets(budget=budget, epochs=20, rounds=()).run(
            digits_model, split[0], holdout=holdout
        )
        agreements.append(result.curve[-1].agreement)
    assert agreements[0] < 0.7 < 0.9 < agreements[1]
    assert holdout.queries == holdout.x.shape[0]


def test_curve_rises_over_the_rounds(digits_model, split, holdout) -> None:
    result = KnockoffNets(budget=1000, epochs=15, rounds=(50, 200)).run(
        digits_model, split[0], holdout=holdout
    )
    points = [(p.queries, p.agreement) for p in result.curve]
    assert [q for q, _ in points] == [50, 200, 1000]
    assert points[0][1] < points[1][1] < points[2][1]
    assert result.curve[-1].accuracy is not None and result.curve[-1].accuracy > 0.85


def test_labels_only_victim_trains_on_one_hot_answers(digits_model, split, holdout) -> None:
    victim = RowCounter(LabelsOnly(digits_model))
    result = KnockoffNets(budget=800, epochs=20, rounds=()).run(victim, split[0], holdout=holdout)
    assert victim.rows == 800
    assert result.output is OutputKind.LABELS and not result.to_dict()["soft_labels"]
    assert set(result.answers.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(result.answers.sum(dim=1), torch.ones(800))
    assert result.curve[-1].agreement > 0.85


def test_uncertain_sampling_spends_its_budget_on_distinct_images(digits_model, split) -> None:
    victim = RowCounter(digits_model)
    result = KnockoffNets(budget=600, epochs=2, rounds=(100,), sampling="uncertain").run(
        victim, split[0]
    )
    assert victim.rows == 600
    assert torch.unique(result.x_queried.flatten(1), dim=0).shape[0] == 600


def test_killed_run_resumes_without_asking_twice(digits_model, split, tmp_path: Path) -> None:
    config = KnockoffNets(
        budget=600, epochs=3, rounds=(100, 300), query_batch=50, checkpoint_every=50
    )
    checkpoint = tmp_path / "answers.npz"
    killed = RowCounter(digits_model, stop_after=420)
    with pytest.raises(KeyboardInterrupt):
        config.run(killed, split[0], checkpoint=checkpoint)
    assert killed.rows == 400
    with np.load(checkpoint) as saved:
        assert saved["x"].shape[0] == 400
    resumed_victim = RowCounter(digits_model)
    resumed = config.run(resumed_victim, split[0], checkpoint=checkpoint)
    assert resumed_victim.rows == 200  # only the queries never answered
    assert resumed.replayed == 400 and resumed.queries == 600
    assert killed.rows + resumed_victim.rows == config.budget
    fresh = config.run(digits_model, split[0])
    assert torch.equal(fresh.x_queried, resumed.x_queried)
    torch.testing.assert_close(fresh.answers, resumed.answers)
    assert [p.queries for p in resumed.curve] == [100, 300, 600]


def test_jacobian_resume_replays_the_augmented_images(digits_model, split, tmp_path: Path) -> None:
    config = JacobianAugmentation(
        budget=200, seed_size=25, epochs=2, query_batch=25, checkpoint_every=25
    )
    checkpoint = tmp_path / "answers.npz"
    killed = RowCounter(digits_model, stop_after=110)
    with pytest.raises(KeyboardInterrupt):
        config.run(killed, split[0], checkpoint=checkpoint)
    resumed_victim = RowCounter(digits_model)
    resumed = config.run(resumed_victim, split[0], checkpoint=checkpoint)
    assert killed.rows + resumed_victim.rows == 200 == resumed.queries
    assert resumed.replayed == killed.rows


def test_checkpoint_of_other_settings_is_refused(digits_model, split, tmp_path: Path) -> None:
    checkpoint = tmp_path / "answers.npz"
    KnockoffNets(budget=50, epochs=1).run(digits_model, split[0], checkpoint=checkpoint)
    victim = RowCounter(digits_model)
    with pytest.raises(ConfigError, match="another extraction"):
        KnockoffNets(budget=60, epochs=1).run(victim, split[0], checkpoint=checkpoint)
    assert victim.rows == 0


def test_bad_input_fails_before_any_query(digits_model, split) -> None:
    victim = RowCounter(digits_model)
    with pytest.raises(ConfigError, match="budget must be at least 1"):
        KnockoffNets(budget=0)
    with pytest.raises(ShapeError, match="query images have shape"):
        KnockoffNets(budget=10).run(victim, torch.rand(5, 1, 10, 10))
    with pytest.raises(ConfigError, match="resnet"):
        KnockoffNets(budget=10, arch="resnet").run(victim, split[0])
    with pytest.raises(ConfigError, match="sampling"):
        KnockoffNets(sampling="greedy")
    with pytest.raises(ConfigError, match="no setting"):
        create_extraction("knockoff", lam=0.1)
    assert victim.rows == 0


def test_query_counter_is_the_hard_limit(digits_model, split) -> None:
    """The single-slot counter refuses rows past the budget (the extraction never asks)."""
    from pixelguard.leakage.extraction import _Oracle

    oracle = _Oracle(
        digits_model,
        10,
        checkpoint=None,
        fingerprint="x",
        query_batch=8,
        checkpoint_every=100,
        progress=None,
    )
    oracle.ask(split[0][:8])
    with pytest.raises(QueryBudgetExceeded):
        oracle.ask(split[0][8:16])
    assert oracle.spent == 8


def test_surrogate_saves_as_a_pixelguard_checkpoint(digits_model, split, holdout, tmp_path) -> None:
    result = KnockoffNets(budget=300, epochs=5, rounds=()).run(
        digits_model, split[0], holdout=holdout
    )
    path = result.save(tmp_path / "surrogate.pt")
    module, meta = load_checkpoint(path)
    assert meta["arch"] == "small-cnn" and meta["metrics"]["queries"] == 300
    reloaded = TorchClassifier(module, (1, 8, 8))
    assert torch.equal(
        reloaded.predict(holdout.x).argmax(dim=1),
        result.classifier().predict(holdout.x).argmax(dim=1),
    )


# --- through the HTTP adapter against a local server --------------------------------------


class _Server:
    """A local endpoint serving the digits model: POST {"instances": [...]} -> predictions."""

    def __init__(self, model: TorchClassifier) -> None:
        self.model = model
        self.images = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        state: _Server = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        x = torch.tensor(body["instances"], dtype=torch.float32)
        with state.lock:
            state.images += x.shape[0]
        scores = state.model.predict(x).tolist()
        reply = json.dumps({"predictions": scores}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        return


@pytest.fixture
def server(digits_model, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Server, str]]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    state = _Server(digits_model)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield state, f"http://127.0.0.1:{httpd.server_address[1]}/batch"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_extraction_through_http_stays_within_budget_by_the_servers_count(
    server, split, digits_model
) -> None:
    state, url = server
    remote = HttpClassifier(
        EndpointConfig(
            url=url,
            input_shape=(1, 8, 8),
            batch=True,
            max_batch=64,
            output="logits",
            num_classes=10,
            cache=False,
            timeout_s=10.0,
            max_retries=1,
            backoff_s=0.01,
        )
    )
    result = KnockoffNets(budget=300, epochs=5, rounds=(100,), query_batch=128).run(
        remote, split[0]
    )
    assert state.images == result.queries == 300
    local = KnockoffNets(budget=300, epochs=5, rounds=(100,), query_batch=128).run(
        digits_model, split[0]
    )
    torch.testing.assert_close(result.answers, local.answers, atol=1e-4, rtol=1e-4)


def test_small_rounds_train_for_at_least_min_steps() -> None:
    from pixelguard.leakage.extraction import round_epochs

    assert round_epochs(1000, 128, 5, 400) == 50  # 8 steps per epoch
    assert round_epochs(20_000, 128, 5, 400) == 5  # 157 steps per epoch already
    assert round_epochs(10, 128, 3, 0) == 3


def test_temperature_softens_score_answers_only(digits_model, split) -> None:
    from pixelguard.leakage.extraction import soften

    p = torch.softmax(torch.tensor([[4.0, 1.0, 0.0]]), dim=1)
    torch.testing.assert_close(
        soften(p, 2.0), torch.softmax(torch.tensor([[2.0, 0.5, 0.0]]), dim=1)
    )
    assert soften(p, 1.0) is p
    with pytest.raises(ConfigError, match="temperature"):
        KnockoffNets(temperature=0.0)
    result = KnockoffNets(budget=100, epochs=1, temperature=3.0, min_steps=5).run(
        RowCounter(LabelsOnly(digits_model)), split[0]
    )
    assert result.queries == 100 and result.params["temperature"] == 3.0
