"""Pixel triggers: the fixed patterns a backdoor is keyed to, and their text specs.

A trigger is a set of pixel positions and the value each channel takes there. The
same trigger stamps the poisoned training images and, at inference, the inputs an
attacker wants sent to the target class. Three shapes, after BadNets (Gu,
Dolan-Gavitt, Garg 2017):

- ``square:S@corner``: an S x S patch of one value (default white) in a corner;
- ``checker:S@corner``: an S x S checkerboard of white and black in a corner;
- ``pixels:K,seed=N``: K scattered positions drawn with the seed, each channel
  black or white at random (a corner of the colour cube, the most visible value).

Corners are ``top-left``, ``top-right``, ``bottom-left`` and ``bottom-right``
(default); ``margin=M`` sets the distance from the edges (default 1); ``value=V``
sets the square's value in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pixelguard.checks import check_images
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.parsing import parse_value

TRIGGER_KINDS = ("square", "checker", "pixels")
"""The trigger shapes a spec may name."""

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
"""Where a square or checker patch may sit."""

_SPEC_HELP = "expected square:S[@corner], checker:S[@corner] or pixels:K[,seed=N]"


@dataclass(frozen=True, eq=False)
class Trigger:
    """A fixed pixel pattern: where it sits and the value of each channel there.

    Attributes:
        spec: the text it was parsed from, for reports.
        mask: the trigger's pixel positions.
        values: each channel's value at those positions (ignored elsewhere).

    Shape:
        mask: (H, W) bool; values: (C, H, W) float32 in [0, 1].
    """

    spec: str
    mask: torch.Tensor
    values: torch.Tensor

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images the trigger fits."""
        c, h, w = self.values.shape
        return int(c), int(h), int(w)

    @property
    def n_pixels(self) -> int:
        """How many pixel positions the trigger sets."""
        return int(self.mask.sum())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of ``x`` with the trigger stamped on every image.

        Shape:
            x: (N, C, H, W) float32 in [0, 1] -> (N, C, H, W).

        Raises:
            ShapeError: images of another shape than the trigger's.
        """
        check_images(x)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ShapeError(
                f"trigger {self.spec!r} is for images of shape {self.image_shape}, "
                f"got {tuple(x.shape[1:])}"
            )
        mask = self.mask.to(x.device)
        return torch.where(mask, self.values.to(x.device, x.dtype), x)

    def to_dict(self) -> dict[str, Any]:
        """The spec and the positions it sets, for reports."""
        rows, cols = self.mask.nonzero(as_tuple=True)
        return {
            "spec": self.spec,
            "n_pixels": self.n_pixels,
            "positions": [[int(r), int(c)] for r, c in zip(rows, cols, strict=True)],
        }


def parse_trigger(spec: str, image_shape: tuple[int, int, int]) -> Trigger:
    """The trigger a spec names, for images of ``image_shape``.

    Args:
        spec: ``"square:3@bottom-right"``, ``"checker:4@top-left,margin=0"``,
            ``"pixels:4,seed=1"``, ``"square:2,value=0.5"``.
        image_shape: ``(C, H, W)`` of the images it will stamp.

    Raises:
        ConfigError: a spec that does not parse, or a trigger that does not fit
            the image.

    Example:
        >>> parse_trigger("square:3@bottom-right", (1, 28, 28)).n_pixels
        9
    """
    kind, size, corner, settings = _split_spec(spec)
    c, h, w = image_shape
    if kind == "pixels":
        unknown = set(settings) - {"seed"}
        _refuse_unknown(spec, unknown)
        seed = _integer(spec, "seed", settings.get("seed", 0), low=None)
        if size > h * w:
            raise ConfigError(
                f"trigger {spec!r}: {size} pixels do not fit a {h}x{w} image ({h * w} pixels)"
            )
        generator = torch.Generator().manual_seed(seed)
        positions = torch.randperm(h * w, generator=generator)[:size]
        mask = torch.zeros(h * w, dtype=torch.bool)
        mask[positions] = True
        values = torch.randint(0, 2, (c, h, w), generator=generator).to(torch.float32)
        return Trigger(spec, mask.view(h, w), values)
    _refuse_unknown(spec, set(settings) - {"margin", "value"})
    margin = _integer(spec, "margin", settings.get("margin", 1), low=0)
    if size + margin > min(h, w):
        raise ConfigError(
            f"trigger {spec!r}: a {size}x{size} patch {margin} pixel(s) from the edge does "
            f"not fit a {h}x{w} image"
        )
    top = margin if corner.startswith("top") else h - margin - size
    left = margin if corner.endswith("left") else w - margin - size
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[top : top + size, left : left + size] = True
    if kind == "square":
        value = settings.get("value", 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"trigger {spec!r}: value must be a number in [0, 1], got {value!r}")
        values = torch.full((c, h, w), float(value))
    else:
        if "value" in settings:
            raise ConfigError(f"trigger {spec!r}: a checker is white and black; value= is not used")
        rows = torch.arange(h).view(h, 1) - top
        cols = torch.arange(w).view(1, w) - left
        values = ((rows + cols) % 2 == 0).to(torch.float32).expand(c, h, w).clone()
    return Trigger(spec, mask, values)


def _split_spec(spec: str) -> tuple[str, int, str, dict[str, Any]]:
    """``kind``, size, corner and ``key=value`` settings of a spec."""
    head, *rest = [part.strip() for part in spec.split(",")]
    kind, sep, body = head.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in TRIGGER_KINDS:
        raise ConfigError(f"trigger {spec!r} does not parse; {_SPEC_HELP}")
    size_text, at, corner = body.partition("@")
    corner = corner.strip().lower() if at else "bottom-right"
    if kind == "pixels" and at:
        raise ConfigError(f"trigger {spec!r}: scattered pixels have no corner; {_SPEC_HELP}")
    if corner not in CORNERS:
        raise ConfigError(
            f"trigger {spec!r}: unknown corner {corner!r}; expected one of {', '.join(CORNERS)}"
        )
    size = _integer(spec, "size", parse_value(size_text.strip()), low=1)
    settings: dict[str, Any] = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"trigger {spec!r}: expected key=value after a comma, got {item!r}")
        settings[key.strip()] = parse_value(value.strip())
    return kind, size, corner, settings


def _integer(spec: str, name: str, value: Any, *, low: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        bound = "" if low is None else f" of at least {low}"
        raise ConfigError(f"trigger {spec!r}: {name} must be a whole number{bound}, got {value!r}")
    return value


def _refuse_unknown(spec: str, unknown: set[str]) -> None:
    if unknown:
        raise ConfigError(f"trigger {spec!r}: unknown setting(s) {', '.join(sorted(unknown))}")
