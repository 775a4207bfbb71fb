"""Contract checks for attacks, usable in any test suite (like scikit-learn's check_estimator).

``check_attack_result`` re-verifies an :class:`~pixelguard.attacks.base.AttackResult`
against the model with a fresh forward pass and checks the properties every attack
promises. It raises ``AssertionError`` with a message naming the first broken property.
"""

from __future__ import annotations

import torch

from pixelguard.attacks.base import (
    DISTANCE_TOLERANCE,
    Attack,
    AttackResult,
    ThreatModel,
    attacks,
    threat_model_from,
)
from pixelguard.errors import PixelguardError
from pixelguard.metrics.distances import l0_features, l0_pixels, l2, linf
from pixelguard.models.base import Classifier

_PER_IMAGE = (
    "y",
    "success",
    "queries",
    "l0_pixels",
    "l0_features",
    "l2",
    "linf",
    "pred_before",
    "pred_after",
    "conf_before",
    "conf_after",
)
"""The result's tensors with one entry per image."""


def result_threat_model(result: AttackResult) -> ThreatModel:
    """The threat model of the attack that produced ``result``.

    The registered attack of ``result.attack`` rebuilt from ``result.params`` (so an
    attack's own :attr:`~pixelguard.attacks.base.Attack.threat_model` counts); for an
    attack that is not registered, the one its parameters declare
    (:func:`~pixelguard.attacks.base.threat_model_from`).
    """
    if result.attack in attacks.names():
        try:
            attack: Attack = attacks.get(result.attack)(**result.params)
        except (PixelguardError, TypeError):
            pass
        else:
            return attack.threat_model
    return threat_model_from(result.params)


def _close(recorded: torch.Tensor, actual: torch.Tensor) -> bool:
    return bool(
        torch.allclose(recorded.double(), actual.double(), rtol=1e-5, atol=DISTANCE_TOLERANCE)
    )


def check_attack_result(
    result: AttackResult,
    model: Classifier,
    x: torch.Tensor,
    *,
    max_pixels: int | None = None,
    max_linf: float | None = None,
    budget: int | None = None,
    threat_model: ThreatModel | None = None,
) -> None:
    """Check that ``result`` keeps every promise an attack makes.

    * every per-image field has one entry per image; ``success`` is boolean;
    * ``x_adv`` is float32, in [0, 1], shaped like ``x``;
    * every claimed success is misclassified (or is the target) by a fresh forward
      pass, and is not the model's reject class; every failure comes back as the
      unchanged original; ``pred_before`` and ``pred_after`` match fresh forward passes;
    * the recorded distances (``l0_pixels``, ``l0_features``, ``l2``, ``linf``) match
      the images;
    * every success lies within the attack's threat model (``threat_model``, by
      default that of the attack named in the result, see :func:`result_threat_model`);
    * at most ``max_pixels`` pixel positions changed, Linf at most ``max_linf``;
    * no image spent more than ``budget`` queries, nor more than the result's own budget.

    Shape:
        x: (N, C, H, W) the clean images the attack ran on.
    """
    n = x.shape[0]
    for name in _PER_IMAGE:
        value = getattr(result, name)
        assert tuple(value.shape) == (n,), f"{name} has shape {tuple(value.shape)}, not ({n},)"
    if result.target is not None:
        assert tuple(result.target.shape) == (n,), "target does not have one class per image"
    assert result.success.dtype == torch.bool, f"success has dtype {result.success.dtype}"
    x_adv = result.x_adv
    assert x_adv.dtype == torch.float32, f"x_adv has dtype {x_adv.dtype}"
    assert x_adv.shape == x.shape, f"x_adv has shape {tuple(x_adv.shape)}, x {tuple(x.shape)}"
    if n:
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, "x_adv leaves [0, 1]"
    x_adv, x = x_adv.cpu(), x.cpu()
    pred = model.predict(x_adv).argmax(dim=1).cpu()
    clean_pred = model.predict(x).argmax(dim=1).cpu()
    s = result.success.cpu()
    y = result.y.cpu()
    if result.target is None:
        assert bool((pred[s] != y[s]).all()), "a claimed success is still classified correctly"
        reject_class = model.capabilities.reject_class
        if reject_class is not None:
            assert bool((pred[s] != reject_class).all()), (
                f"a claimed success is the model's reject class {reject_class}"
            )
    else:
        target = result.target.cpu()
        assert bool((pred[s] == target[s]).all()), "a claimed targeted success misses its target"
    assert torch.equal(x_adv[~s], x[~s]), "a failed image came back changed"
    assert torch.equal(pred, result.pred_after.cpu()), (
        "pred_after differs from a fresh forward pass"
    )
    assert torch.equal(clean_pred, result.pred_before.cpu()), (
        "pred_before differs from a fresh forward pass on the clean images"
    )

    pixels = l0_pixels(x, x_adv)
    assert torch.equal(pixels, result.l0_pixels.cpu()), "recorded l0_pixels do not match the images"
    assert torch.equal(l0_features(x, x_adv), result.l0_features.cpu()), (
        "recorded l0_features do not match the images"
    )
    dist_l2, dist_linf = l2(x, x_adv), linf(x, x_adv)
    assert _close(result.l2.cpu(), dist_l2), "recorded l2 does not match the images"
    assert _close(result.linf.cpu(), dist_linf), "recorded linf does not match the images"

    threat = threat_model if threat_model is not None else result_threat_model(result)
    inside = threat.admits(pixels, dist_l2, dist_linf)
    outside = s & ~inside
    if bool(outside.any()):
        first = int(outside.nonzero()[0])
        raise AssertionError(
            f"{int(outside.sum())} success(es) of {result.attack} lie outside its threat "
            f"model ({threat}); first: image {first} with {int(pixels[first])} pixels, "
            f"l2 {float(dist_l2[first]):.6g}, linf {float(dist_linf[first]):.6g}"
        )
    if max_pixels is not None and n:
        assert int(pixels.max()) <= max_pixels, (
            f"{int(pixels.max())} pixels changed, more than the budget of {max_pixels}"
        )
    if max_linf is not None and n:
        assert float(dist_linf.max()) <= max_linf + DISTANCE_TOLERANCE, "Linf budget exceeded"
    if n:
        assert int(result.queries.min()) >= 0, "an image has a negative query count"
    for limit in (budget, result.budget):
        if limit is not None and n:
            assert int(result.queries.max()) <= limit, (
                f"an image spent {int(result.queries.max())} queries, over the budget of {limit}"
            )
