"""Validation of the one image convention: float32, [0, 1], NCHW.

These run at the edges (loaders, adapters, attack entry points) and raise typed
errors with the offending values, never ``assert``.
"""

from __future__ import annotations

import torch

from pixelguard.errors import RangeError, ShapeError


def check_images(x: torch.Tensor, *, name: str = "x") -> torch.Tensor:
    """Check that ``x`` is a canonical image batch and return it.

    Shape:
        x: (N, C, H, W) float32 in [0, 1], finite.

    Raises:
        ShapeError: not a 4-D tensor, or an empty dimension.
        RangeError: wrong dtype, NaN/inf, or values outside [0, 1].
    """
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ShapeError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if min(x.shape[1:]) == 0:
        raise ShapeError(f"{name} has an empty dimension: {tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise RangeError(f"{name} must be float32 in [0, 1], got dtype {x.dtype}")
    if x.numel() == 0:
        return x
    # One pass: NaN fails both comparisons and infinities fall outside [0, 1].
    lo_t, hi_t = torch.aminmax(x)
    lo, hi = float(lo_t), float(hi_t)
    if not (lo >= 0.0 and hi <= 1.0):
        if torch.isnan(x).any():
            raise RangeError(f"{name} contains NaN values")
        raise RangeError(f"{name} must lie in [0, 1], got min {lo:g}, max {hi:g}")
    return x


def check_labels(
    y: torch.Tensor, n: int, num_classes: int | None = None, *, name: str = "y"
) -> torch.Tensor:
    """Check integer class labels for ``n`` images and return them as int64.

    Shape:
        y: (N,) integer, 0 <= y < num_classes.

    Raises:
        ShapeError: not 1-D or not ``n`` long.
        RangeError: not integer, negative, or >= ``num_classes``.
    """
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.dim() != 1:
        raise ShapeError(f"{name} must be a 1-D array of labels, got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ShapeError(f"{name} has {y.shape[0]} labels for {n} images")
    if y.dtype.is_floating_point:
        if not torch.equal(y, y.round()):
            raise RangeError(f"{name} must hold integer class labels, got non-integer values")
    elif y.dtype == torch.bool or y.dtype.is_complex:
        raise RangeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    y = y.to(torch.int64)
    if n and int(y.min()) < 0:
        raise RangeError(f"{name} contains a negative label: {int(y.min())}")
    if n and num_classes is not None and int(y.max()) >= num_classes:
        raise RangeError(
            f"{name} contains label {int(y.max())} but the model has {num_classes} classes"
        )
    return y
