"""The exact one-pixel search over colour-cube corners.

The best value for a changed pixel sits at a corner of the colour cube (each channel
0 or 1), so for one pixel the whole search space that matters is every position at
every corner: ``2**C * H * W`` candidates (128 for 8x8 grey, 8,192 for 32x32 RGB),
fewer where a pixel already sits on a corner. This attack tries them all, batched
across images, in a random order and in slices, stopping each image at the first
slice that fools the model. Where it fails, no single corner pixel fools the model.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass

import torch

from pixelguard.attacks._population import (
    corner_table,
    margin_loss,
    pixel_corner_index,
    record_winners,
    score_candidates,
)
from pixelguard.attacks.base import Attack, AttackState, ThreatModel, register_attack
from pixelguard.config import at_least, between
from pixelguard.models.base import OutputKind


def corner_search_cost(shape: tuple[int, int, int]) -> int:
    """Most queries the exhaustive scan spends on one image of shape (C, H, W)."""
    c, h, w = shape
    return 2**c * h * w


def scan_single_corner_pixels(
    state: AttackState, active: torch.Tensor, checks: int
) -> torch.Tensor:
    """Try every (position, corner) on the ``active`` images; write winners into ``x_adv``.

    Shape:
        active: (A,) image indices -> (N,) bool, the images fooled.
    """
    x = state.x
    n, c, h, w = x.shape
    n_corners = 2**c
    corners = corner_table(c, x.device)
    loss_fn = margin_loss(OutputKind(state.model.capabilities.output), state.reject_class)
    fooled_images = torch.zeros(n, dtype=torch.bool, device=x.device)
    if active.numel() == 0:
        return fooled_images
    a, total = active.numel(), h * w * n_corners
    current = pixel_corner_index(x[active])
    useful = torch.arange(n_corners, device=x.device).view(1, 1, -1) != current.unsqueeze(-1)
    useful = useful.reshape(a, total)
    keys = torch.rand((a, total), generator=state.generator).to(x.device)
    order = keys.masked_fill(~useful, 2.0).argsort(dim=1)
    n_useful = useful.sum(dim=1)
    step = math.ceil(total / checks)
    done = torch.zeros(a, dtype=torch.bool, device=x.device)
    for lo in range(0, total, step):
        count = (n_useful - lo).clamp(0, step)
        affordable = state.remaining(active) >= count
        take = (~done & affordable).unsqueeze(1) & (
            torch.arange(step, device=x.device).unsqueeze(0) < count.unsqueeze(1)
        )
        rows, cols = take.nonzero(as_tuple=True)
        if rows.numel() == 0:
            break
        candidate = order[rows, lo + cols]
        owner = active[rows]
        positions = (candidate // n_corners).view(-1, 1)
        values = corners[candidate % n_corners].view(-1, 1, c)
        loss, fooled = score_candidates(state, owner, positions, values, loss_fn)
        won = record_winners(state, owner, positions, values, loss, fooled)
        fooled_images |= won
        done |= won[active] | ~affordable
        state.report(n - a + int(done.sum()))
    return fooled_images


@register_attack("corner-search")
@dataclass(frozen=True, kw_only=True)
class CornerSearch(Attack):
    """Change one pixel: try every position at every colour-cube corner (exact over corners).

    Args:
        checks: how many slices the scan is split into; each image stops after the
            first slice that fools the model.
        seed: seed for the scan order.
        budget: hard limit on queries per image; ``2**C * H * W`` makes the scan
            complete (it spends no clean query: its candidates tell all it needs).

    References:
        Croce, Andriushchenko, Singh, Flammarion, Hein. "Sparse-RS: a versatile
        framework for query-efficient sparse black-box adversarial attacks." AAAI 2022.
        arXiv:2006.12834 (corner colours for L0 perturbations).

    Example:
        >>> CornerSearch(checks=8).checks
        8
    """

    checks: int = 16

    _constraints = {"checks": at_least(1)}

    @property
    def threat_model(self) -> ThreatModel:
        """One changed pixel, whatever the settings."""
        return ThreatModel("l0", 1)

    def _scans_without_clean_query(self, shape: tuple[int, ...]) -> bool:
        return True

    def _run(self, state: AttackState) -> None:
        scan_single_corner_pixels(state, state.unfooled, self.checks)


@dataclass(frozen=True, kw_only=True)
class CornerPixelSearch(Attack):
    """Base of the searches for ``pixels`` changed pixels on colour-cube corners
    (sparse-rs, sparse-bayes): the settings they share, and the exact scan at k = 1.

    Args:
        pixels: how many pixel positions may change (k).
        steps: most search steps (one query each) per image.
        p_init: initial fraction of the k pixels a proposal moves (Sparse-RS: 0.3).
        exact_single_pixel: for k = 1, scan every position at every corner instead
            when that costs no more than the search may spend (``budget``, or ``steps``
            without one): exact over corners, 2**C * H * W queries at most, which is
            128 on 8x8 digits, 1,568 on MNIST and 8,192 on CIFAR-10.
    """

    pixels: int = 10
    steps: int = 10_000
    p_init: float = 0.3
    exact_single_pixel: bool = True

    _constraints = {
        "pixels": at_least(1),
        "steps": at_least(1),
        "p_init": between(0, 1, low_open=True),
    }

    def _scans_without_clean_query(self, shape: tuple[int, ...]) -> bool:
        """k = 1 with a budget (or steps) that covers every corner: the exact scan runs."""
        allowed = self.budget if self.budget is not None else self.steps
        return self.pixels == 1 and self.exact_single_pixel and allowed >= corner_search_cost(shape)

    def _run(self, state: AttackState) -> None:
        if self._scans_without_clean_query(tuple(state.x.shape[1:])):
            scan_single_corner_pixels(state, state.unfooled, checks=16)
            return
        self._search(state)

    @abstractmethod
    def _search(self, state: AttackState) -> None:
        """The search for ``pixels`` pixels on ``state.unfooled`` (when no scan runs)."""
