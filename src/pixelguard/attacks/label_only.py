"""A decision-based sparse attack for models that return only their top label.

1. **Start** from an adversarial image: corner-colour (salt-and-pepper) noise on a
   growing fraction of the pixels until the label changes.
2. **Restore in groups.** Try putting a random group of the changed pixels back to
   their original values; keep the restore when the label stays wrong. A rejected
   group halves the group size, an accepted one keeps it.
3. **Restore one by one.** A final pass tries each remaining changed pixel alone.

Only labels are used, so it works on label-only endpoints (``output: labels``).
Vectorised over images: every step is one model call with one query per image.

References:
    Schott, Rauber, Bethge, Brendel. "Towards the first adversarially robust neural
    network model on MNIST." ICLR 2019. arXiv:1805.09190 (the Pointwise attack).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixelguard.attacks._population import (
    corner_table,
    is_adversarial,
    pixel_corner_index,
    prune_changed_pixels,
    sample_new_corners,
)
from pixelguard.attacks.base import Attack, AttackState, register_attack
from pixelguard.config import at_least
from pixelguard.metrics.distances import changed_pixels

_NOISE_DENSITIES = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


@register_attack("label-only")
@dataclass(frozen=True, kw_only=True)
class LabelOnly(Attack):
    """Fool a label-only model with as few changed pixels as a decision-based search finds.

    Args:
        max_pixels: images whose final adversarial changes more pixels count as failed.
        start_tries: noise draws per density when looking for an adversarial start.
        group_steps: steps of the group-restore phase per image.
        seed: seed of the attack's random generator.
        budget: hard limit on queries per image, the clean query included.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,). Untargeted only.

    Example:
        >>> LabelOnly(max_pixels=20).needs_scores
        False
    """

    needs_scores = False
    supports_targeted = False

    max_pixels: int | None = None
    start_tries: int = 3
    group_steps: int = 200

    _constraints = {
        "max_pixels": at_least(1, optional=True),
        "start_tries": at_least(1),
        "group_steps": at_least(0),
    }

    def _run(self, state: AttackState) -> None:
        x, x_adv = state.x, state.x_adv
        started = self._start(state)
        self._restore_groups(state, started)
        prune_changed_pixels(state, started.nonzero().flatten())
        if self.max_pixels is not None:
            too_many = changed_pixels(x, x_adv).flatten(1).sum(dim=1) > self.max_pixels
            x_adv[too_many] = x[too_many]

    def _start(self, state: AttackState) -> torch.Tensor:
        """Corner noise on a growing fraction of pixels until each image is misclassified."""
        x, generator = state.x, state.generator
        n, c, h, w = x.shape
        corners = corner_table(c, x.device)
        on_corner = pixel_corner_index(x)
        todo = torch.zeros(n, dtype=torch.bool, device=x.device)
        todo[state.unfooled] = True
        everyone = torch.arange(n, device=x.device)
        for density in [d for d in _NOISE_DENSITIES for _ in range(self.start_tries)]:
            rows = everyone[todo & (state.remaining(everyone) >= 1)]
            if rows.numel() == 0:
                break
            hit = torch.rand((rows.numel(), h * w), generator=generator).to(x.device) < density
            noise = corners[sample_new_corners(generator, on_corner[rows], c)]
            flat = x[rows].reshape(-1, c, h * w)
            candidate = torch.where(hit.unsqueeze(1), noise.transpose(1, 2), flat).view(-1, c, h, w)
            scores = state.model.predict(candidate, index=rows.cpu())
            ok = is_adversarial(scores, state.y[rows], None, state.reject_class)
            state.x_adv[rows[ok]] = candidate[ok]
            todo[rows[ok]] = False
        started = torch.zeros_like(todo)
        started[state.unfooled] = ~todo[state.unfooled]
        return started

    def _restore_groups(self, state: AttackState, started: torch.Tensor) -> None:
        """Put back random groups of changed pixels; halve the group on each rejection."""
        x, x_adv = state.x, state.x_adv
        images = started.nonzero().flatten()
        if images.numel() == 0:
            return
        _, _, h, w = x.shape
        fraction = torch.full((images.numel(),), 0.5, device=x.device)
        for _ in range(self.group_steps):
            changed = changed_pixels(x[images], x_adv[images]).flatten(1)
            size = (changed.sum(dim=1) * fraction).floor()
            rows = ((size >= 2) & (state.remaining(images) >= 1)).nonzero().flatten()
            state.report(state.n_images - rows.numel())
            if rows.numel() == 0:
                return
            keys = torch.rand((rows.numel(), h * w), generator=state.generator).to(x.device)
            rank = keys.masked_fill(~changed[rows], 2.0).argsort(dim=1).argsort(dim=1)
            restore = rank < size[rows].unsqueeze(1)
            owner = images[rows]
            candidate = torch.where(restore.view(-1, 1, h, w), x[owner], x_adv[owner])
            scores = state.model.predict(candidate, index=owner.cpu())
            ok = is_adversarial(scores, state.y[owner], None, state.reject_class)
            x_adv[owner[ok]] = candidate[ok]
            fraction[rows[~ok]] /= 2
