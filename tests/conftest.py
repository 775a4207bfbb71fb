"""Shared fixtures: tiny models trained once per session, offline, seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from pixelguard.models.base import ArrayClassifier

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


class _ModuleClassifier(ArrayClassifier):
    """A minimal adapter for tests that must not depend on the torch adapter."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, int, int]) -> None:
        super().__init__(input_shape=input_shape, batch_size=4096)
        self.module = module.eval()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as (N, 1, 8, 8) float32 in [0, 1] and labels."""
    return _digits()


@pytest.fixture(scope="session")
def digits_model(digits: tuple[torch.Tensor, torch.Tensor]) -> _ModuleClassifier:
    """A small CNN trained for a few seconds on the first 1,400 digits (~95% on the rest)."""
    x, y = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, 10),
        )
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        for _ in range(12):
            perm = torch.randperm(1400)
            for start in range(0, 1400, 64):
                batch = perm[start : start + 64]
                opt.zero_grad()
                nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
                opt.step()
    return _ModuleClassifier(net, (1, 8, 8))


@pytest.fixture(scope="session")
def correct_digits(digits, digits_model) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out digits (index >= 1400) that the test model classifies correctly."""
    x, y = digits[0][1400:], digits[1][1400:]
    keep = digits_model.predict(x).argmax(dim=1) == y
    return x[keep], y[keep]
