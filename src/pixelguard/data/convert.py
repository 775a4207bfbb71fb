"""Conversion of NumPy image and label arrays into the canonical tensors.

Every loader ends here, so layout and value-range detection happen in one place.
Layout: 3-D arrays are grey ``(N, H, W)``; 4-D arrays are ``NCHW`` or ``NHWC``,
told apart by which axis holds 1 or 3 channels (see :func:`to_canonical`).
Value range: ``uint8`` is 0..255; other integers and floats are judged by their
values unless ``value_range`` says which scale they use.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pixelguard.checks import check_labels
from pixelguard.errors import ConfigError, DataError, RangeError, ShapeError

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "nchw", "nhwc")
VALUE_RANGES = ("auto", "0-1", "0-255")
_CHANNELS = (1, 3)


def check_layout(layout: str) -> str:
    """Return ``layout`` if it is one of :data:`LAYOUTS`, else raise :class:`ConfigError`."""
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    return layout


def check_value_range(value_range: str) -> str:
    """Return ``value_range`` if it is one of :data:`VALUE_RANGES`, else raise."""
    if value_range not in VALUE_RANGES:
        raise ConfigError(
            f"value_range must be one of {', '.join(VALUE_RANGES)}; got {value_range!r}"
        )
    return value_range


def _detect_layout(shape: tuple[int, ...], name: str) -> str:
    first, last = shape[1] in _CHANNELS, shape[3] in _CHANNELS
    if first and not last:
        return "nchw"
    if last and not first:
        return "nhwc"
    if not first:
        raise ShapeError(
            f"{name}: cannot find the channel axis of shape {shape}; expected 1 or 3 "
            "channels first (N, C, H, W) or last (N, H, W, C)"
        )
    guess = "nchw" if shape[2] == shape[3] and shape[1] != shape[2] else "nhwc"
    logger.warning(
        "%s: shape %s could be NCHW or NHWC; reading it as %s (pass layout= to choose)",
        name,
        shape,
        guess.upper(),
    )
    return guess


def _scale(array: np.ndarray, value_range: str, name: str) -> float:
    """The divisor that brings ``array`` into [0, 1], after checking its values."""
    if array.size == 0:
        return 255.0 if array.dtype == np.uint8 or value_range == "0-255" else 1.0
    lo, hi = array.min().item(), array.max().item()
    if value_range == "auto":
        if array.dtype == np.uint8:
            return 255.0
        if lo >= 0 and hi <= (255 if array.dtype.kind in "iu" else 1):
            return 255.0 if array.dtype.kind in "iu" else 1.0
        if array.dtype.kind == "f" and lo >= 0 and hi <= 255:
            logger.warning(
                "%s: float pixels lie in [%g, %g]; reading them as 0..255 "
                "(pass value_range='0-255' or '0-1' to choose)",
                name,
                lo,
                hi,
            )
            return 255.0
        raise RangeError(
            f"{name}: pixel values lie in [{lo:g}, {hi:g}]; expected 0..1 floats or 0..255"
        )
    top = 1.0 if value_range == "0-1" else 255.0
    if lo < 0 or hi > top:
        raise RangeError(
            f"{name}: pixel values lie in [{lo:g}, {hi:g}] but value_range={value_range!r} "
            f"expects [0, {top:g}]"
        )
    return top


def to_canonical(
    array: np.ndarray | torch.Tensor,
    *,
    layout: str = "auto",
    value_range: str = "auto",
    name: str = "images",
) -> torch.Tensor:
    """Convert an image array to the canonical batch.

    Layout ``"auto"`` reads 4-D arrays as NCHW when only axis 1 holds 1 or 3
    channels, as NHWC when only axis 3 does; when both do (an image 1 or 3 pixels
    wide or high), square ``H == W`` in NCHW decides, else NHWC, with a logged
    warning. 3-D arrays are always grey ``(N, H, W)``. Value range ``"auto"``:
    ``uint8`` and other integers up to 255 are divided by 255; floats in [0, 1] are
    kept; floats in [0, 255] are divided by 255 with a logged warning.

    Args:
        array: the images, any real integer or float dtype.
        layout: ``"auto"``, ``"nchw"`` or ``"nhwc"``.
        value_range: ``"auto"``, ``"0-1"`` or ``"0-255"``.
        name: what the array is (a path), for error messages.

    Returns:
        A contiguous float32 tensor in [0, 1].

    Shape:
        array: (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}
        -> (N, C, H, W) float32 in [0, 1].

    Raises:
        DataError: bool, complex, object or other non-numeric dtype.
        ShapeError: not 3-D or 4-D, or no axis with 1 or 3 channels where expected.
        RangeError: NaN or infinite values, or values outside the expected range.
        ConfigError: unknown ``layout`` or ``value_range``.

    Example:
        >>> to_canonical(np.full((2, 4, 4, 3), 255, dtype=np.uint8)).shape
        torch.Size([2, 3, 4, 4])
    """
    check_layout(layout)
    check_value_range(value_range)
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise DataError(
            f"{name}: pixel dtype {array.dtype} is not supported; expected integers or floats"
        )
    if array.ndim == 3:
        array = array[:, None]
        layout = "nchw"
    elif array.ndim != 4:
        raise ShapeError(
            f"{name}: expected images of shape (N, H, W), (N, C, H, W) or (N, H, W, C), "
            f"got shape {array.shape}"
        )
    if layout == "auto":
        layout = _detect_layout(array.shape, name)
    channel_axis = 1 if layout == "nchw" else 3
    if array.shape[channel_axis] not in _CHANNELS:
        raise ShapeError(
            f"{name}: layout {layout.upper()} puts {array.shape[channel_axis]} channels "
            f"on axis {channel_axis} of shape {array.shape}; expected 1 or 3"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RangeError(f"{name}: contains NaN or infinite pixel values")
    divisor = _scale(array, value_range, name)
    if layout == "nhwc":
        array = array.transpose(0, 3, 1, 2)
    out = array.astype(np.float32, order="C")
    if divisor != 1.0:
        out /= np.float32(divisor)
    return torch.from_numpy(out)


def to_labels(array: np.ndarray | list[int], n: int, *, name: str = "labels") -> torch.Tensor:
    """Convert class labels to an int64 tensor, checking them against ``n`` images.

    Args:
        array: integer labels, or floats holding whole numbers; ``(N, 1)`` is accepted.
        n: the number of images the labels belong to.
        name: what the labels are (a path), for error messages.

    Returns:
        The labels as int64.

    Shape:
        array: (N,) or (N, 1) -> (N,) int64.

    Raises:
        ShapeError: not one label per image.
        RangeError: not whole numbers, or negative.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "iuf":
        raise RangeError(f"{name}: labels must be integers, got dtype {array.dtype}")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ShapeError(f"{name}: labels must be 1-D, got shape {array.shape}")
    if array.shape[0] != n:
        raise ShapeError(f"{name}: {array.shape[0]} labels for {n} images; expected one each")
    if array.dtype.kind == "f" and not (np.isfinite(array) & (array == np.round(array))).all():
        raise RangeError(f"{name}: labels must be whole numbers, got non-integer values")
    if array.size and array.min() < 0:
        raise RangeError(f"{name}: labels must be >= 0, found {array.min().item():g}")
    if array.size and array.max() > np.iinfo(np.int64).max:
        raise RangeError(f"{name}: label {array.max().item()} is too large")
    return check_labels(torch.from_numpy(array.astype(np.int64)), n, name=name)
