"""Vectorised primitives shared by the population-based pixel attacks.

Every function works on whole batches (images x candidates) at once; none loops
over images or candidates in Python. Random numbers are drawn on the CPU from the
attack's own generator and then moved, so CPU and GPU runs agree.
"""

from __future__ import annotations

import torch

from pixelguard.models.base import OutputKind, log_probabilities


def paste_pixels(images: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Candidate images: ``m`` copies of each image with the given pixels overwritten.

    Args:
        images: the images the candidates perturb.
        positions: flat pixel index ``row * W + col`` of each changed pixel.
        values: new value of each changed pixel, per channel.

    Shape:
        images: (R, C, H, W); positions: (R, m, k) int64; values: (R, m, k, C)
        -> (R * m, C, H, W), candidate ``j`` of image ``i`` at row ``i * m + j``.
    """
    r, c, h, w = images.shape
    m, k = positions.shape[1], positions.shape[2]
    out = images.reshape(r, c, h * w).repeat_interleave(m, dim=0)
    index = positions.reshape(r * m, 1, k).expand(r * m, c, k)
    out.scatter_(2, index, values.reshape(r * m, k, c).transpose(1, 2).to(out.dtype))
    return out.view(r * m, c, h, w)


def distinct_indices(
    generator: torch.Generator, rows: int, pool: int, count: int
) -> torch.Tensor:
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


def adversarial_loss(
    scores: torch.Tensor, output: OutputKind, label: torch.Tensor, target: torch.Tensor | None
) -> torch.Tensor:
    """Loss to minimise, negative exactly when the candidate is adversarial (up to ties).

    Untargeted: the log-probability margin ``log p_y - max_{j != y} log p_j``.
    Targeted: ``max_{j != t} log p_j - log p_t``. Log-probabilities do not saturate
    the way probabilities do for confident models, so the search keeps a gradient
    of improvement where ``p_y`` rounds to 1.

    Shape:
        scores: (M, K); label, target: (M,) -> (M,) float32.
    """
    logp = log_probabilities(scores, output)
    cls = label if target is None else target
    own = logp.gather(1, cls.view(-1, 1)).squeeze(1)
    others = logp.scatter(1, cls.view(-1, 1), float("-inf")).amax(dim=1)
    return own - others if target is None else others - own


def is_adversarial(scores: torch.Tensor, label: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Whether each row's top class fools the model: (M, K) scores -> (M,) bool."""
    pred = scores.argmax(dim=1)
    return pred != label if target is None else pred == target
