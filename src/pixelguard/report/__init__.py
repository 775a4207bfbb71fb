"""Reports of attack runs and evaluations: JSON, arrays, Markdown, HTML pages, comparisons."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelguard.evaluate.attack_run import AttackRun
from pixelguard.report.arrays import write_adversarial_npz
from pixelguard.report.compare import compare_folders, write_comparison
from pixelguard.report.evaluation import render_evaluation_report, write_evaluation_report
from pixelguard.report.examples import write_examples_png
from pixelguard.report.results import (
    SCHEMA_VERSION,
    results_dict,
    write_results_json,
    write_summary_json,
)

__all__ = [
    "SCHEMA_VERSION",
    "RunReports",
    "compare_folders",
    "render_evaluation_report",
    "results_dict",
    "write_adversarial_npz",
    "write_comparison",
    "write_evaluation_report",
    "write_examples_png",
    "write_results_json",
    "write_run_reports",
    "write_summary_json",
]


@dataclass(frozen=True)
class RunReports:
    """The files :func:`write_run_reports` wrote."""

    results: Path
    adversarial: Path
    examples: Path

    def paths(self) -> list[Path]:
        return [self.results, self.adversarial, self.examples]


def write_run_reports(
    folder: str | Path,
    run: AttackRun,
    x: torch.Tensor,
    *,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> RunReports:
    """Write ``results.json``, ``adversarial.npz`` and ``examples.png`` into ``folder``.

    Args:
        folder: the output folder (created if missing).
        run: the attack run.
        x: the images of the run's whole dataset.
        model_info: how the model was given (see :func:`results_dict`; None: what
            the run knows, its input shape).
        data_info: how the data was given (None: what the run knows, its source,
            size and class names).

    Returns:
        The paths written.

    Shape:
        x: (N, C, H, W) float32 in [0, 1].
    """
    folder = Path(folder)
    return RunReports(
        results=write_results_json(
            folder / "results.json", run, model_info=model_info, data_info=data_info
        ),
        adversarial=write_adversarial_npz(folder / "adversarial.npz", run, x),
        examples=write_examples_png(folder / "examples.png", run, x, run.class_names),
    )
