"""Fixtures for the evaluation tests: the held-out digits as a Dataset, a tiny attack."""

from __future__ import annotations

import pytest
import torch

from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.data import Dataset


@pytest.fixture(scope="session")
def held_out(digits: tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    """The 397 digits the session model did not train on."""
    x, y = digits
    return Dataset(x[1400:], y[1400:], [str(d) for d in range(10)], "held-out digits")


@pytest.fixture()
def tiny_attack() -> PixelDE:
    """A pixel-de small enough to run in well under a second per chunk."""
    return PixelDE(pixels=3, population=20, generations=3, seed=0)
