"""A PNG grid of examples: original | adversarial | changed pixels, drawn with Pillow."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pixelguard.errors import ConfigError
from pixelguard.evaluate.attack_run import AttackRun
from pixelguard.files import atomic_write
from pixelguard.metrics.distances import changed_pixels
from pixelguard.report.arrays import attacked_originals
from pixelguard.report.images import to_rgb

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

PANEL = 96
"""Target side of one image panel in output pixels (images are upscaled to about this)."""
GAP = 8
"""Space between the panels of one example."""
CARD_GAP = 28
"""Horizontal space between examples."""
ROW_GAP = 16
"""Vertical space between rows of examples (below the captions)."""
MARGIN = 20
CAPTION_SIZE = 13
TITLE_SIZE = 18
MAX_COLUMNS = 3
"""Examples per row of the grid."""

BACKGROUND = (255, 255, 255)
FRAME = (200, 200, 200)
TEXT = (40, 40, 40)
MUTED = (120, 120, 120)
FOOLED = (192, 32, 32)
CHANGED = (230, 20, 20)


@lru_cache(maxsize=4)
def _font(size: int) -> tuple[Font, str]:
    """A scalable font of ``size`` points and the arrow it can draw."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size), "\u2192"
    except OSError:
        # Pillow's bundled font has no arrow glyph.
        return ImageFont.load_default(size=size), "->"


@dataclass(frozen=True)
class _Layout:
    """Sizes of the grid, derived from the image size and the number of examples."""

    scale: int
    panel_w: int
    panel_h: int
    columns: int
    rows: int
    line: int
    title_h: int

    @property
    def card_w(self) -> int:
        return 3 * self.panel_w + 2 * GAP

    @property
    def card_h(self) -> int:
        return self.panel_h + 6 + self.line

    @property
    def size(self) -> tuple[int, int]:
        width = 2 * MARGIN + self.columns * self.card_w + (self.columns - 1) * CARD_GAP
        height = 2 * MARGIN + self.title_h + self.rows * self.card_h + (self.rows - 1) * ROW_GAP
        return width, height


def _layout(height: int, width: int, count: int) -> _Layout:
    scale = max(1, round(PANEL / max(height, width)))
    columns = max(1, min(MAX_COLUMNS, count))
    rows = max(1, math.ceil(count / columns))
    return _Layout(
        scale=scale,
        panel_w=width * scale,
        panel_h=height * scale,
        columns=columns,
        rows=rows,
        line=CAPTION_SIZE + 5,
        title_h=TITLE_SIZE + CAPTION_SIZE + 26,
    )


def grid_size(image_shape: Sequence[int], count: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of the grid for ``count`` examples of ``(C, H, W)`` images."""
    return _layout(int(image_shape[-2]), int(image_shape[-1]), count).size


def _to_rgb(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] with C in {1, 3} -> (H, W, 3) uint8."""
    return to_rgb(image.detach().cpu().numpy())


def _difference(image: torch.Tensor, changed: torch.Tensor) -> np.ndarray:
    """A faded grey copy of ``image`` with the ``changed`` (H, W) pixels in red."""
    grey = _to_rgb(image).astype(np.float32).mean(axis=2, keepdims=True)
    faded = np.repeat(150 + grey * (90 / 255), 3, axis=2).round().astype(np.uint8)
    faded[changed.cpu().numpy()] = CHANGED
    return faded


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Font, width: int) -> str:
    """``text``, shortened with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "\u2026", font=font) > width:
        text = text[:-1]
    return text + "\u2026"


def _pixels_caption(count: int) -> str:
    return f"{count} pixel" if count == 1 else f"{count} pixels"


def _title(run: AttackRun) -> tuple[str, str]:
    result = run.result
    pixels = result.params.get("pixels")
    budget = f" \u00b7 up to {_pixels_caption(int(pixels))}" if isinstance(pixels, int) else ""
    aim = f" \u00b7 target {run.class_name(run.target)}" if run.target is not None else ""
    rate = f"{run.n_success} of {run.n_attacked} fooled ({run.success_rate:.0%})"
    heading = f"{result.attack}{budget}{aim} \u00b7 {rate}"
    legend = "original  |  adversarial  |  changed pixels (red)"
    return heading, legend


def _order(run: AttackRun, max_examples: int) -> list[int]:
    """Positions in the run of the examples to show: successes first, then failures."""
    success = run.result.success.cpu()
    order = torch.cat([success.nonzero().flatten(), (~success).nonzero().flatten()])
    return order[:max_examples].tolist()


def write_examples_png(
    path: str | Path,
    run: AttackRun,
    x: torch.Tensor,
    class_names: Sequence[str] | None = None,
    max_examples: int = 12,
) -> Path:
    """Draw a grid of examples from ``run`` and save it as a PNG.

    Each example shows the original (captioned with its true class and the model's
    confidence), the adversarial image (the new prediction and its confidence, or
    "not fooled") and a faded grey copy with the changed pixels in red (captioned
    with how many changed). Successes come first. Images are upscaled with
    nearest-neighbour to about 96 pixels a side so single pixels stay crisp.

    Args:
        path: the PNG to write (atomically).
        run: the attack run.
        x: the images of the run's whole dataset.
        class_names: names for captions (default: the run's, else class numbers).
        max_examples: the most examples to draw.

    Returns:
        The path written.

    Shape:
        x: (N, C, H, W) float32 in [0, 1] with C in {1, 3}.

    Raises:
        ConfigError: ``max_examples`` below 1.
        ShapeError: ``x`` is not the run's dataset.
    """
    if max_examples < 1:
        raise ConfigError(f"max_examples must be at least 1, got {max_examples}")
    originals = attacked_originals(run, x)
    result = run.result
    chosen = _order(run, max_examples)
    names = list(class_names) if class_names is not None else None

    def name(label: int) -> str:
        if names is not None and 0 <= label < len(names):
            return names[label]
        return run.class_name(label)

    _, _, h, w = result.x_adv.shape
    layout = _layout(h, w, len(chosen))
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    title_font, _ = _font(TITLE_SIZE)
    font, arrow = _font(CAPTION_SIZE)
    heading, legend = _title(run)
    text_width = layout.size[0] - 2 * MARGIN
    draw.text(
        (MARGIN, MARGIN), _fit(draw, heading, title_font, text_width), font=title_font, fill=TEXT
    )
    draw.text(
        (MARGIN, MARGIN + TITLE_SIZE + 8),
        _fit(draw, legend, font, text_width),
        font=font,
        fill=MUTED,
    )
    if not chosen:
        idle = _fit(draw, f"no images were attacked: {run.idle_reason()}", font, text_width)
        draw.text((MARGIN, MARGIN + layout.title_h), idle, font=font, fill=MUTED)

    changed = changed_pixels(originals, result.x_adv.to(originals.device))
    for slot, i in enumerate(chosen):
        row, column = divmod(slot, layout.columns)
        left = MARGIN + column * (layout.card_w + CARD_GAP)
        top = MARGIN + layout.title_h + row * (layout.card_h + ROW_GAP)
        fooled = bool(result.success[i])
        panels = [
            _to_rgb(originals[i]),
            _to_rgb(result.x_adv[i]),
            _difference(originals[i], changed[i] if fooled else torch.zeros_like(changed[i])),
        ]
        label, after = int(result.y[i]), int(result.pred_after[i])
        captions = [
            (f"true {name(label)} ({float(result.conf_before[i]):.2f})", TEXT),
            (f"{arrow} {name(after)} ({float(result.conf_after[i]):.2f})", FOOLED)
            if fooled
            else ("not fooled", MUTED),
            (_pixels_caption(int(result.l0_pixels[i])), TEXT) if fooled else ("unchanged", MUTED),
        ]
        for p, (pixels, (caption, colour)) in enumerate(zip(panels, captions, strict=True)):
            x0 = left + p * (layout.panel_w + GAP)
            image = Image.fromarray(pixels).resize(
                (layout.panel_w, layout.panel_h), Image.Resampling.NEAREST
            )
            canvas.paste(image, (x0, top))
            draw.rectangle(
                (x0 - 1, top - 1, x0 + layout.panel_w, top + layout.panel_h), outline=FRAME
            )
            text = _fit(draw, caption, font, layout.panel_w + GAP)
            draw.text((x0, top + layout.panel_h + 6), text, font=font, fill=colour)
    return atomic_write(path, lambda handle: canvas.save(handle, format="PNG"))
