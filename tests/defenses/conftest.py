"""Fixtures shared by the defense tests: few-pixel adversarial digits and a fitted detector."""

from __future__ import annotations

import pytest
import torch

from pixelguard.attacks import SparseRS
from pixelguard.defenses.detect import IsolatedPixelDetector


@pytest.fixture(scope="session")
def rs_adversarials(
    correct_digits, digits_model
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sparse-RS 3-pixel adversarials of 60 held-out digits: (clean, labels, adversarial), successes only."""
    x, y = correct_digits[0][:60], correct_digits[1][:60]
    result = SparseRS(pixels=3, steps=300, seed=0).run(digits_model, x, y)
    ok = result.success
    assert int(ok.sum()) >= 40, f"sparse-rs fooled only {int(ok.sum())} of 60 digits"
    return x[ok], y[ok], result.x_adv[ok]


@pytest.fixture(scope="session")
def detector(digits) -> IsolatedPixelDetector:
    """An isolated-pixel detector (top 2, 5% FPR) calibrated on 900 shuffled clean digits."""
    shuffled = digits[0][torch.randperm(1797, generator=torch.Generator().manual_seed(0))]
    return IsolatedPixelDetector(top=2, fpr=0.05).fit(shuffled[:900])
