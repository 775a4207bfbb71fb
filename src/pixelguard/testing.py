"""Contract checks for attacks, usable in any test suite (like scikit-learn's check_estimator).

``check_attack_result`` re-verifies an :class:`~pixelguard.attacks.base.AttackResult`
against the model with a fresh forward pass and checks the properties every attack
promises. It raises ``AssertionError`` with a message naming the first broken property.
"""

from __future__ import annotations

import torch

from pixelguard.attacks.base import AttackResult
from pixelguard.metrics.distances import l0_pixels, linf
from pixelguard.models.base import Classifier


def check_attack_result(
    result: AttackResult,
    model: Classifier,
    x: torch.Tensor,
    *,
    max_pixels: int | None = None,
    max_linf: float | None = None,
    budget: int | None = None,
) -> None:
    """Check that ``result`` keeps every promise an attack makes.

    * ``x_adv`` is float32, in [0, 1], shaped like ``x``;
    * every claimed success is misclassified (or is the target) by a fresh forward
      pass, and every failure comes back as the unchanged original;
    * at most ``max_pixels`` pixel positions changed, Linf at most ``max_linf``;
    * no image spent more than ``budget`` queries;
    * the recorded distances match the images.

    Shape:
        x: (N, C, H, W) the clean images the attack ran on.
    """
    x_adv = result.x_adv
    assert x_adv.dtype == torch.float32, f"x_adv has dtype {x_adv.dtype}"
    assert x_adv.shape == x.shape, f"x_adv has shape {tuple(x_adv.shape)}, x {tuple(x.shape)}"
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, "x_adv leaves [0, 1]"
    pred = model.predict(x_adv).argmax(dim=1)
    s = result.success
    if result.target is None:
        assert bool((pred[s] != result.y[s]).all()), (
            "a claimed success is still classified correctly"
        )
    else:
        assert bool((pred[s] == result.target[s]).all()), (
            "a claimed targeted success misses its target"
        )
    assert torch.equal(x_adv[~s], x[~s]), "a failed image came back changed"
    assert torch.equal(pred, result.pred_after), "pred_after differs from a fresh forward pass"
    pixels = l0_pixels(x, x_adv)
    assert torch.equal(pixels, result.l0_pixels), "recorded l0_pixels do not match the images"
    if max_pixels is not None and x.shape[0]:
        assert int(pixels.max()) <= max_pixels, (
            f"{int(pixels.max())} pixels changed, more than the budget of {max_pixels}"
        )
    if max_linf is not None and x.shape[0]:
        assert float(linf(x, x_adv).max()) <= max_linf + 1e-6, "Linf budget exceeded"
    if budget is not None and x.shape[0]:
        assert int(result.queries.max()) <= budget, (
            f"an image spent {int(result.queries.max())} queries, over the budget of {budget}"
        )
