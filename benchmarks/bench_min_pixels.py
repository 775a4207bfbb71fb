"""Fewest pixels per image: pixelguard MinPixels (black-box) vs foolbox L0BrendelBethgeAttack (white-box).

One process, the MNIST model of the DE benchmark (small-cnn trained on the first 8,000
shared MNIST test images, cached under ``bench-out/models``), and the same correctly
classified images from the remaining 2,000 for both attacks.

- pixelguard ``MinPixels(budget=10000, max_pixels=64)``: score queries only.
- foolbox ``L0BrendelBethgeAttack``: gradients on every step. It needs adversarial
  starting points; they are computed here as foolbox does by default
  (``LinearSearchBlendedUniformNoiseAttack``), with ``SaltAndPepperNoiseAttack`` for the
  images where that fails, and only images with an adversarial start are passed (the
  others count as failures). Its numba JIT (about a minute) is warmed up on two other
  images outside the timed region.

Both results are re-verified here: a fresh forward pass must misclassify the returned
image, and L0 counts changed *pixels* with tolerance 1e-6 (not foolbox's scalar entries
above 1e-4). Medians are given over successes and over all images with failures as
+inf.

Example:
    python benchmarks/bench_min_pixels.py --quick
    python benchmarks/bench_min_pixels.py --n-images 60 --steps 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CountingModule,
    describe_machine,
    load_average,
    package_versions,
    set_threads,
    write_results,
)
from _sparse_common import L0_TOLERANCE, median, strict_check  # noqa: E402
from bench_pixel import SHARED_DATASETS, Task, build_task  # noqa: E402
from pixelguard.attacks import MinPixels  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402

logger = logging.getLogger("benchmarks.min_pixels")

HISTOGRAM_BINS = (
    (1, 1),
    (2, 2),
    (3, 3),
    (4, 4),
    (5, 5),
    (6, 7),
    (8, 10),
    (11, 15),
    (16, 20),
    (21, 30),
    (31, 64),
    (65, 784),
)
"""Pixel-count bins of the histogram (inclusive); failures are counted apart."""


def _queries_median(values: np.ndarray) -> float | None:
    return median(values.astype(float))


def run_pixelguard(
    task: Task, counting: CountingModule, budget: int, max_pixels: int, seed: int
) -> dict[str, Any]:
    """MinPixels on the whole batch; returns adversarial images, queries and wall time."""
    attack = MinPixels(budget=budget, max_pixels=max_pixels, seed=seed)
    classifier = TorchClassifier(counting, task.input_shape, output="logits")
    counting.reset()
    start = time.perf_counter()
    result = attack.run(classifier, task.x, task.y)
    wall = time.perf_counter() - start
    forward = counting.reset()
    return {
        "config": attack.to_dict(),
        "x_adv": result.x_adv,
        "queries": result.queries.numpy(),
        "wall_seconds": wall,
        "claimed_success": int(result.success.sum()),
        "forward": forward.to_dict(),
    }


def starting_points(
    fmodel: Any, x: torch.Tensor, y: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Adversarial starts: foolbox's default init, then salt-and-pepper where it fails."""
    import foolbox

    torch.manual_seed(seed)
    starts = foolbox.attacks.LinearSearchBlendedUniformNoiseAttack().run(fmodel, x, y)
    ok = fmodel(starts).argmax(dim=1) != y
    blended = int(ok.sum())
    missing = (~ok).nonzero().flatten()
    if missing.numel():
        noisy = foolbox.attacks.SaltAndPepperNoiseAttack().run(fmodel, x[missing], y[missing])
        starts[missing] = noisy
        ok = fmodel(starts).argmax(dim=1) != y
    counts = {
        "blended_uniform": blended,
        "salt_and_pepper": int(ok.sum()) - blended,
        "no_start": int((~ok).sum()),
    }
    return starts.detach(), ok, counts


def run_foolbox(
    task: Task,
    counting: CountingModule,
    warmup: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """L0BrendelBethgeAttack on the images that have an adversarial start.

    The JIT warm-up on ``warmup`` images runs first and is not timed. The timed
    region covers the starting points and the attack.
    """
    import foolbox

    fmodel = foolbox.PyTorchModel(counting.eval(), bounds=(0.0, 1.0))
    attack = foolbox.attacks.L0BrendelBethgeAttack(steps=steps)
    logger.info("foolbox: warming up the numba JIT on %d images", warmup[0].shape[0])
    start = time.perf_counter()
    w_start, w_ok, _ = starting_points(fmodel, *warmup, seed)
    attack(fmodel, warmup[0][w_ok], warmup[1][w_ok], starting_points=w_start[w_ok], epsilons=None)
    jit_seconds = time.perf_counter() - start
    logger.info("foolbox: warm-up took %.1f s", jit_seconds)
    counting.reset()
    start = time.perf_counter()
    starts, ok, start_counts = starting_points(fmodel, task.x, task.y, seed)
    start_seconds = time.perf_counter() - start
    x_adv = task.x.clone()
    if bool(ok.any()):
        adv, _, _ = attack(
            fmodel, task.x[ok], task.y[ok], starting_points=starts[ok], epsilons=None
        )
        x_adv[ok] = adv.detach()
    wall = time.perf_counter() - start
    forward = counting.reset()
    return {
        "config": {
            "steps": steps,
            "lr": attack.lr,
            "overshoot": attack.overshoot,
            "binary_search_steps": attack.binary_search_steps,
        },
        "x_adv": x_adv,
        "wall_seconds": wall,
        "starting_points": start_counts,
        "starting_point_seconds": round(start_seconds, 2),
        "jit_warmup_seconds": round(jit_seconds, 1),
        "forward": forward.to_dict(),
    }


def histogram(pixels: np.ndarray, success: np.ndarray) -> dict[str, int]:
    """Images per pixel-count bin (successes only), plus the failures."""
    hist = {
        (f"{lo}" if lo == hi else f"{lo}-{hi}"): int(
            ((pixels >= lo) & (pixels <= hi) & success).sum()
        )
        for lo, hi in HISTOGRAM_BINS
    }
    hist["failed"] = int((~success).sum())
    return hist


def summarise(
    task: Task, x_adv: torch.Tensor, wall: float, max_pixels: int | None
) -> dict[str, Any]:
    """Fresh-forward success, strict pixel L0, medians (successes / all with +inf), histogram."""
    check = strict_check(task.module, task.x, task.y, x_adv)
    pixels, success = check["pixels"], check["fooled"]
    if max_pixels is not None:
        success &= pixels <= max_pixels
    n = int(success.size)
    with_inf = np.where(success, pixels.astype(float), np.inf)
    return {
        "n_images": n,
        "successes": int(success.sum()),
        "success_rate": round(float(success.mean()), 4),
        "median_pixels_success": median(pixels[success].astype(float)),
        "median_pixels_all": median(with_inf),
        "mean_pixels_success": round(float(pixels[success].mean()), 2) if success.any() else None,
        "histogram": histogram(pixels, success),
        "seconds_per_image": round(wall / n, 3),
        "wall_seconds": round(wall, 2),
        "per_image": {
            "pixels_changed": pixels.tolist(),
            "success": success.tolist(),
            "pred_after": check["pred"].tolist(),
        },
    }


def pairwise(pg: dict[str, Any], fb: dict[str, Any]) -> dict[str, int]:
    """Per image: which attack found fewer pixels (failures count as +inf)."""
    a = np.where(pg["per_image"]["success"], pg["per_image"]["pixels_changed"], np.inf)
    b = np.where(fb["per_image"]["success"], fb["per_image"]["pixels_changed"], np.inf)
    return {
        "pixelguard_fewer": int((a < b).sum()),
        "equal": int((a == b).sum()),
        "foolbox_fewer": int((a > b).sum()),
    }


def plot_histogram(results: dict[str, Any], path: Path) -> None:
    """Side-by-side bars of the pixel-count histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results["pixelguard"]["histogram"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4))
    for offset, name in ((-0.2, "pixelguard"), (0.2, "foolbox")):
        counts = [results[name]["histogram"][label] for label in labels]
        ax.bar(x + offset, counts, width=0.4, label=results[name]["label"])
    ax.set_xticks(x, labels, rotation=45)
    ax.set_xlabel("pixels changed (tolerance 1e-6)")
    ax.set_ylabel("images")
    ax.set_title(f"MNIST small-cnn, {results['n_images']} images: fewest pixels found")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(results: dict[str, Any]) -> str:
    """The summary table and the histogram table."""
    pg, fb = results["pixelguard"], results["foolbox"]

    def fmt(v: float | None, digits: int = 1) -> str:
        return "-" if v is None else ("inf" if v == float("inf") else f"{v:,.{digits}f}")

    lines = [
        f"MNIST small-cnn, {results['n_images']} correctly classified images "
        f"(clean accuracy on the pool {results['dataset']['pool_accuracy']:.1%})",
        "",
        "| attack | success | median px (succ.) | median px (all, fail = inf) | mean px (succ.) "
        "| median queries | model passes | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in (pg, fb):
        lines.append(
            f"| {r['label']} | {r['successes']}/{r['n_images']} | {fmt(r['median_pixels_success'])} "
            f"| {fmt(r['median_pixels_all'])} | {fmt(r['mean_pixels_success'], 2)} "
            f"| {fmt(r.get('median_queries'), 0)} | {r['forward']['images']:,} "
            f"| {r['seconds_per_image']:.3f} |"
        )
    labels = list(pg["histogram"])
    lines += [
        "",
        "| pixels | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
        f"| {pg['label']} | " + " | ".join(str(pg["histogram"][lb]) for lb in labels) + " |",
        f"| {fb['label']} | " + " | ".join(str(fb["histogram"][lb]) for lb in labels) + " |",
        "",
        f"Per image: pixelguard fewer {results['pairwise']['pixelguard_fewer']}, equal "
        f"{results['pairwise']['equal']}, foolbox fewer {results['pairwise']['foolbox_fewer']}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=200, help="images attacked (default 200)")
    parser.add_argument(
        "--budget", type=int, default=10_000, help="MinPixels queries per image (default 10,000)"
    )
    parser.add_argument(
        "--max-pixels", type=int, default=64, help="MinPixels max_pixels (default 64)"
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=1000,
        help="L0BrendelBethgeAttack steps (default 1000, foolbox's default)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine, 2 "
        "OpenMP threads contend and every forward pass gets far slower)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for images and attacks")
    parser.add_argument(
        "--data-dir", type=Path, default=SHARED_DATASETS, help="folder holding mnist/"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench-out/min_pixels"), help="output folder"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 4 images, budget 1,000, 20 foolbox steps, 2-epoch model",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n_images, args.budget, args.steps = 4, 1000, 20
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both attacks; write results.json, results.md and histogram.png; print the tables."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    threads = set_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    # Two more images than attacked: the last two warm up foolbox's JIT.
    task = build_task("mnist", args.n_images + 2, args.seed, args.quick, args.data_dir)
    warmup = (task.x[-2:], task.y[-2:])
    task.x, task.y = task.x[:-2], task.y[:-2]
    task.info["attacked_indices"] = task.info["attacked_indices"][:-2]
    counting = CountingModule(task.module).eval()

    logger.info("pixelguard MinPixels on %d images, budget %d", args.n_images, args.budget)
    pg_run = run_pixelguard(task, counting, args.budget, args.max_pixels, args.seed)
    pg = summarise(task, pg_run.pop("x_adv"), pg_run["wall_seconds"], args.max_pixels)
    pg.update(
        pg_run,
        label="pixelguard MinPixels (black-box)",
        median_queries=_queries_median(pg_run["queries"]),
        queries=pg_run["queries"].tolist(),
    )
    logger.info(
        "pixelguard: %d/%d, median %s px, %.2f s/image",
        pg["successes"],
        pg["n_images"],
        pg["median_pixels_success"],
        pg["seconds_per_image"],
    )

    logger.info("foolbox L0BrendelBethgeAttack on %d images, %d steps", args.n_images, args.steps)
    fb_run = run_foolbox(task, counting, warmup, args.steps, args.seed)
    fb = summarise(task, fb_run.pop("x_adv"), fb_run["wall_seconds"], None)
    fb.update(fb_run, label="foolbox L0BrendelBethge (white-box)")
    logger.info(
        "foolbox: %d/%d, median %s px, %.2f s/image",
        fb["successes"],
        fb["n_images"],
        fb["median_pixels_success"],
        fb["seconds_per_image"],
    )

    results: dict[str, Any] = {
        "command": shlex.join(
            ["python", "benchmarks/bench_min_pixels.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_end": load_average(),
        "versions": package_versions(["pixelguard", "torch", "numpy", "foolbox", "numba"]),
        "threads": threads,
        "l0_tolerance": L0_TOLERANCE,
        "n_images": args.n_images,
        "dataset": task.info,
        "pixelguard": pg,
        "foolbox": fb,
        "pairwise": pairwise(pg, fb),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot_histogram(results, args.out / "histogram.png")
    write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
