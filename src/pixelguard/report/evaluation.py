"""Reports of a suite evaluation: versioned JSON and a Markdown summary for a pull request."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import IO

import pixelguard
from pixelguard.evaluate.files import atomic_write, write_json
from pixelguard.evaluate.runner import Evaluation


def write_evaluation_json(path: str | Path, evaluation: Evaluation) -> Path:
    """Write :meth:`Evaluation.to_dict` to ``path`` atomically, with version and time.

    Returns:
        The path written.
    """
    data = {
        **evaluation.to_dict(),
        "pixelguard_version": pixelguard.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return write_json(path, data)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def verdict(evaluation: Evaluation) -> str:
    """One line: clean accuracy, the worst robust accuracy and where, and the flag count."""
    robust = evaluation.robust_accuracy()
    line = f"Clean accuracy {_percent(evaluation.clean_accuracy)} on {evaluation.n_images:,} images"
    if robust:
        worst = min(robust, key=lambda label: robust[label])
        line += f"; worst-case robust accuracy {_percent(robust[worst])} at {worst}"
    count = len(evaluation.flags)
    if count:
        line += f"; {count} warning sign{'s' if count > 1 else ''}, see Flags"
    return line + "."


def evaluation_markdown(evaluation: Evaluation) -> str:
    """The Markdown summary: verdict, robust accuracy per budget, attacks, flags."""
    lines = [
        f"## pixelguard evaluation: {evaluation.suite} suite",
        "",
        f"**{verdict(evaluation)}**",
        "",
        "| budget | robust accuracy |",
        "| --- | ---: |",
        *(f"| {label} | {_percent(acc)} |" for label, acc in evaluation.robust_accuracy().items()),
        "",
        "| budget | attack | attacked | fooled | success rate | median queries | time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stat in evaluation.attacks:
        queries = "-" if stat.median_queries is None else f"{stat.median_queries:g}"
        lines.append(
            f"| {stat.budget} | {stat.attack} | {stat.n_attacked} | {stat.n_fooled} "
            f"| {_percent(stat.success_rate)} | {queries} | {stat.seconds:.1f} s |"
        )
    lines += ["", "### Flags", ""]
    if evaluation.flags:
        lines += [f"- **{flag.code}**: {flag.message}" for flag in evaluation.flags]
    else:
        lines.append("None: no sign of gradient masking.")
    lines += [
        "",
        "An image counts as robust at a budget only if every attack of that budget failed; "
        "robust accuracy is over all images.",
    ]
    return "\n".join(lines) + "\n"


def write_evaluation_markdown(path: str | Path, evaluation: Evaluation) -> Path:
    """Write :func:`evaluation_markdown` to ``path`` atomically.

    Returns:
        The path written.
    """
    encoded = evaluation_markdown(evaluation).encode("utf-8")

    def write(handle: IO[bytes]) -> None:
        handle.write(encoded)

    return atomic_write(path, write)


def write_evaluation_report(out_dir: str | Path, evaluation: Evaluation) -> list[Path]:
    """Write every report of an evaluation into ``out_dir``: report.json and report.md.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    return [
        write_evaluation_json(out / "report.json", evaluation),
        write_evaluation_markdown(out / "report.md", evaluation),
    ]
