"""Vectorised primitives shared by the population-based pixel attacks.

Every function works on whole batches (images x candidates) at once; none loops
over images or candidates in Python. Random numbers are drawn on the CPU from the
attack's own generator and then moved, so CPU and GPU runs agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pixelguard.attacks.base import AttackState, fools
from pixelguard.models.base import OutputKind, log_probabilities, memory_budget, probabilities

LossFunction = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""``loss(scores, label, target) -> (M,)``: lower is better, negative when fooled."""


def paste_pixels(
    x: torch.Tensor, owner: torch.Tensor, positions: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Candidate images: copies of ``x[owner]`` with the given pixels overwritten.

    Args:
        x: the clean images.
        owner: which image of ``x`` each candidate perturbs.
        positions: flat pixel index ``row * W + col`` of each changed pixel.
        values: new value of each changed pixel, per channel.

    Shape:
        x: (N, C, H, W); owner: (M,); positions: (M, k) int64; values: (M, k, C)
        -> (M, C, H, W).
    """
    n, c, h, w = x.shape
    m, k = positions.shape
    out = x.reshape(n, c, h * w)[owner]
    out.scatter_(2, positions.view(m, 1, k).expand(m, c, k), values.transpose(1, 2).to(x.dtype))
    return out.view(m, c, h, w)


def score_candidates(
    state: AttackState,
    owner: torch.Tensor,
    positions: torch.Tensor,
    values: torch.Tensor,
    loss_fn: LossFunction,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Query every candidate once (charged to its owner) and return its loss and success.

    Candidates are materialised in groups that fit the model's memory budget
    (:func:`~pixelguard.models.base.memory_budget`); the model adapter chunks each
    group further to its batch size.

    Shape:
        owner: (M,); positions: (M, k); values: (M, k, C) -> loss (M,), fooled (M,) bool.
    """
    x = state.x
    group = max(1, memory_budget(state.model) // (x[0].numel() * x.element_size()))
    losses, fooled = [], []
    for lo in range(0, owner.shape[0], group):
        part = owner[lo : lo + group]
        images = paste_pixels(x, part, positions[lo : lo + group], values[lo : lo + group])
        scores = state.model.predict(images, index=part.cpu())
        label, tgt = state.y[part], state.target_of(part)
        losses.append(loss_fn(scores, label, tgt))
        fooled.append(is_adversarial(scores, label, tgt, state.reject_class))
    if not losses:
        empty = torch.zeros(0, device=x.device)
        return empty, empty.bool()
    return torch.cat(losses), torch.cat(fooled)


def accept_best(
    step_loss: torch.Tensor,
    cand_pos: torch.Tensor,
    cand_col: torch.Tensor,
    pos: torch.Tensor,
    col: torch.Tensor,
    loss: torch.Tensor,
    proposals: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's best of its ``proposals`` consecutive candidates replaces the image's
    pixels (positions and corner indices) where it lowers the image's loss.

    Shape:
        step_loss: (A * m,); cand_pos, cand_col: (A * m, k); pos, col: (A, k); loss: (A,)
        -> pos, col, loss of the same shapes.
    """
    a = loss.shape[0]
    best_loss, best = step_loss.view(a, proposals).min(dim=1)
    pick = torch.arange(a, device=loss.device) * proposals + best
    better = best_loss < loss
    return (
        torch.where(better.unsqueeze(1), cand_pos[pick], pos),
        torch.where(better.unsqueeze(1), cand_col[pick], col),
        torch.where(better, best_loss, loss),
    )


def record_winners(
    state: AttackState,
    owner: torch.Tensor,
    positions: torch.Tensor,
    values: torch.Tensor,
    loss: torch.Tensor,
    fooled: torch.Tensor,
) -> torch.Tensor:
    """Write each image's best fooling candidate into ``state.x_adv``; return the images won.

    Among an image's fooling candidates the one with the lowest loss (the most
    confident misclassification) wins; ties go to the first.

    Shape:
        owner, loss, fooled: (M,); positions: (M, k); values: (M, k, C) -> (N,) bool.
    """
    x = state.x
    n = x.shape[0]
    won = torch.zeros(n, dtype=torch.bool, device=x.device)
    if not bool(fooled.any()):
        return won
    masked = loss.masked_fill(~fooled, float("inf"))
    best = torch.full((n,), float("inf"), device=x.device).scatter_reduce(
        0, owner, masked, reduce="amin"
    )
    rows = (fooled & (masked == best[owner])).nonzero().flatten()
    rows = rows[torch.argsort(owner[rows], stable=True)]
    first = torch.ones_like(rows, dtype=torch.bool)
    first[1:] = owner[rows[1:]] != owner[rows[:-1]]
    rows = rows[first]
    state.x_adv[owner[rows]] = paste_pixels(x, owner[rows], positions[rows], values[rows])
    won[owner[rows]] = True
    return won


def distinct_indices(generator: torch.Generator, rows: int, pool: int, count: int) -> torch.Tensor:
    """For each of ``pool`` members in each row, ``count`` other members, all distinct.

    Used by DE/rand/1: member ``i`` is mutated from three members that differ from
    each other and from ``i``. Exact and uniform: each draw is taken from the members
    not yet excluded and shifted past the excluded ones in ascending order.

    Shape:
        -> (rows, pool, count) int64 with values in [0, pool), none equal to its member.
    """
    if count >= pool:
        raise ValueError(f"cannot draw {count} distinct others from a pool of {pool}")
    self_index = torch.arange(pool).view(1, pool, 1).expand(rows, pool, 1)
    excluded = self_index
    picks = []
    for drawn in range(count):
        v = (torch.rand((rows, pool, 1), generator=generator) * (pool - 1 - drawn)).long()
        for e in excluded.sort(dim=2).values.unbind(dim=2):
            v = v + (v >= e.unsqueeze(-1)).long()
        picks.append(v)
        excluded = torch.cat([excluded, v], dim=2)
    return torch.cat(picks, dim=2)


def best_other(
    scores: torch.Tensor, cls: torch.Tensor, reject_class: int | None = None
) -> torch.Tensor:
    """Each row's highest score over the classes other than ``cls`` and ``reject_class``.

    Autograd-safe (the excluded classes are masked, not written in place).

    Shape:
        scores: (M, K); cls: (M,) -> (M,).
    """
    excluded = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, cls.view(-1, 1), True)
    if reject_class is not None:
        excluded[:, reject_class] = True
    return scores.masked_fill(excluded, float("-inf")).amax(dim=1)


def margin_loss(output: OutputKind, reject_class: int | None = None) -> LossFunction:
    """The log-probability margin, negative exactly when a candidate fools the model.

    Untargeted: ``log p_y - max_{j != y, r} log p_j`` (``r``: the model's reject
    class, never a way to fool it); targeted: ``max_{j != t} log p_j - log p_t``.
    Log-probabilities do not saturate the way probabilities do on confident models,
    so the search still sees improvements where ``p_y`` rounds to 1.
    """

    def loss(
        scores: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        logp = log_probabilities(scores, output)
        cls = label if target is None else target
        own = logp.gather(1, cls.view(-1, 1)).squeeze(1)
        if target is not None:
            return best_other(logp, cls) - own
        return own - best_other(logp, cls, reject_class)

    return loss


def probability_loss(output: OutputKind, reject_class: int | None = None) -> LossFunction:
    """The one-pixel paper's fitness: ``p_y`` (untargeted) or ``-p_t`` (targeted).

    With a reject class ``r`` the untargeted fitness is ``p_y + p_r``, the
    probability of an answer that does not fool the model.
    """

    def loss(
        scores: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None
    ) -> torch.Tensor:
        probs = probabilities(scores, output)
        if target is not None:
            return -probs.gather(1, target.view(-1, 1)).squeeze(1)
        own = probs.gather(1, label.view(-1, 1)).squeeze(1)
        return own if reject_class is None else own + probs[:, reject_class]

    return loss


def is_adversarial(
    scores: torch.Tensor,
    label: torch.Tensor,
    target: torch.Tensor | None,
    reject_class: int | None = None,
) -> torch.Tensor:
    """Whether each row's top class fools the model (see :func:`~pixelguard.attacks.base.fools`).

    Shape:
        scores: (M, K); label, target: (M,) -> (M,) bool.
    """
    return fools(scores.argmax(dim=1), label, target, reject_class)


def corner_table(channels: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``2**C`` corners of the colour cube, row ``i`` holding the bits of ``i``.

    Shape:
        -> (2**C, C) float32 with entries 0.0 or 1.0.
    """
    index = torch.arange(2**channels, device=device).view(-1, 1)
    bits = 2 ** torch.arange(channels, device=device).view(1, -1)
    return ((index // bits) % 2).to(torch.float32)


def corner_distances(colours: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Squared distance of each colour from each corner of the colour cube.

    Shape:
        colours: (R, s, C); corners: (K, C) -> (R, s, K).
    """
    return ((colours.unsqueeze(2) - corners.view(1, 1, *corners.shape)) ** 2).sum(dim=-1)


def pixel_corner_index(x: torch.Tensor) -> torch.Tensor:
    """The corner each pixel already sits on, or -1 where it is not on a corner.

    Shape:
        x: (N, C, H, W) -> (N, H * W) int64 in [-1, 2**C).
    """
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    on_corner = ((flat == 0) | (flat == 1)).all(dim=1)
    bits = 2 ** torch.arange(c, device=x.device).view(1, c, 1)
    index = (flat.round().long() * bits).sum(dim=1)
    return torch.where(on_corner, index, torch.full_like(index, -1))


def sample_new_corners(
    generator: torch.Generator, current: torch.Tensor, channels: int
) -> torch.Tensor:
    """A random corner for each pixel, uniform over the corners that change it.

    Args:
        current: the corner each pixel sits on (-1: none), from :func:`pixel_corner_index`.

    Shape:
        current: (...) int64 -> (...) int64 in [0, 2**C).
    """
    n_corners = 2**channels
    u = torch.rand(current.shape, generator=generator).to(current.device)
    any_corner = (u * n_corners).long()
    other_corner = (current + 1 + (u * (n_corners - 1)).long()) % n_corners
    return torch.where(current >= 0, other_corner, any_corner)


def sample_positions(
    generator: torch.Generator,
    rows: int,
    n_pixels: int,
    count: int,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """``count`` distinct pixel positions per row, uniformly, avoiding ``exclude``.

    Shape:
        exclude: (rows, e) int64 positions to avoid -> (rows, count) int64 in [0, n_pixels).
    """
    keys = torch.rand((rows, n_pixels), generator=generator)
    if exclude is not None:
        keys = keys.to(exclude.device).scatter(1, exclude, -1.0)
    return keys.topk(count, dim=1).indices


def prune_changed_pixels(state: AttackState, images: torch.Tensor) -> None:
    """Restore changed pixels one at a time while the image stays adversarial.

    Passes over each image's changed pixels in random order until a whole pass
    restores nothing (or the budget ends), so every pixel left is needed: restoring
    any single one makes the image classified correctly (1-minimal). Vectorised over
    images: step ``j`` of a pass tries the ``j``-th changed pixel of every image that
    has one, in one model call. Updates ``state.x_adv`` in place.

    Shape:
        images: (B,) indices of adversarial images to prune.
    """
    while images.numel():
        images = images[_prune_pass(state, images)]


def _prune_pass(state: AttackState, images: torch.Tensor) -> torch.Tensor:
    """One pruning pass; returns which of ``images`` had a pixel restored: (B,) bool."""
    x, x_adv = state.x, state.x_adv
    n, c, h, w = x.shape
    changed = ((x_adv[images] - x[images]).abs() > 0).any(dim=1).flatten(1)
    keys = torch.rand(changed.shape, generator=state.generator).to(x.device)
    order = keys.masked_fill(~changed, -1.0).argsort(dim=1, descending=True)
    counts = changed.sum(dim=1)
    flat_x = x.reshape(n, c, h * w)
    restored = torch.zeros(images.numel(), dtype=torch.bool, device=x.device)
    for j in range(int(counts.max()) if counts.numel() else 0):
        rows = ((counts > j) & (state.remaining(images) >= 1)).nonzero().flatten()
        if rows.numel() == 0:
            break
        owner = images[rows]
        positions = order[rows, j].view(-1, 1)
        values = flat_x[owner].gather(2, positions.view(-1, 1, 1).expand(-1, c, 1)).transpose(1, 2)
        candidates = paste_pixels(x_adv, owner, positions, values)
        scores = state.model.predict(candidates, index=owner.cpu())
        still = is_adversarial(scores, state.y[owner], state.target_of(owner), state.reject_class)
        x_adv[owner[still]] = candidates[still]
        restored[rows[still]] = True
    return restored
