"""Additive-margin search: sparse search as Bayesian linear regression, for small inputs.

On a small input the margin loss of a candidate is close to additive in its changed
pixels: on the 8x8 digits CNN the sum of the single-pixel changes predicts the
margin of a random 3-pixel change with a correlation of 0.96, and the 3 pixels
with the most negative single changes fool 41 of 50 digits. So instead of
hill-climbing from one set of pixels, this search fits the margin as a sum of one
weight per *feature* (a position painted one corner of the colour cube) and asks
the model only about the set of ``k`` pixels most likely to fool it:

- **The model.** Normalised by the clean margin ``L0`` (which the clean query
  already measured), a candidate's change ``(L - L0) / (L0 / k)`` is modelled as the
  sum of its features' weights plus noise; each weight's prior has a spread
  proportional to how far the feature moves its pixel (painting a pixel the colour
  it has changes nothing). Each image keeps the exact Gaussian posterior (full
  covariance, updated by one rank-one step per query), so a query that changed
  three pixels teaches something about each of them and about their sum.
- **Shared evidence.** The prior mean of an image's weights is the weight per unit
  of change fitted to every query of every image in the run (ridge regression), so
  that where pixels moved one image's margin, the next image's search starts there.
- **The query.** The candidate is built greedily, one pixel at a time, to maximise
  the posterior probability that its margin is negative (the probability of
  improvement over the fooling threshold): the set most likely to fool, not the
  one with the best mean, so a set that failed is seldom asked again, and untried
  features win where the known ones are unlikely to suffice.

Measured on the digits CNN (k=3, budget 300) in ``BENCHMARKS.md``. The model's
matrices hold ``(H * W * 2**C)**2`` numbers per image, so :class:`SparseBayes` uses
this search only on small inputs and processes the images in groups that fit the
model's memory budget.

References:
    Croce et al. "Sparse-RS." AAAI 2022 (the problem and the margin loss).
    Russo et al. "A tutorial on Thompson sampling." 2018, section 8.2 (greedy,
    probability-of-improvement acquisition on Gaussian linear models).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pixelguard.attacks._population import (
    LossFunction,
    corner_distances,
    corner_table,
    record_winners,
    score_candidates,
)
from pixelguard.attacks.base import AttackState
from pixelguard.models.base import memory_budget

TIE_BREAK = 1e-3
"""Spread of the random jitter added to each feature's score, so that equal scores
(every untried feature of the same size) are broken at random, not by position."""


def feature_count(shape: tuple[int, ...]) -> int:
    """Features of the additive model for images of ``shape`` (C, H, W): H * W * 2**C."""
    c, h, w = shape
    return h * w * 2**c


def posterior_bytes(shape: tuple[int, ...]) -> int:
    """Memory one image's posterior takes while it is updated: three float64 matrices
    of :func:`feature_count` squared (the covariance and the temporaries of an update)."""
    return 3 * 8 * feature_count(shape) ** 2


def change_sizes(x: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """How far painting each pixel each corner moves it: RMS over channels.

    Shape:
        x: (A, C, H, W); corners: (K, C) -> (A, H * W * K), feature ``p * K + j``.
    """
    a, c = x.shape[:2]
    colours = x.reshape(a, c, -1).transpose(1, 2)  # (A, P, C)
    return (corner_distances(colours, corners) / c).sqrt().reshape(a, -1)


@dataclass
class SharedEvidence:
    """Ridge regression of the margin change per unit of pixel change, over all images.

    Shape:
        precision: (F, F); moment: (F,); float64.
    """

    precision: torch.Tensor
    moment: torch.Tensor
    noise: float

    @classmethod
    def empty(cls, features: int, noise: float, device: torch.device) -> SharedEvidence:
        """A unit Gaussian prior on every feature's weight per unit of change."""
        eye = torch.eye(features, dtype=torch.float64, device=device)
        return cls(eye, torch.zeros(features, dtype=torch.float64, device=device), noise)

    def weights(self) -> torch.Tensor:
        """The posterior mean weight of every feature per unit of change: (F,)."""
        return torch.linalg.solve(self.precision, self.moment)

    def observe(self, scaled_features: torch.Tensor, change: torch.Tensor) -> None:
        """Add queries: their features times the change size, and their normalised change.

        Shape:
            scaled_features: (M, F); change: (M,).
        """
        self.precision += scaled_features.T @ scaled_features / self.noise**2
        self.moment += scaled_features.T @ change / self.noise**2


@dataclass
class ImagePosteriors:
    """Each image's Gaussian posterior over its features' weights (normalised units).

    The prior of image ``i`` is ``N(mu_i, diag(prior_var_i))`` with ``mu_i`` the shared
    weights times the image's change sizes; ``covariance`` is the exact posterior
    covariance and ``moment`` the data term ``X^T y / noise^2``, so the posterior mean
    is ``covariance @ (mu_i / prior_var_i + moment)`` for whatever ``mu_i`` is now.

    Shape:
        covariance: (A, F, F); moment, prior_var, sizes: (A, F); float64.
    """

    covariance: torch.Tensor
    moment: torch.Tensor
    prior_var: torch.Tensor
    sizes: torch.Tensor
    noise: float

    @classmethod
    def from_sizes(cls, sizes: torch.Tensor, spread: float, noise: float) -> ImagePosteriors:
        """Priors with standard deviation ``spread`` per unit of change."""
        prior_var = (spread * sizes.double()).clamp_min(1e-3) ** 2
        zeros = torch.zeros_like(prior_var)
        return cls(torch.diag_embed(prior_var), zeros, prior_var, sizes.double(), noise)

    def means(self, shared: torch.Tensor) -> torch.Tensor:
        """Posterior means given the shared weights per unit of change: (A, F)."""
        prior_mean = shared.unsqueeze(0) * self.sizes
        data = (prior_mean / self.prior_var + self.moment).unsqueeze(2)
        return torch.bmm(self.covariance, data).squeeze(2)

    def observe(self, features: torch.Tensor, change: torch.Tensor) -> None:
        """One query per image: a rank-one update of every posterior.

        Shape:
            features: (A, F) 0/1; change: (A,).
        """
        spread = torch.bmm(self.covariance, features.unsqueeze(2)).squeeze(2)
        denominator = self.noise**2 + (features * spread).sum(dim=1, keepdim=True)
        self.covariance -= (spread / denominator).unsqueeze(2) * spread.unsqueeze(1)
        self.moment += features * (change / self.noise**2).unsqueeze(1)

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the rows where ``rows`` is True."""
        if not bool(rows.all()):
            self.covariance, self.moment = self.covariance[rows], self.moment[rows]
            self.prior_var, self.sizes = self.prior_var[rows], self.sizes[rows]


def likeliest_fooling_sets(
    generator: torch.Generator,
    mean: torch.Tensor,
    covariance: torch.Tensor,
    usable: torch.Tensor,
    pixels: int,
    corners: int,
    threshold: float,
) -> torch.Tensor:
    """Per image, ``pixels`` features on distinct positions, added one at a time, each
    the one that most raises the probability that the set's sum falls below
    ``threshold``. Where fewer positions are usable, the first feature is repeated.

    Shape:
        mean, usable: (A, F); covariance: (A, F, F) -> (A, pixels) feature indices.
    """
    a, f = mean.shape
    rows = torch.arange(a, device=mean.device)
    variance = covariance.diagonal(dim1=1, dim2=2)
    set_mean = torch.zeros((a, 1), dtype=mean.dtype, device=mean.device)
    set_var = torch.zeros_like(set_mean)
    cross = torch.zeros_like(mean)  # covariance of each feature with the set so far
    blocked = ~usable
    chosen: list[torch.Tensor] = []
    for _ in range(pixels):
        spread = (set_var + variance + 2 * cross).clamp_min(1e-12).sqrt()
        score = (threshold - set_mean - mean) / spread
        jitter = torch.rand((a, f), generator=generator, dtype=mean.dtype).to(mean.device)
        score = (score + TIE_BREAK * jitter).masked_fill(blocked, -float("inf"))
        best = score.argmax(dim=1)
        if chosen:
            best = torch.where(score.gather(1, best[:, None]).squeeze(1).isinf(), chosen[0], best)
        chosen.append(best)
        set_mean = set_mean + mean.gather(1, best[:, None])
        set_var = set_var + variance.gather(1, best[:, None]) + 2 * cross.gather(1, best[:, None])
        cross = cross + covariance[rows, best]
        blocked = blocked.view(a, -1, corners)
        blocked[rows, best // corners] = True
        blocked = blocked.view(a, f)
    return torch.stack(chosen, dim=1)


def additive_sparse_search(
    state: AttackState,
    active: torch.Tensor,
    *,
    pixels: int,
    steps: int,
    clean_loss: torch.Tensor,
    loss_fn: LossFunction,
    spread: float = 1.5,
    noise: float = 0.5,
    report_progress: bool = False,
) -> torch.Tensor:
    """Run the search on the ``active`` images; write winners into ``state.x_adv``.

    ``clean_loss`` is the loss of each active image's clean query (positive: not
    fooled). Each image spends at most ``steps`` queries, one per step. The images
    go in groups whose posteriors fit the model's memory budget; the shared evidence
    carries over from group to group.

    Shape:
        active, clean_loss: (A,) -> (N,) bool, the images fooled.
    """
    x = state.x
    n, c, h, w = x.shape
    group = max(1, memory_budget(state.model) // posterior_bytes((c, h, w)))
    shared = SharedEvidence.empty(feature_count((c, h, w)), noise, x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    for lo in range(0, active.numel(), group):
        fooled |= _search_group(
            state,
            active[lo : lo + group],
            clean_loss[lo : lo + group],
            shared,
            pixels=min(pixels, h * w),
            steps=steps,
            loss_fn=loss_fn,
            spread=spread,
            waiting=max(0, active.numel() - lo - group) if report_progress else None,
        )
    return fooled


def _search_group(
    state: AttackState,
    active: torch.Tensor,
    clean_loss: torch.Tensor,
    shared: SharedEvidence,
    *,
    pixels: int,
    steps: int,
    loss_fn: LossFunction,
    spread: float,
    waiting: int | None,
) -> torch.Tensor:
    """The search on one group of images (``waiting``: images of later groups, for the
    progress report; None: no report)."""
    x = state.x
    n = x.shape[0]
    corners = corner_table(x.shape[1], x.device)
    sizes = change_sizes(x[active], corners)
    usable = sizes > 1e-6
    posteriors = ImagePosteriors.from_sizes(sizes, spread, shared.noise)
    clean_loss = clean_loss.double().clamp_min(1e-6)
    fooled_images = torch.zeros(n, dtype=torch.bool, device=x.device)
    for _ in range(steps):
        if not active.numel():
            break
        mean = posteriors.means(shared.weights())
        chosen = likeliest_fooling_sets(
            state.generator,
            mean,
            posteriors.covariance,
            usable,
            pixels,
            corners.shape[0],
            -float(pixels),
        )
        positions, colours = chosen // corners.shape[0], chosen % corners.shape[0]
        values = corners[colours]
        loss, fooled = score_candidates(state, active, positions, values, loss_fn)
        fooled_images |= record_winners(state, active, positions, values, loss, fooled)
        change = (loss.double() - clean_loss) / (clean_loss / pixels)
        indicator = torch.zeros_like(mean).scatter_(1, chosen, 1.0)
        posteriors.observe(indicator, change)
        shared.observe(indicator * posteriors.sizes, change)
        keep = ~fooled & (state.remaining(active) >= 1)
        active, clean_loss, usable = active[keep], clean_loss[keep], usable[keep]
        posteriors.keep(keep)
        if waiting is not None:
            state.report(n - active.numel() - waiting)
    return fooled_images
