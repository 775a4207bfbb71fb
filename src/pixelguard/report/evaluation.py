"""Reports of a suite evaluation: versioned JSON, Markdown for a pull request, a
self-contained HTML page, and the images as ``.npz``.

The Markdown and HTML views render from the report.json data (plus adversarial.npz
for the images), so :func:`render_evaluation_report` rebuilds them from files alone.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelguard._version import __version__
from pixelguard.errors import ReportError
from pixelguard.evaluate.runner import CONFIDENCE_LEVEL, EVALUATION_SCHEMA, Evaluation
from pixelguard.files import write_json, write_text
from pixelguard.report.arrays import EvaluationArrays, read_evaluation_npz, write_evaluation_npz
from pixelguard.report.evaluation_html import (
    NO_ARRAYS,
    accuracy_rows,
    evaluated_rows,
    evaluation_html,
    interval_range,
    verdict,
)
from pixelguard.report.summary import Report, as_report, defense_text, percent

__all__ = [
    "ReportFiles",
    "accuracy_rows",
    "evaluated_rows",
    "evaluation_markdown",
    "read_evaluation_report",
    "render_evaluation_report",
    "verdict",
    "write_evaluation_html",
    "write_evaluation_json",
    "write_evaluation_markdown",
    "write_evaluation_report",
]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
ADVERSARIAL_NPZ = "adversarial.npz"
READABLE_SCHEMAS = ("evaluation-1.0", EVALUATION_SCHEMA)
"""The report.json layouts this version reads (1.1 only adds fields to 1.0)."""


def evaluation_report(evaluation: Evaluation) -> dict[str, Any]:
    """:meth:`Evaluation.to_dict` with the pixelguard version and the time, as report.json holds it."""
    return {
        **evaluation.to_dict(),
        "pixelguard_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_evaluation_json(path: str | Path, evaluation: Evaluation) -> Path:
    """Write :func:`evaluation_report` to ``path`` atomically.

    Returns:
        The path written.
    """
    return write_json(path, evaluation_report(evaluation))


def evaluation_markdown(evaluation: Evaluation | Report) -> str:
    """The Markdown summary: verdict, what was evaluated, accuracy per budget with its
    interval, attacks, flags."""
    report = as_report(evaluation)
    lines = [f"## pixelguard evaluation: {report['suite']} suite", "", f"**{verdict(report)}**", ""]
    lines += [f"- **{what}**: {text}" for what, text in evaluated_rows(report)]
    lines.append("")
    defense = defense_text(report.get("defense"))
    if defense:
        lines += [f"Defense: {defense}.", ""]
    n = report["n_images"]
    lines += [
        f"| budget | accuracy | {CONFIDENCE_LEVEL:.0%} CI (n={n:,}) |",
        "| --- | ---: | ---: |",
        *(
            f"| {label} | {percent(acc)} | {interval_range(acc, n)} |"
            for label, acc in [
                ("clean", report["clean_accuracy"]),
                *report["robust_accuracy"].items(),
            ]
        ),
        "",
        "| budget | attack | attacked | fooled | success rate | median queries | time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stat in report["attacks"]:
        queries = "-" if stat["median_queries"] is None else f"{stat['median_queries']:g}"
        lines.append(
            f"| {stat['budget']} | {stat['attack']} | {stat['n_attacked']} | {stat['n_fooled']} "
            f"| {percent(stat['success_rate'])} | {queries} | {stat['seconds']:.1f} s |"
        )
    lines += ["", "### Flags", ""]
    if report["flags"]:
        lines += [f"- **{flag['code']}**: {flag['message']}" for flag in report["flags"]]
    else:
        lines.append("None: no sign of gradient masking.")
    lines += [
        "",
        "An image counts as robust at a budget only if every attack of that budget failed; "
        "robust accuracy is over all images.",
    ]
    return "\n".join(lines) + "\n"


def write_evaluation_markdown(path: str | Path, evaluation: Evaluation | Report) -> Path:
    """Write :func:`evaluation_markdown` to ``path`` atomically.

    Returns:
        The path written.
    """
    return write_text(path, evaluation_markdown(evaluation))


def write_evaluation_html(
    path: str | Path,
    report: Report,
    arrays: EvaluationArrays | None = None,
    *,
    images_note: str = NO_ARRAYS,
) -> Path:
    """Write :func:`~pixelguard.report.evaluation_html.evaluation_html` to ``path`` atomically.

    Returns:
        The path written.
    """
    return write_text(path, evaluation_html(report, arrays, images_note=images_note))


def write_evaluation_report(out_dir: str | Path, evaluation: Evaluation) -> list[Path]:
    """Write every report of an evaluation into ``out_dir``.

    Files: report.json (the data), report.md (a summary for a pull request),
    adversarial.npz (originals and worst-case images, see
    :func:`~pixelguard.report.arrays.write_evaluation_npz`) and report.html (the page).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    report = evaluation_report(evaluation)
    return [
        write_json(out / REPORT_JSON, report),
        write_evaluation_markdown(out / REPORT_MD, report),
        write_evaluation_npz(out / ADVERSARIAL_NPZ, evaluation),
        write_evaluation_html(
            out / REPORT_HTML, report, EvaluationArrays.from_evaluation(evaluation)
        ),
    ]


@dataclass(frozen=True)
class ReportFiles:
    """An evaluation's report folder, read back.

    Attributes:
        folder: the folder.
        report: the report.json data.
        arrays: the adversarial.npz arrays (None: the file is missing).
        images_note: why ``arrays`` is None (empty when present).
    """

    folder: Path
    report: Report
    arrays: EvaluationArrays | None
    images_note: str


def read_evaluation_report(folder: str | Path) -> ReportFiles:
    """Read report.json, and adversarial.npz when present, from an evaluation's folder.

    Raises:
        ReportError: no such folder, no or unreadable report.json, a report.json of
            another schema, or an unreadable adversarial.npz.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ReportError(f"{folder} {what}; give the --out folder of pixelguard evaluate")
    path = folder / REPORT_JSON
    if not path.is_file():
        raise ReportError(
            f"{folder} has no {REPORT_JSON}; write one with pixelguard evaluate --out"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from None
    version = report.get("schema_version") if isinstance(report, dict) else None
    if version not in READABLE_SCHEMAS:
        raise ReportError(
            f"{path} has schema_version {version!r}; this pixelguard reads "
            f"{' and '.join(map(repr, READABLE_SCHEMAS))}"
        )
    npz = folder / ADVERSARIAL_NPZ
    if not npz.is_file():
        note = f"{ADVERSARIAL_NPZ} is missing from {folder}, so there are no images to show"
        return ReportFiles(folder, report, None, note)
    return ReportFiles(folder, report, read_evaluation_npz(npz), "")


def render_evaluation_report(folder: str | Path) -> tuple[ReportFiles, list[Path]]:
    """Rewrite report.html and report.md of an evaluation's folder from its files.

    Returns:
        What was read, and the paths written.

    Raises:
        ReportError: as :func:`read_evaluation_report`.
    """
    files = read_evaluation_report(folder)
    paths = [
        write_evaluation_html(
            files.folder / REPORT_HTML, files.report, files.arrays, images_note=files.images_note
        ),
        write_evaluation_markdown(files.folder / REPORT_MD, files.report),
    ]
    return files, paths
