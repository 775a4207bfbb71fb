"""Shared fixtures: tiny models trained once per session, offline, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits

from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# The test models are tiny: one thread is as fast as two, and immune to a busy machine.
torch.set_num_threads(1)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as (N, 1, 8, 8) float32 in [0, 1] and labels."""
    return _digits()


@pytest.fixture(scope="session")
def digits_model(digits: tuple[torch.Tensor, torch.Tensor]) -> TorchClassifier:
    """A small CNN trained for a few seconds on the first 1,400 digits (over 90% on the rest)."""
    x, y = digits
    module, _ = train_classifier(x[:1400], y[:1400], arch="small-cnn", epochs=12, lr=2e-3, batch_size=64)
    return TorchClassifier(module, (1, 8, 8), batch_size=4096)


@pytest.fixture(scope="session")
def correct_digits(digits, digits_model) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out digits (index >= 1400) that the test model classifies correctly."""
    x, y = digits[0][1400:], digits[1][1400:]
    keep = digits_model.predict(x).argmax(dim=1) == y
    return x[keep], y[keep]
