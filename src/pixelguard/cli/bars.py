"""Progress bars and the Ctrl-C hint of long commands, on stderr."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tqdm import tqdm

    from pixelguard.attacks.base import ProgressCallback
    from pixelguard.models.training import TrainProgress


@contextlib.contextmanager
def progress_bar(description: str, *, quiet: bool, unit: str = "img") -> Iterator[tqdm | None]:
    """A tqdm bar on stderr when stderr is a terminal and not ``quiet``, else None."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc=description, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True) as bar:
        yield bar


@contextlib.contextmanager
def resume_hint(checkpoint: Path, finished: str) -> Iterator[None]:
    """On Ctrl-C, say that the ``finished`` work is saved in ``checkpoint``; exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted: finished {finished} are saved in {checkpoint}; "
            "rerun the same command with --resume to continue",
            err=True,
        )
        raise typer.Exit(130) from None


def images_progress(bar: tqdm | None) -> ProgressCallback | None:
    """An attack progress callback that moves ``bar`` (None when there is no bar)."""
    if bar is None:
        return None
    shown = bar

    def update(done: int, total: int) -> None:
        shown.total = total
        shown.update(done - shown.n)

    return update


def epochs_progress(bar: tqdm | None) -> TrainProgress | None:
    """A training progress callback that moves ``bar`` and shows the loss (None: no bar)."""
    if bar is None:
        return None
    shown = bar

    def update(epoch: int, total: int, loss: float) -> None:
        shown.total = total
        shown.update(epoch - shown.n)
        shown.set_postfix(loss=f"{loss:.4f}")

    return update
