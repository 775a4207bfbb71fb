"""What the commands print: short, aligned, human-readable summaries on stdout."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer

if TYPE_CHECKING:
    from pixelguard.attacks.base import Attack
    from pixelguard.evaluate.attack_run import AttackRun, WireStats


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


_THREAT_FIELDS = ("pixels", "eps", "norm")
"""Settings shown whether or not they are the attack's defaults: the budget of the threat model."""


def attack_text(run: AttackRun) -> str:
    """The attack that ran, to repeat it: its name, the parameters that differ from the
    attack's defaults, the query budget and the seed.

    E.g. ``"sparse-rs (pixels=3, budget 3,000 queries/image, seed 0)"``.
    """
    from pixelguard.attacks.base import attacks

    result = run.result
    attack_class = cast("type[Attack]", attacks.get(result.attack))
    defaults = {
        field.name: field.default
        for field in dataclasses.fields(attack_class)
        if field.default is not dataclasses.MISSING
    }
    changed = [
        f"{name}={value}"
        for name, value in result.params.items()
        if name not in ("seed", "budget")
        and (name in _THREAT_FIELDS or name not in defaults or defaults[name] != value)
    ]
    if result.budget is not None:
        budget = f"budget {result.budget:,} queries/image"
    else:  # bounded by the attack's own settings (steps, generations); say what it spent
        most = int(result.queries.max()) if result.queries.numel() else 0
        budget = f"no query budget set, at most {most:,} queries spent per image"
    return f"{result.attack} ({', '.join([*changed, budget, f'seed {result.seed}'])})"


def attacked_text(run: AttackRun) -> str:
    """How many images were attacked out of how many could be, or why none was."""
    reason = run.idle_reason()
    if reason is not None:
        return f"0 images: {reason}"
    eligible = run.n_correct - run.n_already_target
    text = f"{run.n_attacked:,} correctly classified images"
    if run.n_attacked < eligible:
        text = f"{run.n_attacked:,} of {eligible:,} correctly classified images"
    if run.n_already_target and run.target is not None:
        text += (
            f" ({run.n_already_target:,} already of the target class "
            f"{run.class_name(run.target)}, skipped)"
        )
    return text


def wire_text(wire: WireStats) -> str:
    """What went over the wire, e.g. ``"412 requests (3 retries, 2 answered 429), 35 cache
    hits, 377 charged of 1,000"``: requests sent (every attempt), images answered from
    the cache, and requests (and images, under an image budget) charged."""
    counts = wire.counts
    answers = [
        f"{counts.get('retries', 0):,} retries",
        f"{counts.get('rate_limited', 0):,} answered 429",
    ]
    if "unavailable" in counts:
        answers.append(f"{counts['unavailable']:,} answered 503")
    text = (
        f"{counts.get('requests_sent', 0):,} requests ({', '.join(answers)}), "
        f"{counts.get('cache_hits', 0):,} cache hits, {counts.get('requests_charged', 0):,} charged"
    )
    if wire.max_requests is not None:
        text += f" of {wire.max_requests:,}"
    if wire.max_images is not None:
        text += f", {counts.get('images_charged', 0):,} images charged of {wire.max_images:,}"
    return text


def echo_summary(run: AttackRun, source: str, paths: Sequence[Path]) -> None:
    """Print the headline numbers of ``run`` as an aligned two-column table.

    Warnings come first, then the attack that ran, what was attacked and, when any
    image was, how it went; an HTTP endpoint's wire statistics; the files written.
    """
    result = run.result
    aim = f", target {run.class_name(run.target)}" if run.target is not None else ""
    typer.echo(f"{result.attack}{aim} on {source}")
    for warning in run.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, bold=True)
    rows = [
        ("attack", attack_text(run)),
        ("clean accuracy", f"{percent(run.clean_accuracy)}  ({run.n_images:,} images)"),
        ("attacked", attacked_text(run)),
    ]
    if run.n_attacked:
        rows += [
            (
                "success rate",
                f"{percent(run.success_rate)}  ({run.n_success:,} of {run.n_attacked:,})",
            ),
            ("median queries", f"{number(run.median_queries)}  (over fooled images)"),
            ("median pixels", number(run.median_pixels_changed)),
            ("pixels: images", _histogram_text(run.pixels_histogram())),
        ]
    if run.wire is not None:
        rows.append(("wire", wire_text(run.wire)))
    rows.append(("time", seconds(result.wall_time)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    typer.echo(files_line(paths))
