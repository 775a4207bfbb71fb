"""train_classifier: accuracy on digits, seeding, and the caller's random state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from pixelguard.errors import ConfigError
from pixelguard.models import train_classifier

TRAIN = torch.randperm(1797, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These tiny networks train fastest on one thread; OpenMP spin-waits on a busy CI box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_small_cnn_reaches_95_percent_on_held_out_digits(digits) -> None:
    x, y = digits
    train, test = TRAIN[:1437], TRAIN[1437:]
    calls: list[tuple[int, int, float]] = []
    model, metrics = train_classifier(
        x[train],
        y[train],
        epochs=12,
        lr=2e-3,
        batch_size=64,
        seed=0,
        progress=lambda *args: calls.append(args),
    )
    assert not model.training
    with torch.no_grad():
        accuracy = float((model(x[test]).argmax(1) == y[test]).float().mean())
    assert accuracy >= 0.95
    assert metrics["train_accuracy"] >= 0.95
    assert metrics["val_accuracy"] is None and metrics["epochs"] == 12
    reported = {"train_accuracy", "val_accuracy", "epochs", "train_size", "seconds"}
    assert reported <= metrics.keys() and metrics["train_size"] == 1437
    assert [c[:2] for c in calls] == [(e, 12) for e in range(1, 13)]
    assert calls[-1][2] < calls[0][2]


def test_same_seed_same_weights_and_global_rng_untouched(digits) -> None:
    x, y = digits[0][:200], digits[1][:200]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, metrics = train_classifier(x, y, arch="mlp", epochs=2, seed=5, val_fraction=0.25)
    assert torch.equal(torch.get_rng_state(), state)
    b, _ = train_classifier(x, y, arch="mlp", epochs=2, seed=5, val_fraction=0.25)
    c, _ = train_classifier(x, y, arch="mlp", epochs=2, seed=6, val_fraction=0.25)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert not torch.equal(a.state_dict()["1.weight"], c.state_dict()["1.weight"])
    assert metrics["val_size"] == 50 and metrics["train_size"] == 150
    assert 0.0 <= metrics["val_accuracy"] <= 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}, {"val_fraction": 1.0}, {"arch": "nope"}],
)
def test_invalid_settings_are_config_errors(digits, kwargs) -> None:
    with pytest.raises(ConfigError):
        train_classifier(digits[0][:20], digits[1][:20], **kwargs)
