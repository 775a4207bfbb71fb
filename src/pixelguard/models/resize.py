"""Attack the image as submitted: a Classifier wrapper that resizes to the model's input.

A deployed model often resizes what it is sent: a 768x768 photo becomes a 224x224
input, so one pixel of the photo is a fraction of a model pixel. :class:`ResizeInput`
puts that preprocessing step in front of a Classifier. Its ``input_shape`` is the
submitted image's shape, so attacks search, perturb and count pixels in the image as
submitted, and the resize (optionally after a centre crop) happens inside ``predict``
and, for differentiable models, inside ``logits``, so gradients reach the submitted
pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F

from pixelguard.checks import check_images
from pixelguard.errors import ConfigError, ModelError
from pixelguard.models.base import Classifier, ClassifierWrapper, Differentiable

RESIZE_MODES = ("bilinear", "bicubic", "area", "nearest", "nearest-exact")
"""Interpolation modes, as :func:`torch.nn.functional.interpolate` names them."""

_SMOOTH_MODES = ("bilinear", "bicubic")
"""Modes that take ``align_corners`` and ``antialias``."""


class ResizeInput(ClassifierWrapper):
    """A Classifier taking images of the submitted size and resizing them for ``model``.

    ``predict`` optionally centre-crops the submitted batch to ``crop``, resizes it to
    ``model.input_shape`` with :func:`torch.nn.functional.interpolate` (pixel-centre
    aligned, ``align_corners=False``, as PIL and torchvision resize), clamps it to
    [0, 1] and calls ``model.predict``. When ``model`` has a ``logits`` method the
    wrapper is :class:`~pixelguard.models.base.Differentiable` too: its ``logits``
    runs the same resize under autograd, so gradient attacks work on the submitted
    image. Number of classes and capabilities are the model's.

    Crop semantics: the ``crop`` region is taken from the submitted image, centred as
    torchvision's ``CenterCrop`` does, and resized once to the model's input. Pixels
    outside it never reach the model. A deployed ``Resize(R)`` then ``CenterCrop(M)``
    pipeline on a square S x S submitted image sees the same region with
    ``crop = (round(M * S / R),) * 2`` (the two pipelines differ only in how the
    interpolation treats the crop's border pixels).

    Args:
        model: the classifier that receives the resized images.
        submitted_shape: ``(C, H, W)`` or ``(H, W)`` of the images as submitted; the
            channels must be the model's (taken from the model when omitted).
        mode: ``"bilinear"``, ``"bicubic"``, ``"area"`` (average over the covered
            pixels), ``"nearest"`` (torch's, which picks the top-left source pixel) or
            ``"nearest-exact"`` (the pixel-centre nearest of PIL and OpenCV).
        antialias: low-pass filter when downsampling; applies to bilinear and bicubic.
        crop: ``(H, W)`` of a centre crop of the submitted image to resize instead of
            the whole image; None resizes the whole image.

    Shape:
        predict: x (N, *submitted_shape) float32 in [0, 1] -> (N, K) float32 scores of
        the model's output kind, without autograd.
        logits: x (N, *submitted_shape) float32 -> (N, K) float32, differentiable with
        respect to x (only when ``model`` has ``logits``).
        resize: x (N, *submitted_shape) -> (N, *model.input_shape) float32 in [0, 1].

    Raises:
        ConfigError: ``model`` is not a Classifier, a size is not positive, the
            submitted channels differ from the model's, an unknown ``mode``, or a
            ``crop`` larger than the submitted image.

    Example:
        >>> from torch import nn
        >>> from pixelguard.models import TorchClassifier
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> small = TorchClassifier(net, (1, 8, 8), output="logits")
        >>> big = ResizeInput(small, (32, 32), mode="area")
        >>> big.input_shape, big.predict(torch.zeros(2, 1, 32, 32)).shape
        ((1, 32, 32), torch.Size([2, 10]))
    """

    def __new__(cls, model: Classifier | None = None, *args: Any, **kwargs: Any) -> ResizeInput:
        """Build a :class:`DifferentiableResizeInput` when ``model`` has ``logits``.

        ``model`` is optional here only so that copying and unpickling, which call
        ``__new__`` without arguments, keep the instance's class.
        """
        if cls is ResizeInput and callable(getattr(model, "logits", None)):
            cls = DifferentiableResizeInput
        return super().__new__(cls)

    def __init__(
        self,
        model: Classifier,
        submitted_shape: Sequence[int],
        *,
        mode: str = "bilinear",
        antialias: bool = True,
        crop: Sequence[int] | None = None,
    ) -> None:
        if not callable(getattr(model, "predict", None)) or not hasattr(model, "input_shape"):
            raise ConfigError(
                f"ResizeInput wraps a pixelguard Classifier, got {type(model).__name__}"
            )
        channels, height, width = (int(v) for v in model.input_shape)
        shape = _positive_sizes(submitted_shape, "submitted_shape", (2, 3))
        if len(shape) == 2:
            shape = (channels, *shape)
        if shape[0] != channels:
            raise ConfigError(
                f"submitted_shape {shape} has {shape[0]} channels but the model takes {channels}"
            )
        if mode not in RESIZE_MODES:
            raise ConfigError(f"mode must be one of {', '.join(RESIZE_MODES)}; got {mode!r}")
        box: tuple[int, int, int, int] | None = None
        if crop is not None:
            crop_h, crop_w = _positive_sizes(crop, "crop", (2,))
            if crop_h > shape[1] or crop_w > shape[2]:
                raise ConfigError(
                    f"crop {(crop_h, crop_w)} is larger than the submitted image "
                    f"{(shape[1], shape[2])}"
                )
            # torchvision's CenterCrop placement
            top = int(round((shape[1] - crop_h) / 2.0))
            left = int(round((shape[2] - crop_w) / 2.0))
            box = (top, left, crop_h, crop_w)
        super().__init__(model)
        self.mode = mode
        self.antialias = bool(antialias)
        self.crop = None if box is None else (box[2], box[3])
        self._shape = (shape[0], shape[1], shape[2])
        self._box = box
        self._target = (height, width)
        self._interpolate_options: dict[str, Any] = (
            {"align_corners": False, "antialias": self.antialias} if mode in _SMOOTH_MODES else {}
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images as submitted."""
        return self._shape

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input for a submitted batch: centre crop, resize, clamp to [0, 1].

        Autograd-safe; returns ``x`` itself when no crop or resize applies.

        Shape:
            x: (N, *input_shape) float32 -> (N, *model.input_shape) float32 in [0, 1].

        Raises:
            ModelError: ``x`` is not shaped like the submitted images.
        """
        if x.dim() != 4 or tuple(x.shape[1:]) != self._shape:
            raise ModelError(
                f"the model takes submitted images of shape {self._shape}, got {tuple(x.shape)[1:]}"
            )
        if self._box is not None:
            top, left, crop_h, crop_w = self._box
            x = x[:, :, top : top + crop_h, left : left + crop_w]
        if tuple(x.shape[2:]) == self._target:
            return x
        out = F.interpolate(x, size=self._target, mode=self.mode, **self._interpolate_options)
        return out.clamp(0.0, 1.0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for a batch of submitted images.

        Shape:
            x: (N, *input_shape) float32 in [0, 1] -> (N, K) float32.

        Raises:
            ShapeError, RangeError: ``x`` is not a canonical image batch.
            ModelError: ``x`` is not shaped like the submitted images.
        """
        check_images(x)
        with torch.no_grad():
            return self.model.predict(self.resize(x))


class DifferentiableResizeInput(ResizeInput):
    """A :class:`ResizeInput` around a model with ``logits``; built by ``ResizeInput``."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for submitted images, differentiable through the resize.

        Shape:
            x: (N, *input_shape) float32 -> (N, K) float32 on the model's terms (see
            its ``logits``), with gradients flowing back to x.

        Raises:
            ModelError: ``x`` is not shaped like the submitted images.
        """
        return cast(Differentiable, self.model).logits(self.resize(x))


def _positive_sizes(values: Sequence[int], what: str, lengths: tuple[int, ...]) -> tuple[int, ...]:
    """``values`` as a tuple of positive ints of one of ``lengths``, or ConfigError."""
    try:
        sizes = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a sequence of sizes, got {values!r}") from exc
    if len(sizes) not in lengths or min(sizes) <= 0 or sizes != tuple(values):
        expected = " or ".join(str(n) for n in lengths)
        raise ConfigError(f"{what} must be {expected} positive integer sizes, got {values!r}")
    return sizes
