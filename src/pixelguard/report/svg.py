"""Small inline SVG charts for self-contained HTML reports: line charts and grouped bars.

No plotting library and no script: each function returns one ``<svg>`` element as
text, sized by its ``viewBox`` so it scales with the page. All text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#bab0ac",
)
"""Distinct series colours (Tableau 10)."""

WIDTH = 520
HEIGHT = 300
LEFT, RIGHT, TOP, BOTTOM = 58, 18, 16, 50
"""Plot-area margins inside the viewBox, room for the tick labels and axis titles."""
GRID = "#e4e7ec"
AXIS = "#98a2b3"
INK = "#475467"


@dataclass(frozen=True)
class Axis:
    """One axis of a chart.

    Attributes:
        label: the axis title.
        ticks: where the tick marks and labels go, in data units.
        log: a base-10 logarithmic scale (every value must be positive).
        percent: values are shares in [0, 1], labelled as percentages.
    """

    label: str
    ticks: Sequence[float]
    log: bool = False
    percent: bool = False

    def tick_label(self, value: float) -> str:
        """``0.25`` -> ``"25%"`` on a percent axis; ``10000`` -> ``"10k"``; else ``"%g"``."""
        if self.percent:
            return f"{100 * value:g}%"
        for size, suffix in ((1e6, "M"), (1e3, "k")):
            if abs(value) >= size and (value / size).is_integer():
                return f"{value / size:g}{suffix}"
        return f"{value:g}"


@dataclass(frozen=True)
class Series:
    """One line of a line chart.

    Attributes:
        name: its name, shown in the tooltips.
        points: ``(x, y)`` in data units, in increasing x.
        colour: a CSS colour.
        steps: draw a step function (flat, then up at each point), for cumulative
            shares; otherwise straight segments with a marker per point.
    """

    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    steps: bool = False


PERCENT_AXIS_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def percent_axis(label: str) -> Axis:
    """A 0..100% axis titled ``label``."""
    return Axis(label, PERCENT_AXIS_TICKS, percent=True)


def log_ticks(low: float, high: float) -> list[float]:
    """The powers of ten from the one at or below ``low`` to the one at or above ``high``.

    Both must be positive; equal powers give two ticks, so a log axis always has a span.
    """
    first = math.floor(math.log10(low))
    last = max(math.ceil(math.log10(high)), first + 1)
    return [10.0**p for p in range(first, last + 1)]


class _Scale:
    """Maps data values of an axis onto a pixel interval."""

    def __init__(self, axis: Axis, values: Sequence[float], start: float, end: float) -> None:
        self.log = axis.log
        mapped = [self._transform(v) for v in (*axis.ticks, *values)]
        low, high = min(mapped), max(mapped)
        if high == low:
            low, high = low - 1, high + 1
        self.low, self.high, self.start, self.end = low, high, start, end

    def _transform(self, value: float) -> float:
        return math.log10(value) if self.log else value

    def __call__(self, value: float) -> float:
        share = (self._transform(value) - self.low) / (self.high - self.low)
        return round(self.start + share * (self.end - self.start), 2)


def _text(
    x: float, y: float, text: str, *, anchor: str = "middle", size: int = 12, rotate: bool = False
) -> str:
    turn = f' transform="rotate(-90 {x} {y})"' if rotate else ""
    return (
        f'<text x="{x}" y="{y}" text-anchor="{anchor}" fill="{INK}" font-size="{size}"{turn}>'
        f"{escape(text)}</text>"
    )


def _frame(title: str, y_axis: Axis, y_scale: _Scale, x_title: str) -> list[str]:
    """The opening tag, horizontal grid lines with y labels, and both axis titles."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in y_axis.ticks:
        y = y_scale(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="{GRID}"/>')
        parts.append(_text(LEFT - 8, y + 4, y_axis.tick_label(tick), anchor="end"))
    middle = (TOP + HEIGHT - BOTTOM) / 2
    parts.append(_text(14, middle, y_axis.label, rotate=True))
    parts.append(_text((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 8, x_title))
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}" stroke="{AXIS}"/>'
    )
    return parts


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x: Axis,
    y: Axis,
    reference: tuple[float, str] | None = None,
) -> str:
    """A line chart of ``series``, with an optional dashed horizontal reference line.

    Args:
        series: the lines, drawn in order.
        title: the accessible title (shown as a tooltip by browsers).
        x: the horizontal axis.
        y: the vertical axis.
        reference: ``(y value, label)`` of a dashed line across the plot, e.g. the
            clean accuracy.

    Returns:
        One ``<svg>`` element.
    """
    xs = [px for s in series for px, _ in s.points]
    ys = [py for s in series for _, py in s.points] + ([reference[0]] if reference else [])
    x_scale = _Scale(x, xs, LEFT + 12, WIDTH - RIGHT - 12)
    y_scale = _Scale(y, ys, HEIGHT - BOTTOM, TOP)
    parts = _frame(title, y, y_scale, x.label)
    for tick in x.ticks:
        px = x_scale(tick)
        bottom = HEIGHT - BOTTOM
        parts.append(f'<line x1="{px}" x2="{px}" y1="{bottom}" y2="{bottom + 5}" stroke="{AXIS}"/>')
        parts.append(_text(px, bottom + 19, x.tick_label(tick)))
    if reference is not None:
        ry = y_scale(reference[0])
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ry}" y2="{ry}" stroke="{AXIS}" '
            'stroke-dasharray="5 4"/>'
        )
        parts.append(_text(WIDTH - RIGHT - 4, ry - 6, reference[1], anchor="end"))
    for line in series:
        parts.append(_series_path(line, x, y, x_scale, y_scale))
    parts.append("</svg>")
    return "\n".join(parts)


def _series_path(series: Series, x: Axis, y: Axis, x_scale: _Scale, y_scale: _Scale) -> str:
    if not series.points:
        return ""
    coords = [(x_scale(px), y_scale(py)) for px, py in series.points]
    path = f"M{coords[0][0]} {coords[0][1]}"
    for cx, cy in coords[1:]:
        path += f" H{cx} V{cy}" if series.steps else f" L{cx} {cy}"
    parts = [
        f'<g><path d="{path}" fill="none" stroke="{series.colour}" stroke-width="2.5" '
        'stroke-linejoin="round"/>'
    ]
    if not series.steps:
        for (px, py), (cx, cy) in zip(series.points, coords, strict=True):
            tip = f"{series.name}: {x.tick_label(px)} \u2192 {y.tick_label(py)}"
            parts.append(
                f'<circle cx="{cx}" cy="{cy}" r="4.5" fill="{series.colour}" stroke="#fff" '
                f'stroke-width="1.5"><title>{escape(tip)}</title></circle>'
            )
    parts.append("</g>")
    return "".join(parts)


def grouped_bar_chart(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], str]],
    *,
    title: str,
    x_label: str,
    y: Axis,
) -> str:
    """Bars side by side per group, one per series, each labelled with its value.

    Args:
        groups: the group names along the horizontal axis.
        series: ``(name, one value per group (None: no bar), colour)``.
        title: the accessible title.
        x_label: the horizontal axis title.
        y: the vertical axis (its ticks set the range).

    Returns:
        One ``<svg>`` element.
    """
    values = [v for _, row, _ in series for v in row if v is not None]
    y_scale = _Scale(y, values, HEIGHT - BOTTOM, TOP)
    parts = _frame(title, y, y_scale, x_label)
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(groups))
    bar = min(34.0, slot * 0.8 / max(1, len(series)))
    base = y_scale(min(y.ticks))
    for g, group in enumerate(groups):
        centre = LEFT + slot * (g + 0.5)
        parts.append(_text(round(centre, 2), HEIGHT - BOTTOM + 19, group))
        first = centre - bar * len(series) / 2
        for s, (name, row, colour) in enumerate(series):
            value = row[g]
            if value is None:
                continue
            left = round(first + s * bar + 1, 2)
            top = y_scale(value)
            label = _percent(value) if y.percent else y.tick_label(value)
            parts.append(
                f'<rect x="{left}" y="{top}" width="{round(bar - 2, 2)}" '
                f'height="{round(base - top, 2)}" fill="{colour}" rx="2">'
                f"<title>{escape(f'{name}, {group}: {label}')}</title></rect>"
            )
            parts.append(_text(round(left + bar / 2 - 1, 2), top - 4, label, size=10))
    parts.append("</svg>")
    return "\n".join(parts)


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"
