"""The few-pixel attack by differential evolution (Su, Vargas and Sakurai).

Each candidate encodes ``k`` pixels as ``(row, col, value per channel)``. The search
is DE/rand/1: a trial for member ``i`` is ``a + F * (b - c)`` from three other members;
it replaces ``i`` when its loss is no worse. Vectorised over all images and all
population members: one model call per evaluation chunk for the whole batch, and each
image stops as soon as one of its candidates fools the model.

References:
    Su, Vargas, Sakurai. "One pixel attack for fooling deep neural networks."
    IEEE Trans. Evolutionary Computation, 2019. arXiv:1710.08864.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pixelguard.attacks._population import (
    distinct_indices,
    margin_loss,
    probability_loss,
    record_winners,
    score_candidates,
)
from pixelguard.attacks.base import Attack, AttackState, register_attack
from pixelguard.config import at_least, between, config_error, one_of
from pixelguard.models.base import OutputKind


@register_attack("pixel-de")
@dataclass(frozen=True, kw_only=True)
class PixelDE(Attack):
    """Change at most ``pixels`` pixels, found by differential evolution.

    Args:
        pixels: how many pixel positions a candidate may change (k).
        population: candidates per image (the paper: 400).
        generations: most DE generations after the initial population (the paper: 100).
        mutation: the differential weight F (the paper: 0.5).
        crossover: binomial crossover rate; 1.0 takes the whole mutant (the paper's choice).
        loss: ``"margin"`` (log-probability margin; does not saturate on confident
            models) or ``"probability"`` (the paper's: probability of the true class,
            or minus that of the target).
        checks_per_generation: how many slices each generation is evaluated in; the
            attack stops an image after the first slice that fools the model, so more
            checks spend fewer queries on easy images at the cost of smaller batches.
        seed: seed of the attack's random generator.
        budget: hard limit on queries per image, the clean query included.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, target: (N,).

    Example:
        >>> import torch
        >>> from pixelguard.attacks.pixel_de import PixelDE
        >>> PixelDE(pixels=3, population=50, generations=10).pixels
        3
    """

    pixels: int = 1
    population: int = 400
    generations: int = 100
    mutation: float = 0.5
    crossover: float = 1.0
    loss: Literal["margin", "probability"] = "margin"
    checks_per_generation: int = 4

    _constraints = {
        "pixels": at_least(1),
        "population": at_least(4),
        "generations": at_least(0),
        "mutation": between(0, 2, low_open=True),
        "crossover": between(0, 1, low_open=True),
        "loss": one_of("margin", "probability"),
        "checks_per_generation": at_least(1),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.checks_per_generation > self.population:
            raise config_error(
                self.name,
                "checks_per_generation",
                "lie in 1..population",
                self.checks_per_generation,
            )

    def _run(self, state: AttackState) -> None:
        search = _Search(self, state)
        active = state.unfooled
        genes = self._initial_genes(state.generator, active.numel(), state.x.shape).to(
            state.x.device
        )
        loss, finished = search.evaluate(active, genes)
        keep = ~finished
        active, genes, loss = active[keep], genes[keep], loss[keep]
        for _ in range(self.generations):
            if active.numel() == 0:
                break
            trial = self._mutate(genes, state.generator, state.x.shape)
            trial_loss, finished = search.evaluate(active, trial)
            better = trial_loss <= loss
            genes = torch.where(better.view(*better.shape, 1, 1), trial, genes)
            loss = torch.minimum(loss, trial_loss)
            keep = ~finished
            active, genes, loss = active[keep], genes[keep], loss[keep]
            state.report(state.n_images - active.numel())

    def _initial_genes(self, generator: torch.Generator, a: int, shape: torch.Size) -> torch.Tensor:
        """Uniform positions; values ~ N(0.5, 0.5) clipped, the paper's N(128, 127) in [0, 1]."""
        _, c, h, w = shape
        size = (a, self.population, self.pixels)
        rows = torch.rand(size, generator=generator) * h
        cols = torch.rand(size, generator=generator) * w
        values = (0.5 + 0.5 * torch.randn((*size, c), generator=generator)).clamp(0.0, 1.0)
        return torch.cat([rows.unsqueeze(-1), cols.unsqueeze(-1), values], dim=-1)

    def _mutate(
        self, genes: torch.Tensor, generator: torch.Generator, shape: torch.Size
    ) -> torch.Tensor:
        """DE/rand/1 with optional binomial crossover, then clipped to the search box."""
        a, p, k, d = genes.shape
        picks = distinct_indices(generator, a, p, 3).to(genes.device)
        flat = genes.reshape(a, p, k * d)

        def member(j: int) -> torch.Tensor:
            return flat.gather(1, picks[..., j : j + 1].expand(a, p, k * d))

        trial = member(0) + self.mutation * (member(1) - member(2))
        if self.crossover < 1.0:
            take = torch.rand((a, p, k * d), generator=generator).to(genes.device) < self.crossover
            forced = (torch.rand((a, p, 1), generator=generator) * (k * d)).long().to(genes.device)
            take.scatter_(2, forced, True)
            trial = torch.where(take, trial, flat)
        trial = trial.view(a, p, k, d)
        _, _, h, w = shape
        rows = trial[..., 0:1].clamp(0.0, h - 1e-3)
        cols = trial[..., 1:2].clamp(0.0, w - 1e-3)
        return torch.cat([rows, cols, trial[..., 2:].clamp(0.0, 1.0)], dim=-1)


class _Search:
    """Evaluation of one run's candidates: decodes genes, scores slices, records winners."""

    def __init__(self, attack: PixelDE, state: AttackState) -> None:
        output = OutputKind(state.model.capabilities.output)
        objective = margin_loss if attack.loss == "margin" else probability_loss
        self.loss_fn = objective(output, state.reject_class)
        self.checks = attack.checks_per_generation
        self.state = state

    def decode(self, genes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat pixel positions and values from genes: (M, k, D) -> (M, k), (M, k, C)."""
        _, _, h, w = self.state.x.shape
        rows = genes[..., 0].floor().clamp(0, h - 1)
        cols = genes[..., 1].floor().clamp(0, w - 1)
        return (rows * w + cols).long(), genes[..., 2:].clamp(0.0, 1.0)

    def evaluate(
        self, active: torch.Tensor, genes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Score every candidate of the active images, slice by slice, stopping early.

        Images fooled in a slice get their best fooling candidate written into
        ``x_adv`` and are not evaluated further; images without budget for the next
        slice stop. Unevaluated candidates get an infinite loss.

        Shape:
            active: (A,) image indices; genes: (A, P, k, D)
            -> loss (A, P); finished (A,) bool, fooled or out of budget.
        """
        a, p = genes.shape[:2]
        loss = torch.full((a, p), float("inf"), device=genes.device)
        finished = torch.zeros(a, dtype=torch.bool, device=genes.device)
        bounds = torch.linspace(0, p, self.checks + 1).round().long().tolist()
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            finished |= self.state.remaining(active) < hi - lo
            rows = (~finished).nonzero().flatten()
            if rows.numel() == 0 or hi == lo:
                continue
            m = hi - lo
            owner = active[rows].repeat_interleave(m)
            positions, values = self.decode(genes[rows, lo:hi].flatten(0, 1))
            part_loss, fooled = score_candidates(self.state, owner, positions, values, self.loss_fn)
            loss[rows, lo:hi] = part_loss.view(-1, m)
            won = record_winners(self.state, owner, positions, values, part_loss, fooled)
            finished[rows] |= won[active[rows]]
        return loss, finished
