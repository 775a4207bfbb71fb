"""Helpers shared by the sparse (L0) benchmarks: ``bench_sparse.py`` and ``bench_min_pixels.py``.

The models and attacked images come from the DE benchmark's ``build_task`` (in
``bench_pixel.py``), so every benchmark attacks the same cached models
(``bench-out/models``, keyed by training data, architecture, epochs and seed) and draws
its images the same way. What lives here is what the L0 benchmarks add: the strict
pixel count, the success check by a fresh forward pass, summary statistics, the
"fooled within q queries" curves (as tables at :data:`QUERY_GRID` and as plots), the
query comparisons over the images both attacks fooled, and the per-run record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelguard.metrics.distances import l0_pixels

L0_TOLERANCE = 1e-6
"""A pixel counts as changed when any of its channels moves by more than this."""

QUERY_GRID = (100, 300, 1_000, 3_000, 10_000)
"""Query counts at which the tables give the fraction of images fooled."""


@dataclass
class AttackOutput:
    """Raw output of one attack on one image set, before verification.

    ``queries`` counts every image the attack pushed through the model for that
    image, the clean query included; ``wall_seconds`` is the whole call.
    """

    attack: str
    config: dict[str, Any]
    x_adv: torch.Tensor
    queries: np.ndarray
    wall_seconds: float
    notes: dict[str, Any] = field(default_factory=dict)


def predict_labels(module: nn.Module, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Labels from a fresh forward pass of the bare module (no attack code involved)."""
    with torch.no_grad():
        return torch.cat([module(chunk).argmax(dim=1) for chunk in x.split(batch)])


def strict_check(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor
) -> dict[str, np.ndarray]:
    """Re-verify adversarial images: fresh prediction, changed pixels, value range.

    Returns per-image arrays: ``fooled`` (prediction differs from ``y`` and the image
    lies in [0, 1]), ``pixels`` (pixel positions changed in any channel by more than
    :data:`L0_TOLERANCE`) and ``pred`` (the fresh prediction).
    """
    x_adv = x_adv.to(torch.float32)
    in_range = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(dim=1)
    pred = predict_labels(module, x_adv)
    pixels = l0_pixels(x, x_adv, L0_TOLERANCE)
    return {
        "fooled": ((pred != y) & in_range).numpy(),
        "pixels": pixels.numpy(),
        "pred": pred.numpy(),
        "in_range": in_range.numpy(),
    }


def median(values: np.ndarray) -> float | None:
    """Median of a possibly empty array (None when empty); +inf entries allowed."""
    return float(np.median(values)) if values.size else None


def fooled_within(queries: np.ndarray, success: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Fraction of images fooled with at most ``q`` queries, for every ``q`` in ``grid``."""
    if queries.size == 0:
        return np.zeros_like(grid, dtype=float)
    fooled_at = np.where(success, queries, np.inf)
    return (fooled_at[None, :] <= grid[:, None]).mean(axis=1)


def joint_median_queries(*runs: dict[str, Any]) -> tuple[int, list[float | None]]:
    """Images every run fooled, and each run's median queries over exactly those images.

    The only fair query comparison: a median over all images counts each failure at
    the budget, and a median over each attack's own successes compares different
    images. ``runs`` are records on the same images with ``per_image`` lists
    ``success`` and ``queries``.

    Returns:
        (how many images every run fooled, each run's median there or None if none).
    """
    success = np.logical_and.reduce([np.asarray(r["per_image"]["success"], bool) for r in runs])
    medians = [median(np.asarray(r["per_image"]["queries"], dtype=float)[success]) for r in runs]
    return int(success.sum()), medians


def grid_up_to(budget: int, grid: Sequence[int] = QUERY_GRID) -> list[int]:
    """The points of ``grid`` a run with ``budget`` queries per image can reach."""
    return [q for q in grid if q <= budget]


def fooled_at(run: dict[str, Any], grid: Sequence[int]) -> np.ndarray:
    """A record's fraction of images fooled within each ``q`` of ``grid`` (its ``per_image``)."""
    return fooled_within(
        np.asarray(run["per_image"]["queries"], dtype=float),
        np.asarray(run["per_image"]["success"], dtype=bool),
        np.asarray(grid, dtype=float),
    )


def pool_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several runs (e.g. seeds) as one record over their (image, run) pairs.

    Pool two attacks' runs in the same order (seed 0 with seed 0, ...) and
    :func:`joint_median_queries` compares them over the pairs both fooled.
    """
    return {
        "per_image": {
            key: [v for r in runs for v in r["per_image"][key]] for key in ("success", "queries")
        }
    }


def compare_queries(ours: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Median queries of two records over the images both fooled, and other / ours.

    A ratio above 1 means ``ours`` needed fewer queries on those images.
    """
    both, (q_ours, q_other) = joint_median_queries(ours, other)
    ratio = round(q_other / q_ours, 2) if q_ours and q_other is not None else None
    return {"both_fooled": both, "median_ours": q_ours, "median_other": q_other, "ratio": ratio}


def plot_success_curves(
    series: Sequence[dict[str, Any]], path: Path, title: str, ylabel: str, max_queries: int
) -> None:
    """Fraction fooled against queries (log x), one step line per entry of ``series``.

    Each entry holds ``queries`` and ``success`` (per image) and ``label``; optional
    ``color``, ``linestyle``, ``alpha`` go to matplotlib (a ``label`` of None is not
    listed in the legend).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = query_grid(int(max_queries * 1.25))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for s in series:
        curve = fooled_within(np.asarray(s["queries"]), np.asarray(s["success"], bool), grid)
        style = {key: s[key] for key in ("color", "linestyle", "alpha") if key in s}
        ax.step(grid, 100 * curve, where="post", label=s["label"], **style)
    ax.axvline(max_queries, color="0.5", linewidth=0.8, linestyle=":")  # the budget
    ax.set_xscale("log")
    ax.set_xlim(1, max_queries * 1.25)  # room to see steps at the budget itself
    ax.set_ylim(-2, 102)
    ax.set_xlabel("queries per image (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def query_grid(max_queries: int, points: int = 200) -> np.ndarray:
    """Log-spaced query counts from 1 to ``max_queries`` (integers, unique)."""
    top = max(2.0, math.log10(max(max_queries, 2)))
    return np.unique(np.logspace(0, top, points).round().astype(np.int64))


def summarise(
    output: AttackOutput, check: dict[str, np.ndarray], pixels: int, budget: int | None
) -> dict[str, Any]:
    """Success within ``pixels`` changed pixels, and the query and time statistics.

    Success means fooled (fresh forward pass, in range) *and* at most ``pixels``
    changed pixels. Query medians are over all images and over successes.
    """
    fooled, changed, queries = check["fooled"], check["pixels"], output.queries
    success = fooled & (changed <= pixels)
    n = int(success.size)
    summary: dict[str, Any] = {
        "n_images": n,
        "successes": int(success.sum()),
        "success_rate": round(float(success.mean()), 4) if n else 0.0,
        "fooled_any_pixels": int(fooled.sum()),
        "fooled_but_too_many_pixels": int((fooled & (changed > pixels)).sum()),
        "median_pixels_success": median(changed[success]),
        "median_pixels_fooled": median(changed[fooled]),
        "median_queries": median(queries),
        "median_queries_success": median(queries[success]),
        "max_queries": int(queries.max()) if n else 0,
        "total_queries": int(queries.sum()),
        "over_budget_images": int((queries > budget).sum()) if budget is not None else None,
        "perturbed_on_failure": int(((~success) & (changed > 0)).sum()),
        "out_of_range_images": int((~check["in_range"]).sum()),
        "wall_seconds": round(output.wall_seconds, 3),
        "seconds_per_image": round(output.wall_seconds / n, 4) if n else None,
    }
    return {"summary": summary, "success": success}
