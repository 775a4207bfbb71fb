"""How few pixels does it take? The fewest-pixels search, black-box, per image.

Three phases share one per-image query budget:

1. **Grow.** One pixel first: the exact scan over every position and colour-cube
   corner when it costs at most a quarter of the budget, else a short sparse random
   search. Then sparse random search with a growing ``k`` (x1.4 per stage), run only
   on the images not yet fooled, so queries go where they pay.
2. **Prune.** Restore changed pixels one at a time while the image stays adversarial.
3. **Shrink.** With the budget left, drop one pixel of the current adversarial set and
   search again at ``k - 1`` from there; every success is pruned and tried again,
   until an image fails a stage or runs out of budget.

The result's ``l0_pixels`` is the fewest pixels found per fooled image; ``success``
says whether the model was fooled within ``max_pixels``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pixelguard.attacks._population import (
    is_adversarial,
    margin_loss,
    pixel_corner_index,
    prune_changed_pixels,
)
from pixelguard.attacks.base import Attack, ProgressCallback, register_attack
from pixelguard.attacks.corner_search import corner_search_cost, scan_single_corner_pixels
from pixelguard.attacks.sparse_rs import sparse_random_search
from pixelguard.errors import ConfigError
from pixelguard.metrics.distances import changed_pixels
from pixelguard.models.base import OutputKind
from pixelguard.models.queries import QueryCounter


def pixel_schedule(max_pixels: int, growth: float = 1.4) -> list[int]:
    """The k tried after one pixel: 2, 3, 4, 5, 7, 10, ... up to ``max_pixels``."""
    ks, k = [], 2
    while k < max_pixels:
        ks.append(k)
        k = max(k + 1, math.floor(k * growth))
    if max_pixels >= 2:
        ks.append(max_pixels)
    return ks


@register_attack("min-pixels")
@dataclass(frozen=True, kw_only=True)
class MinPixels(Attack):
    """Find, per image, the fewest pixels that fool the model, within a query budget.

    Args:
        max_pixels: the largest k tried; images not fooled with this many fail.
        stage_steps: sparse random search steps per stage and image.
        p_init: Sparse-RS's initial fraction of pixels moved per proposal.
        seed: seed of the attack's random generator.
        budget: total queries per image for all phases (default 10,000).

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Example:
        >>> MinPixels(max_pixels=20).budget
        10000
    """

    budget: int | None = 10_000
    max_pixels: int = 64
    stage_steps: int = 300
    p_init: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.budget is None:
            raise ConfigError("min-pixels: needs a per-image query budget")
        if self.max_pixels < 1:
            raise ConfigError(f"min-pixels: max_pixels must be at least 1, got {self.max_pixels}")
        if self.stage_steps < 1:
            raise ConfigError(f"min-pixels: stage_steps must be at least 1, got {self.stage_steps}")
        if not 0.0 < self.p_init <= 1.0:
            raise ConfigError(f"min-pixels: p_init must lie in (0, 1], got {self.p_init}")

    def _run(
        self,
        model: QueryCounter,
        x: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        clean_scores: torch.Tensor,
        generator: torch.Generator,
        progress: ProgressCallback | None,
    ) -> torch.Tensor:
        n = x.shape[0]
        x_adv = x.clone()
        loss_fn = margin_loss(OutputKind(model.capabilities.output))
        search = {"steps": self.stage_steps, "p_init": self.p_init, "loss_fn": loss_fn}
        fooled = is_adversarial(clean_scores, y, target)
        active = (~fooled).nonzero().flatten()
        assert self.budget is not None
        if corner_search_cost(tuple(x.shape[1:])) <= self.budget // 4:
            fooled |= scan_single_corner_pixels(model, x, y, target, active, x_adv, generator, 16)
        else:
            fooled |= sparse_random_search(model, x, y, target, active, x_adv, generator, pixels=1, **search)
        for k in pixel_schedule(min(self.max_pixels, x.shape[2] * x.shape[3])):
            active = (~fooled & (model.remaining().to(x.device) >= 1)).nonzero().flatten()
            if active.numel() == 0:
                break
            fooled |= sparse_random_search(model, x, y, target, active, x_adv, generator, pixels=k, **search)
            if progress is not None:
                progress(int(fooled.sum()), n)
        prune_changed_pixels(model, x, x_adv, y, target, fooled.nonzero().flatten(), generator)
        self._shrink(model, x, x_adv, y, target, fooled, generator, search)
        if progress is not None:
            progress(n, n)
        return x_adv

    def _shrink(
        self,
        model: QueryCounter,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        target: torch.Tensor | None,
        fooled: torch.Tensor,
        generator: torch.Generator,
        search: dict,
    ) -> None:
        """Search at one pixel fewer from each adversarial set until a stage fails."""
        trying = fooled.clone()
        while True:
            pixels = changed_pixels(x, x_adv).flatten(1)
            counts = pixels.sum(dim=1)
            trying &= (counts > 1) & (model.remaining().to(x.device) >= 2)
            if not bool(trying.any()):
                return
            for count in counts[trying].unique().tolist():
                group = (trying & (counts == count)).nonzero().flatten()
                k = count - 1
                keys = torch.rand((group.numel(), pixels.shape[1]), generator=generator).to(x.device)
                pos = keys.masked_fill(~pixels[group], -1.0).topk(k, dim=1).indices
                col = pixel_corner_index(x_adv[group]).gather(1, pos).clamp_min(0)
                won = sparse_random_search(
                    model, x, y, target, group, x_adv, generator, pixels=k, start=(pos, col), **search
                )
                prune_changed_pixels(model, x, x_adv, y, target, won.nonzero().flatten(), generator)
                trying[group] = won[group]
