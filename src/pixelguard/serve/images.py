"""Decoding the images of a request: base64 PNG or JPEG, strictly checked, bombs refused.

An image is checked against the model's input shape before it is decoded: ``Image.open``
reads only the header, so a decompression bomb (a small file that declares a huge
image) is refused by its declared size, before any pixel is decompressed.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

FORMATS = ("PNG", "JPEG")
MODES = {1: "L", 3: "RGB"}
"""The PIL mode a model of 1 or 3 channels takes."""


class ImageRejected(ValueError):
    """An image of a request cannot be used: its message is the one-line reason."""


def decode_base64(text: object, where: str) -> bytes:
    """The bytes of a base64 string (standard alphabet, padding optional)."""
    if not isinstance(text, str) or not text:
        raise ImageRejected(f"{where}: expected a base64 string of a PNG or JPEG file")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejected(f"{where}: not valid base64 ({exc})") from None


def decode_image(
    data: bytes, input_shape: tuple[int, int, int], max_pixels: int, where: str
) -> np.ndarray:
    """The image in ``data`` as uint8 HxWxC, checked against ``input_shape`` (C,H,W).

    Raises:
        ImageRejected: not a PNG or JPEG file, a broken one, more than ``max_pixels``
            pixels, another size than the model's, or another mode than grey (C=1) or
            RGB (C=3).
    """
    channels, height, width = input_shape
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:
        raise ImageRejected(f"{where}: image too large (decompression bomb)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"{where}: not a readable PNG or JPEG file ({exc})") from None
    with image:
        w, h = image.size
        if w * h > max_pixels:
            raise ImageRejected(f"{where}: {w}x{h} image has more than {max_pixels} pixels")
        if (w, h) != (width, height):
            raise ImageRejected(
                f"{where}: image is {w}x{h}; this model takes {width}x{height} images"
            )
        mode = MODES.get(channels)
        if image.mode != mode:
            wanted = (
                f"{mode} ({channels} channel{'s' if channels > 1 else ''})"
                if mode
                else (f"{channels}-channel")
            )
            raise ImageRejected(f"{where}: image mode is {image.mode}; this model takes {wanted}")
        try:
            image.load()
        except Image.DecompressionBombError:
            raise ImageRejected(f"{where}: image too large (decompression bomb)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(f"{where}: broken {image.format} file ({exc})") from None
        pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels)
