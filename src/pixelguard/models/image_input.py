"""The image input of a Keras or TensorFlow model: shape and layout read from its dims.

Keras and TensorFlow record a model's input shape, batch first, channels last or first.
:class:`ImageInput` turns it into pixelguard's ``(C, H, W)`` and the layout to feed, under
the user's own ``input_shape`` and ``layout``, and says what it found and from what.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pixelguard.errors import ConfigError, ModelError
from pixelguard.models.base import InputSpec

CHANNELS = (1, 3, 4)
"""Channel counts that tell where an image's channel axis is."""


class ImageInput:
    """The canonical image shape and layout for a model input of known dims."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        layout: str,
        feed_shape: tuple[int, ...] | None,
        reason: str,
    ) -> None:
        self.shape = shape
        self.layout = layout
        self.feed_shape = feed_shape
        self.reason = reason

    @classmethod
    def detect(
        cls,
        dims: tuple[int | None, ...] | None,
        input_shape: tuple[int, int, int] | None,
        layout: str | None,
        data_format: str,
        open_shape: tuple[int, int, int] | None = None,
    ) -> ImageInput:
        """Read the layout and image shape from ``dims`` (batch first), under the user's.

        Args:
            dims: the model's input shape, batch first, or None when it is unknown.
            input_shape: the user's ``(C, H, W)``, or None.
            layout: the user's layout, or None.
            data_format: ``"channels_last"`` or ``"channels_first"`` for ambiguous dims.
            open_shape: the ``(C, H, W)`` to use where the model leaves the image size
                open and ``input_shape`` is not given (the loader passes the data's).
        """
        given = tuple(input_shape) if input_shape is not None else None
        if dims is None:
            given = given or open_shape
            if given is None:
                raise ConfigError(
                    "the model does not record its input size; pass input_shape=(C, H, W) "
                    "(--input-shape C,H,W) of the images it classifies"
                )
            found = layout or ("nhwc" if data_format == "channels_last" else "nchw")
            how = "as given" if layout else f"Keras's image_data_format {data_format}"
            return cls(given, found, None, f"{found} ({how})")  # type: ignore[arg-type]
        where = f"from the model's input shape {shape_text(dims)}"
        image = dims[1:]
        if len(image) == 3:
            found, why = layout_of(image, data_format)
            chosen = layout or found
            c, h, w = (image[2], image[0], image[1]) if chosen == "nhwc" else image
            shape = settle_shape((c, h, w), given, dims, open_shape)
            reason = f"{chosen} (as given)" if layout else f"{chosen} ({where}{why})"
            return cls(shape, chosen, None, reason)
        if len(image) == 2:
            shape = settle_shape((1, image[0], image[1]), given, dims, open_shape)
            return cls(shape, "nhwc", shape[1:], f"grey images without a channel axis ({where})")
        if len(image) == 1:
            features = image[0]
            if given is None and open_shape is not None:
                given = open_shape
            if given is None:
                side = math.isqrt(features) if features else 0
                if not side or side * side != features:
                    raise ConfigError(
                        f"the model takes vectors of {features or 'any number of'} values "
                        f"({shape_text(dims)}); pass input_shape (C, H, W) of the images"
                    )
                given = (1, side, side)
            elif features is not None and features != math.prod(given):
                raise ModelError(
                    f"the model takes {features} values ({shape_text(dims)}) but images of "
                    f"shape {given} have {math.prod(given)}"
                )
            chosen = layout or "nhwc"
            return cls(given, chosen, (-1,), f"flattened {chosen} images ({where})")  # type: ignore[arg-type]
        raise ModelError(
            f"the model's input shape {shape_text(dims)} is not an image batch "
            "(N, H, W, C), (N, C, H, W), (N, H, W) or (N, features)"
        )


def layout_of(image: tuple[int | None, ...], data_format: str) -> tuple[str, str]:
    """``nhwc``/``nchw`` from where the channel axis is, and why when it is ambiguous."""
    first, last = image[0] in CHANNELS, image[2] in CHANNELS
    if last and not first:
        return "nhwc", ""
    if first and not last:
        return "nchw", ""
    found = "nhwc" if data_format == "channels_last" else "nchw"
    return found, f"; ambiguous, so Keras's image_data_format {data_format}"


def settle_shape(
    found: tuple[int | None, ...],
    given: tuple[int, ...] | None,
    dims: tuple[int | None, ...],
    open_shape: tuple[int, int, int] | None = None,
) -> tuple[int, int, int]:
    """The user's ``input_shape`` checked against the model's, or the model's.

    Where the model leaves a size open, ``open_shape`` (the data's) fills it if it fits.
    """
    fits = open_shape is not None and all(
        f is None or f == o for f, o in zip(found, open_shape, strict=True)
    )
    if given is None and open_shape is not None and fits and None in found:
        return open_shape
    if given is not None:
        if any(f is not None and f != g for f, g in zip(found, given)):
            raise ModelError(
                f"the model takes images of shape {shape_text(found)} (C, H, W; input "
                f"{shape_text(dims)}), but input_shape is {given}"
            )
        return given  # type: ignore[return-value]
    if any(f is None for f in found):
        raise ConfigError(
            f"the model leaves its image size open (input {shape_text(dims)}); "
            "pass input_shape=(C, H, W) (--input-shape C,H,W) of the images it classifies"
        )
    return found  # type: ignore[return-value]


def input_spec(
    layout: str, scale: float, mean: Sequence[float] | None, std: Sequence[float] | None
) -> InputSpec:
    """The :class:`InputSpec` for a layout and the user's scale, mean and std."""
    return InputSpec(
        layout=layout,
        scale=scale,
        mean=tuple(mean) if mean is not None else None,
        std=tuple(std) if std is not None else None,
    )


def shape_text(dims: Sequence[int | None]) -> str:
    """``(None, 28, 28, 1)`` as text, as Keras prints it."""
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def describe_detected(detected: dict[str, str]) -> str:
    """What an adapter detected, on one line."""
    return "; ".join(f"{key} {value}" for key, value in detected.items())
