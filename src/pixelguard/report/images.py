"""Images for reports: canonical arrays to RGB, a magnified difference map, PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

BRIGHTER = np.array([214, 39, 40], dtype=np.float32)
"""Colour of a value the attack raised (red)."""
DARKER = np.array([31, 119, 180], dtype=np.float32)
"""Colour of a value the attack lowered (blue)."""
MIN_STRENGTH = 0.35
"""Least colour strength of a changed pixel, so the smallest change still shows."""
BACKDROP_INK = 60
"""How dark the original's brightest values are drawn under the difference colours."""


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A canonical image as RGB bytes; one channel is repeated, other counts are averaged.

    Shape:
        image: (C, H, W) in [0, 1] -> (H, W, 3) uint8.
    """
    array = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    elif array.shape[0] != 3:
        array = np.repeat(array.mean(axis=0, keepdims=True), 3, axis=0)
    return (array.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def difference_rgb(original: np.ndarray, adversarial: np.ndarray) -> tuple[np.ndarray, float]:
    """The change an attack made, magnified: red where it brightened, blue where it darkened.

    Each pixel's change is its largest per-channel change (with its sign), scaled so
    that the largest change in the image has full colour; every changed pixel gets at
    least :data:`MIN_STRENGTH`, so a single changed pixel is always visible. Unchanged
    pixels show a faint grey copy of the original, for orientation.

    Returns:
        The RGB map and the magnification (1 / the largest change; 1.0 when unchanged).

    Shape:
        original, adversarial: (C, H, W) in [0, 1] -> (H, W, 3) uint8.
    """
    delta = np.asarray(adversarial, dtype=np.float32) - np.asarray(original, dtype=np.float32)
    strongest = np.take_along_axis(delta, np.abs(delta).argmax(axis=0)[None], axis=0)[0]
    grey = to_rgb(original).astype(np.float32).mean(axis=2, keepdims=True) / 255
    backdrop = np.repeat(255 - BACKDROP_INK * grey, 3, axis=2)
    largest = float(np.abs(strongest).max())
    if largest == 0:
        return backdrop.round().astype(np.uint8), 1.0
    strength = np.where(
        strongest != 0, MIN_STRENGTH + (1 - MIN_STRENGTH) * np.abs(strongest) / largest, 0
    )
    colour = np.where((strongest > 0)[..., None], BRIGHTER, DARKER)
    mixed = backdrop * (1 - strength[..., None]) + colour * strength[..., None]
    return mixed.round().astype(np.uint8), 1 / largest


def upscale(rgb: np.ndarray, side: int) -> np.ndarray:
    """``rgb`` enlarged by a whole factor with nearest neighbour, to about ``side`` pixels.

    Images already ``side`` pixels or larger are kept as they are.

    Shape:
        rgb: (H, W, 3) -> (H * f, W * f, 3).
    """
    factor = max(1, round(side / max(rgb.shape[:2])))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1)


def png_data_uri(rgb: np.ndarray) -> str:
    """``rgb`` as a ``data:image/png;base64,...`` URI.

    Shape:
        rgb: (H, W, 3) uint8.
    """
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
