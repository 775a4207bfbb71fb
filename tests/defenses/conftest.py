"""Fixtures shared by the defense tests: a batch of few-pixel adversarial digits."""

from __future__ import annotations

import pytest
import torch

from pixelguard.attacks import SparseRS


@pytest.fixture(scope="session")
def rs_adversarials(correct_digits, digits_model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse-RS 3-pixel adversarials of 60 held-out digits: (clean, labels, adversarial), successes only."""
    x, y = correct_digits[0][:60], correct_digits[1][:60]
    result = SparseRS(pixels=3, steps=300, seed=0).run(digits_model, x, y)
    ok = result.success
    assert int(ok.sum()) >= 40, f"sparse-rs fooled only {int(ok.sum())} of 60 digits"
    return x[ok], y[ok], result.x_adv[ok]
