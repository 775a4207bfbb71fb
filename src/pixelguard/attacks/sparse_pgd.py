"""Sparse projected gradient descent: a white-box attack under a pixel budget.

Gradient steps on a perturbation ``delta``, each followed by the projection onto
"at most ``k`` pixels changed, values in [0, 1]". The projection is exact in the
Euclidean sense: every pixel's best feasible change is ``delta`` clipped to the box,
and the ``k`` pixels whose clipped change removes the most squared distance to
``delta`` are kept (Croce and Hein's PGD0 projection, per pixel across channels).

What makes it strong: steps follow the gradient scaled by its mean magnitude
(PGD0's L1 normalisation), not its sign, so the pixels the loss is most sensitive
to grow fastest and win the projection; the step is large, so a pixel outside the
kept set can replace a kept one in a single step; and many short runs from random
``k``-pixel starts beat one long run, which tends to lock onto its first support.
On a small CNN for the 8x8 digits it fools about as many images as sparse-rs at
k = 1, 2, 3, with a twentieth of sparse-rs's queries at k = 2 and 3.

References:
    Croce, Hein. "Sparse and imperceivable adversarial attacks." ICCV 2019.
    arXiv:1909.05040 (PGD0).
    Zhong, Liu, Chen, Zhao, Zhang. "Towards efficient training and evaluation of
    robust models against l0 bounded adversarial perturbations." ICML 2024.
    arXiv:2405.05075 (sparse-PGD).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixelguard.attacks._gradient import GradientAttack, Schedule
from pixelguard.attacks.base import register_attack
from pixelguard.config import at_least, positive


def project_pixels(delta: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    """Nearest perturbation of ``x`` that changes at most ``k`` pixels and stays in [0, 1].

    Per pixel, the best feasible change is ``z = clip(x + delta, 0, 1) - x``; keeping
    it instead of zero lowers the squared distance to ``delta`` by
    ``sum_c z * (2 * delta - z)``, and the ``k`` pixels with the largest such gain are kept.

    Shape:
        delta, x: (M, C, H, W) -> (M, C, H, W), at most ``k`` pixels non-zero.
    """
    m, c, h, w = x.shape
    z = (x + delta).clamp(0.0, 1.0) - x
    if k >= h * w:
        return z
    gain = (z * (2 * delta - z)).sum(dim=1).view(m, h * w)
    keep = torch.zeros_like(gain, dtype=torch.bool).scatter(1, gain.topk(k, dim=1).indices, True)
    return z * keep.view(m, 1, h, w)


@register_attack("sparse-pgd")
@dataclass(frozen=True, kw_only=True)
class SparsePGD(GradientAttack):
    """Gradient steps projected onto at most ``pixels`` changed pixels.

    Args:
        pixels: how many pixel positions may change (k).
        steps: gradient steps per run.
        step_size: size of each step along the gradient divided by its mean absolute
            value; large steps let a pixel outside the kept set reach any value in
            one step and replace a kept pixel.
        restarts: runs per image, each from ``pixels`` random pixels set to random
            values; each restart works only on images not yet fooled.
        loss: ``"ce"`` (cross-entropy) or ``"margin"`` (logit margin); the step's
            normalisation keeps a saturated cross-entropy's tiny gradient usable.
        seed: seed of the attack's random generator.
        budget: hard limit on queries per image, the clean query included; a run
            spends at most ``steps + 1``.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Example:
        >>> SparsePGD(pixels=5, steps=50).pixels
        5
    """

    pixels: int = 10
    steps: int = 20
    step_size: float = 10.0
    restarts: int = 25

    _constraints = {
        "pixels": at_least(1),
        "steps": at_least(1),
        "step_size": positive(),
        "restarts": at_least(1),
    }

    def _schedule(self) -> Schedule:
        return Schedule(self.steps, self.step_size, self.restarts, random_start=True)

    def _normalize_grad(self, grad: torch.Tensor) -> torch.Tensor:
        scale = grad.abs().flatten(1).mean(dim=1).clamp_min(1e-12)
        return grad / scale.view(-1, 1, 1, 1)

    def _project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return project_pixels(delta, x, self.pixels)

    def _random_start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        m, c, h, w = x.shape
        k = min(self.pixels, h * w)
        positions = torch.rand((m, h * w), generator=generator).topk(k, dim=1).indices
        values = torch.rand((m, c, k), generator=generator)
        target = x.reshape(m, c, h * w).clone()
        target.scatter_(
            2, positions.to(x.device).view(m, 1, k).expand(m, c, k), values.to(x.device)
        )
        return target.view_as(x) - x
