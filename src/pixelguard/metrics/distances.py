"""Per-image distances between clean and perturbed batches.

L0 is ambiguous in the field; pixelguard names both: ``l0_pixels`` counts pixel
positions changed in any channel (what pixel budgets count), ``l0_features`` counts
changed scalar entries (what foolbox calls L0).
"""

from __future__ import annotations

import torch

DEFAULT_TOLERANCE = 1e-6
"""Changes at or below this size are not counted as changes by the L0 measures."""


def changed_pixels(
    x: torch.Tensor, x_adv: torch.Tensor, tol: float = DEFAULT_TOLERANCE
) -> torch.Tensor:
    """Mask of pixel positions changed in any channel.

    Shape:
        x, x_adv: (N, C, H, W) -> (N, H, W) bool.
    """
    return ((x_adv - x).abs() > tol).any(dim=1)


def l0_pixels(x: torch.Tensor, x_adv: torch.Tensor, tol: float = DEFAULT_TOLERANCE) -> torch.Tensor:
    """Number of pixel positions changed in any channel, per image: (N,) int64."""
    return changed_pixels(x, x_adv, tol).flatten(1).sum(dim=1)


def l0_features(
    x: torch.Tensor, x_adv: torch.Tensor, tol: float = DEFAULT_TOLERANCE
) -> torch.Tensor:
    """Number of scalar entries (pixel x channel) changed, per image: (N,) int64."""
    return ((x_adv - x).abs() > tol).flatten(1).sum(dim=1)


def l2(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the perturbation, per image: (N,) float32."""
    return (x_adv - x).flatten(1).norm(p=2, dim=1)


def linf(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Largest absolute change of any entry, per image: (N,) float32."""
    if x.shape[0] == 0:
        return torch.zeros(0)
    return (x_adv - x).flatten(1).abs().amax(dim=1)
