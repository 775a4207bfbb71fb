"""``pixelguard report`` and ``pixelguard compare``: views of evaluations already run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line


def _report_dir(metavar: str) -> Any:
    """A positional argument naming the --out folder of ``pixelguard evaluate``."""
    return typer.Argument(
        help="The --out folder of pixelguard evaluate.", metavar=metavar, show_default=False
    )


def report_command(folder: Annotated[Path, _report_dir("DIR")]) -> None:
    """Re-render report.html and report.md from DIR/report.json (and DIR/adversarial.npz)."""
    from pixelguard.report.evaluation import render_evaluation_report, verdict

    files, paths = render_evaluation_report(folder)
    if files.arrays is None:
        typer.echo(f"note: {files.images_note}", err=True)
    typer.echo(verdict(files.report))
    typer.echo(files_line(paths))


def compare_command(
    first: Annotated[Path, _report_dir("DIR1")],
    second: Annotated[Path, _report_dir("DIR2")],
    *,
    names: Annotated[
        str | None,
        typer.Option(
            help="Labels of the two sides as A,B (default: the folder names).",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder for compare.md and compare.html (default: print only).",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
) -> None:
    """Compare two evaluations side by side, e.g. before and after a defense."""
    from pixelguard.report.compare import compare_folders, comparison_text, write_comparison

    if out is not None:
        opt.check_output_folder(out)
    comparison = compare_folders(first, second, names)
    typer.echo(comparison_text(comparison), nl=False)
    if out is not None:
        typer.echo(files_line(write_comparison(out, comparison)))
