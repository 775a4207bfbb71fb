"""Sparse random search for few-pixel attacks (Sparse-RS, L0 threat model).

Keep ``k`` perturbed pixels coloured at corners of the colour cube; each step
proposes to move a shrinking fraction of them to other positions with new corner
colours, and keeps the proposal when the margin loss improves. One query per image
per step, all images in one model call, each image stopping at its first success;
when only a few images are left, each proposes several candidates per step so that
model calls stay large enough to run efficiently.
For ``k = 1`` the exact scan over every position and corner is used whenever the
budget allows it.

References:
    Croce, Andriushchenko, Singh, Flammarion, Hein. "Sparse-RS: a versatile framework
    for query-efficient sparse black-box adversarial attacks." AAAI 2022. arXiv:2006.12834.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixelguard.attacks._population import (
    LossFunction,
    accept_best,
    corner_table,
    margin_loss,
    pixel_corner_index,
    record_winners,
    sample_new_corners,
    sample_positions,
    score_candidates,
)
from pixelguard.attacks.base import AttackState, register_attack
from pixelguard.attacks.corner_search import CornerPixelSearch
from pixelguard.config import at_least
from pixelguard.models.base import OutputKind

_SCHEDULE = (
    (10, 1.0),
    (50, 2.0),
    (200, 4.0),
    (500, 5.0),
    (1000, 6.0),
    (2000, 8.0),
    (4000, 10.0),
    (6000, 12.0),
    (8000, 15.0),
)
"""Sparse-RS's step-size schedule on a 10,000-step scale: up to step s, divide p_init by d."""

MAX_PROPOSALS = 16
"""Most candidates one image proposes per step when few images are left searching."""


def swap_fraction(p_init: float, step: int, steps: int) -> float:
    """Fraction of the perturbed pixels a proposal moves at ``step`` of ``steps``."""
    scaled = int(step / max(steps, 1) * 10_000)
    for upper, divisor in _SCHEDULE:
        if scaled <= upper:
            return p_init / divisor
    return p_init / 20.0


def proposals_per_image(active: int, min_batch: int, queries_left: int) -> int:
    """Candidates each of ``active`` images proposes in one step.

    One while at least ``min_batch`` images are searching; below that, enough that a
    model call still holds about ``min_batch`` candidates (at most
    :data:`MAX_PROPOSALS`), never more than ``queries_left``.
    """
    wanted = -(-min_batch // max(active, 1))
    return max(1, min(wanted, MAX_PROPOSALS, queries_left))


def sparse_random_search(
    state: AttackState,
    active: torch.Tensor,
    *,
    pixels: int,
    steps: int,
    p_init: float,
    loss_fn: LossFunction,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    report_progress: bool = False,
    min_batch: int = 1,
) -> torch.Tensor:
    """Run the search on the ``active`` images; write winners into ``state.x_adv``.

    Each image spends at most ``steps`` queries here (fewer if its budget ends first).
    ``start`` gives each active image's initial pixel positions and corner indices,
    shape (A, k) each, instead of random ones. When fewer than ``min_batch`` images
    are searching, each proposes several candidates from its current set per step
    (see :func:`proposals_per_image`) and keeps the best: the same random search,
    with model calls large enough to run efficiently.

    Shape:
        active: (A,) image indices -> (N,) bool, the images fooled.
    """
    x, generator = state.x, state.generator
    n, c, h, w = x.shape
    n_pixels = h * w
    k = min(pixels, n_pixels)
    corners = corner_table(c, x.device)
    fooled_images = torch.zeros(n, dtype=torch.bool, device=x.device)
    on_corner = pixel_corner_index(x[active])
    slot = torch.arange(active.numel(), device=x.device)
    if start is None:
        pos = sample_positions(generator, active.numel(), n_pixels, k).to(x.device)
        col = sample_new_corners(generator, on_corner.gather(1, pos), c)
    else:
        pos, col = start
    loss = torch.full((active.numel(),), float("inf"), device=x.device)
    spent = 0
    while spent < steps and active.numel():
        a = active.numel()
        if spent == 0:
            m, cand_pos, cand_col = 1, pos, col
        else:
            left = min(steps - spent, int(state.remaining(active).min()))
            m = proposals_per_image(a, min_batch, left)
            owner = torch.arange(a, device=x.device).repeat_interleave(m)
            base_pos, base_col = pos[owner], col[owner]
            n_swap = min(max(1, int(swap_fraction(p_init, spent, steps) * k)), n_pixels - k or k)
            which = torch.rand((a * m, k), generator=generator).topk(n_swap, dim=1).indices
            which = which.to(x.device)
            if k < n_pixels:
                moved = sample_positions(generator, a * m, n_pixels, n_swap, exclude=base_pos)
            else:
                moved = base_pos.gather(1, which)
            moved = moved.to(x.device)
            cand_pos = base_pos.scatter(1, which, moved)
            new_col = sample_new_corners(generator, on_corner[slot[owner]].gather(1, moved), c)
            cand_col = base_col.scatter(1, which, new_col)
        owners = active.repeat_interleave(m)
        values = corners[cand_col]
        step_loss, fooled = score_candidates(state, owners, cand_pos, values, loss_fn)
        fooled_images |= record_winners(state, owners, cand_pos, values, step_loss, fooled)
        pos, col, loss = accept_best(step_loss, cand_pos, cand_col, pos, col, loss, m)
        spent += m
        keep = ~fooled.view(a, m).any(dim=1) & (state.remaining(active) >= 1)
        active, pos, col, loss, slot = active[keep], pos[keep], col[keep], loss[keep], slot[keep]
        if report_progress:
            state.report(n - active.numel())
    return fooled_images


@register_attack("sparse-rs")
@dataclass(frozen=True, kw_only=True)
class SparseRS(CornerPixelSearch):
    """Change at most ``pixels`` pixels, found by sparse random search over corner colours.

    Args:
        pixels, steps, p_init, exact_single_pixel: see :class:`CornerPixelSearch`.
        min_batch: when fewer images than this are still searching, each proposes
            several candidates per step (one query each, the best kept), so model
            calls stay large enough to be fast; 1 keeps one proposal per step.
        seed: seed of the attack's random generator.
        budget: hard limit on queries per image, the clean query included.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Example:
        >>> SparseRS(pixels=10, steps=1000).pixels
        10
    """

    min_batch: int = 64

    _constraints = {"min_batch": at_least(1)}

    def _search(self, state: AttackState) -> None:
        sparse_random_search(
            state,
            state.unfooled,
            pixels=self.pixels,
            steps=self.steps,
            p_init=self.p_init,
            loss_fn=margin_loss(OutputKind(state.model.capabilities.output), state.reject_class),
            report_progress=True,
            min_batch=self.min_batch,
        )
