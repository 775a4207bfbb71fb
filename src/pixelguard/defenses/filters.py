"""Image transforms the defenses share: median, outlier removal, bit depth, JPEG.

Functional and vectorised over the batch (JPEG excepted: Pillow encodes one image at
a time). Preprocessing wrappers, feature squeezing and the isolated-pixel detector
all call these, so a defended model and a detector see exactly the same squeeze.

Shape:
    every function: x (N, C, H, W) float32 in [0, 1] -> (N, C, H, W) float32 in [0, 1],
    except :func:`median_deviation`, which returns (N, H, W).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from pixelguard.errors import ConfigError, ShapeError

Squeezer = Callable[[torch.Tensor], torch.Tensor]
"""An image-to-image transform on canonical batches."""


def local_median(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """The median of every pixel's ``size x size`` neighbourhood, per channel.

    Borders are mirrored (``reflect`` padding, the edge pixel not repeated). For an
    even ``size`` the window reaches one pixel further right and down than left and
    up, and the lower of the two middle values is taken. Differentiable: the gradient
    of each output pixel flows to the one input pixel that was its median.

    Args:
        x: image batch.
        size: side of the square window, at least 2.

    Shape:
        x: (N, C, H, W) -> (N, C, H, W).

    Raises:
        ConfigError: ``size`` below 2.
        ShapeError: the window does not fit the image (``size // 2 >= min(H, W)``).

    Example:
        >>> x = torch.zeros(1, 1, 5, 5)
        >>> x[0, 0, 2, 2] = 1.0
        >>> float(local_median(x, 3).max())
        0.0
    """
    if size < 2:
        raise ConfigError(f"median window size must be at least 2, got {size}")
    n, c, h, w = x.shape
    before, after = (size - 1) // 2, size // 2
    if after >= min(h, w):
        raise ShapeError(f"a {size}x{size} median window does not fit {h}x{w} images")
    padded = F.pad(x, (before, after, before, after), mode="reflect")
    patches = F.unfold(padded, size).view(n, c, size * size, h, w)
    return patches.median(dim=2).values


def median_deviation(x: torch.Tensor, size: int = 3) -> torch.Tensor:
    """How far each pixel lies from its neighbourhood median, worst channel.

    Shape:
        x: (N, C, H, W) -> (N, H, W) in [0, 1].
    """
    return (x - local_median(x, size)).abs().amax(dim=1)


def remove_outliers(x: torch.Tensor, size: int = 3, threshold: float = 0.5) -> torch.Tensor:
    """Replace every pixel that differs from its neighbourhood median by more than
    ``threshold`` in any channel with that median (all channels); keep the rest.

    Shape:
        x: (N, C, H, W) -> (N, C, H, W).
    """
    median = local_median(x, size)
    outlier = ((x - median).abs() > threshold).any(dim=1, keepdim=True)
    return torch.where(outlier, median, x)


def reduce_bit_depth(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Round every value to the nearest of ``2**bits`` evenly spaced levels in [0, 1].

    The gradient of the rounding is zero almost everywhere (autograd's ``round``).

    Shape:
        x: (N, C, H, W) -> (N, C, H, W) with values in ``{0, 1/L, ..., 1}``,
        ``L = 2**bits - 1``.
    """
    levels = float(2**bits - 1)
    return torch.round(x * levels) / levels


def jpeg_compress(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """Encode and decode every image as a JPEG of the given quality, with Pillow.

    Grey (C = 1) images are coded as 8-bit greyscale, RGB (C = 3) as YCbCr with
    Pillow's default 4:2:0 chroma subsampling. Pillow works on one image at a time,
    so this loops over the batch; the result carries no autograd graph.

    Shape:
        x: (N, C, H, W) with C in {1, 3} -> (N, C, H, W), multiples of 1/255.

    Raises:
        ShapeError: C is neither 1 nor 3.
    """
    from PIL import Image

    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ShapeError(f"JPEG compression needs grey or RGB images, got {c} channels")
    pixels = (x.detach() * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if c == 1:
        pixels = pixels[..., 0]
    decoded = np.empty_like(pixels)
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(pixels[i]).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        decoded[i] = np.asarray(Image.open(buffer))
    out = torch.from_numpy(decoded).to(torch.float32).div_(255.0)
    out = out.unsqueeze(1) if c == 1 else out.permute(0, 3, 1, 2)
    return out.contiguous().to(x.device)


_SQUEEZER = re.compile(r"^(median|bits|jpeg)(\d+)$")


def parse_squeezer(name: str) -> Squeezer:
    """Build a squeezer from its short name.

    ``"median3"``: 3x3 median filter (any size >= 2); ``"bits4"``: 4-bit depth
    (1..8); ``"jpeg75"``: JPEG at quality 75 (1..95).

    Raises:
        ConfigError: an unknown name or an out-of-range number.

    Example:
        >>> parse_squeezer("bits1")(torch.full((1, 1, 2, 2), 0.7)).unique().tolist()
        [1.0]
    """
    match = _SQUEEZER.match(name)
    if match is None:
        raise ConfigError(
            f"unknown squeezer {name!r}; use medianK (K >= 2), bitsB (B in 1..8) or jpegQ (Q in 1..95)"
        )
    kind, value = match.group(1), int(match.group(2))
    if kind == "median":
        if value < 2:
            raise ConfigError(f"squeezer {name!r}: the median window must be at least 2")
        return lambda x: local_median(x, value)
    if kind == "bits":
        if not 1 <= value <= 8:
            raise ConfigError(f"squeezer {name!r}: bits must lie in 1..8")
        return lambda x: reduce_bit_depth(x, value)
    if not 1 <= value <= 95:
        raise ConfigError(f"squeezer {name!r}: JPEG quality must lie in 1..95")
    return lambda x: jpeg_compress(x, value)
