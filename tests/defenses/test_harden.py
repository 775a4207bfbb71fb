"""Adversarial training: threat models, robustness gained, determinism and resume."""

from __future__ import annotations

import pytest
import torch

from pixelguard.attacks import SparseRS
from pixelguard.attacks.base import ThreatModel, parse_threat
from pixelguard.data.base import Dataset
from pixelguard.defenses.harden import harden, training_attack
from pixelguard.errors import ConfigError
from pixelguard.models.torch import TorchClassifier


@pytest.fixture(scope="module")
def train_set(digits) -> Dataset:
    return Dataset(digits[0][:1400], digits[1][:1400], None, "digits")


@pytest.fixture(scope="module")
def small_set(digits) -> Dataset:
    return Dataset(digits[0][:128], digits[1][:128], None, "digits")


def _weights(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_parse_threat_accepts_the_three_forms():
    assert parse_threat("pixels:3") == ThreatModel("l0", 3.0)
    assert parse_threat("pixels:3").spec == "pixels:3"
    assert parse_threat(" LINF:0.1 ") == ThreatModel("linf", 0.1)
    assert parse_threat("l2:1.5").spec == "l2:1.5"
    assert training_attack(parse_threat("pixels:3"), 5).name == "sparse-pgd"
    assert training_attack(parse_threat("l2:1.5"), 5).to_dict()["norm"] == "l2"


@pytest.mark.parametrize(
    "spec", ["pixels", "pixels:0", "pixels:2.5", "linf:2", "l0:3", "l2:-1", "linf:x"]
)
def test_parse_threat_rejects_bad_specs(spec):
    with pytest.raises(ConfigError):
        parse_threat(spec)


def test_hardening_lowers_attack_success_on_training_images(digits_model, train_set):
    before = digits_model.module
    weights = _weights(before)
    hardened = harden(
        before, train_set, "pixels:2", epochs=2, batch_size=64, adversarial_fraction=1.0, seed=0
    )
    assert all(torch.equal(a, b) for a, b in zip(weights, _weights(before))), "input was modified"
    assert [r["epoch"] for r in hardened.history] == [1, 2]
    assert hardened.params["against"] == "pixels:2" and not hardened.module.training
    x, y = train_set.x[:200], train_set.y[:200]
    attack = SparseRS(pixels=2, steps=100, seed=0)
    rate_before = attack.run(digits_model, x, y).success_rate
    after = TorchClassifier(hardened.module, (1, 8, 8))
    rate_after = attack.run(after, x, y).success_rate
    assert rate_after < rate_before - 0.05, (rate_before, rate_after)
    assert float((after.predict(x).argmax(dim=1) == y).float().mean()) >= 0.9


def test_resumed_training_ends_where_an_uninterrupted_run_does(digits_model, small_set, tmp_path):
    settings = {"against": "linf:0.1", "batch_size": 32, "attack_steps": 2, "seed": 3}
    straight = harden(digits_model.module, small_set, epochs=2, **settings)
    state = tmp_path / "harden-state.pt"
    harden(digits_model.module, small_set, epochs=1, checkpoint_path=state, **settings)
    saved = torch.load(state, weights_only=True)
    assert saved["format"] == "pixelguard-harden-state" and len(saved["history"]) == 1
    resumed = harden(
        digits_model.module, small_set, epochs=2, checkpoint_path=state, resume=True, **settings
    )
    assert all(
        torch.equal(a, b) for a, b in zip(_weights(straight.module), _weights(resumed.module))
    )
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    with pytest.raises(ConfigError, match="other settings"):
        harden(
            digits_model.module, small_set, epochs=2, checkpoint_path=state, resume=True,
            **{**settings, "seed": 4},
        )  # fmt: skip


def test_trades_loss_trains_and_records_both_accuracies(digits_model, small_set):
    hardened = harden(
        digits_model.module, small_set, "pixels:1", epochs=1, batch_size=32,
        trades_beta=3.0, attack_steps=2,
    )  # fmt: skip
    record = hardened.history[0]
    assert 0.0 <= record["clean_accuracy"] <= 1.0 and 0.0 <= record["adversarial_accuracy"] <= 1.0
    assert record["loss"] > 0 and hardened.params["trades_beta"] == 3.0


@pytest.mark.parametrize(
    "settings",
    [
        {"epochs": 0},
        {"lr": 0.0},
        {"adversarial_fraction": 0.0},
        {"trades_beta": -1.0},
        {"resume": True},
    ],
)
def test_bad_settings_are_config_errors(digits_model, small_set, settings):
    with pytest.raises(ConfigError):
        harden(digits_model.module, small_set, "pixels:1", **settings)
