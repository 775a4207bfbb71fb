"""Confidence intervals for rates measured on a finite number of images."""

from __future__ import annotations

import torch

from pixelguard.errors import ConfigError


def clopper_pearson_lower(successes: torch.Tensor, trials: int, alpha: float) -> torch.Tensor:
    """One-sided Clopper-Pearson lower bound: ``P(p >= bound) >= 1 - alpha``.

    Shape:
        successes: (N,) int in [0, trials] -> (N,) float64; 0 where there are none.
    """
    from scipy.stats import beta

    counts = successes.detach().cpu().double().numpy()
    bound = beta.ppf(alpha, counts, trials - counts + 1)
    return torch.from_numpy(bound).nan_to_num(0.0).clamp(0.0, 1.0)


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson (exact binomial) interval for a rate seen as
    ``successes`` of ``trials``.

    It covers the true rate with probability at least ``confidence``. Each side is a
    one-sided :func:`clopper_pearson_lower` bound at
    ``(1 - confidence) / 2``; the upper one is 1 minus the lower bound of the
    complementary rate. The lower bound is 0.0 with no successes, the upper 1.0
    with nothing but successes.

    Raises:
        ConfigError: ``trials`` below 1, ``successes`` outside ``[0, trials]``, or
            ``confidence`` outside (0, 1).

    Example:
        >>> [round(bound, 4) for bound in binomial_interval(5, 100)]
        [0.0164, 0.1128]
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ConfigError(
            f"need 0 <= successes <= trials and trials >= 1, got {successes} of {trials}"
        )
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must lie in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    counts = torch.tensor([successes, trials - successes])
    lower, complement = clopper_pearson_lower(counts, trials, alpha).tolist()
    return lower, 1.0 - complement
