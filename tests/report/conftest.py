"""A small finished attack run on the held-out digits, shared by the report tests."""

from __future__ import annotations

import pytest
import torch

from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.data import Dataset
from pixelguard.evaluate import AttackRun, attack_dataset


@pytest.fixture(scope="session")
def held_out_digits(digits: tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    x, y = digits
    return Dataset(x[1400:], y[1400:], [str(d) for d in range(10)], "held-out digits")


@pytest.fixture(scope="session")
def run(digits_model, held_out_digits: Dataset) -> AttackRun:
    """Ten attacked digits, some fooled and some not."""
    attack = PixelDE(pixels=3, population=20, generations=3, seed=0)
    result = attack_dataset(digits_model, held_out_digits, attack, limit=10)
    assert 0 < result.n_success < 10, "the report tests need successes and failures"
    return result
