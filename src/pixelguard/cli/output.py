"""What the commands print: short, aligned, human-readable summaries on stdout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import typer

from pixelguard.evaluate.attack_run import AttackRun


def percent(value: float) -> str:
    """``0.981`` -> ``"98.1%"``."""
    return f"{100 * value:.1f}%"


def number(value: float | None) -> str:
    """A count with thousands separators, or ``"-"`` for None."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def seconds(value: float) -> str:
    """``83.2`` -> ``"83.2 s"``; ``200`` -> ``"3 min 20 s"``."""
    if value < 120:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"


def files_line(paths: Sequence[Path]) -> str:
    """``"wrote DIR/: a.json, b.npz"`` for files in one folder, else the full paths."""
    folders = {p.parent for p in paths}
    if len(folders) == 1:
        return f"wrote {folders.pop()}/: {', '.join(p.name for p in paths)}"
    return "wrote " + ", ".join(str(p) for p in paths)


def _histogram_text(histogram: dict[str, int]) -> str:
    """``{"1": 4, "2": 9}`` as ``1: 4, 2: 9`` (fooled images per number of pixels changed)."""
    return ", ".join(f"{k}: {v}" for k, v in histogram.items()) or "-"


def echo_summary(run: AttackRun, source: str, paths: Sequence[Path]) -> None:
    """Print the headline numbers of ``run`` as an aligned two-column table."""
    result = run.result
    aim = f", target {run.class_name(run.target)}" if run.target is not None else ""
    rows = [
        ("clean accuracy", f"{percent(run.clean_accuracy)}  ({run.n_images:,} images)"),
        ("attacked", f"{run.n_attacked:,} correctly classified images"),
        ("success rate", f"{percent(run.success_rate)}  ({run.n_success:,} of {run.n_attacked:,})"),
        ("median queries", f"{number(run.median_queries)}  (over fooled images)"),
        ("median pixels", number(run.median_pixels_changed)),
        ("pixels: images", _histogram_text(run.pixels_histogram())),
        ("time", seconds(result.wall_time)),
    ]
    typer.echo(f"{result.attack}{aim} on {source}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    typer.echo(files_line(paths))
