"""``pixelguard evaluate --suite full`` on MNIST, end to end through the CLI, timed.

What a user runs: the MNIST test set is split as the project's benchmarks do (train
on images 0-7,999, evaluate on images from 8,000 on), written as two .npz files; a
small CNN is trained with ``pixelguard train`` (skipped when the checkpoint exists);
then ``pixelguard evaluate`` runs the full suite (sparse-pgd then sparse-rs at every
pixel budget, Linf PGD at every eps) on the evaluation images. The script records the
command, its wall time and the report's robust accuracies in ``results.json`` and
``results.md``.

Example:
    python benchmarks/bench_evaluate.py --quick          # 50 images
    python benchmarks/bench_evaluate.py                  # 1,000 images
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, load_average, write_results  # noqa: E402
from bench_pixel import SHARED_DATASETS  # noqa: E402
from pixelguard.data import load_data  # noqa: E402

TRAIN_IMAGES = 8000
"""MNIST test images 0..7,999 train the model; the rest are evaluated."""


def prepare_data(data_dir: Path, out: Path) -> tuple[Path, Path]:
    """Write mnist-train.npz (images 0-7,999) and mnist-eval.npz (8,000 on), once."""
    train_path, eval_path = out / "mnist-train.npz", out / "mnist-eval.npz"
    if not (train_path.exists() and eval_path.exists()):
        data = load_data(str(data_dir / "mnist"), split="test")
        x, y = data.x.numpy(), data.y.numpy()
        out.mkdir(parents=True, exist_ok=True)
        np.savez(train_path, x=x[:TRAIN_IMAGES], y=y[:TRAIN_IMAGES])
        np.savez(eval_path, x=x[TRAIN_IMAGES:], y=y[TRAIN_IMAGES:])
    return train_path, eval_path


CLI = [sys.executable, "-m", "pixelguard.cli"]
"""``pixelguard``, run by this interpreter."""


def run(command: list[str]) -> float:
    """Run a CLI command with one torch thread, echoing it; return its wall time in seconds."""
    print("$", shlex.join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - start


def train_model(train_path: Path, epochs: int, model: Path) -> float:
    """``pixelguard train`` a small CNN on ``train_path``; return its wall time."""
    train = [*CLI, "train", "--data", str(train_path), "--split", "all"]
    return run([*train, "--epochs", str(epochs), "--out", str(model), "--quiet"])


def render_markdown(results: dict[str, Any]) -> str:
    """The robust accuracy per budget and every attack's share of the work."""
    report = results["report"]
    lines = [
        f"`{results['evaluate_command']}`: {report['n_images']:,} images in "
        f"{results['evaluate_seconds']:.0f} s ({results['evaluate_seconds'] / report['n_images']:.2f} "
        f"s per image); clean accuracy {report['clean_accuracy']:.1%}",
        "",
        "| budget | robust accuracy |",
        "| --- | ---: |",
        *(f"| {label} | {acc:.1%} |" for label, acc in report["robust_accuracy"].items()),
        "",
        "| budget | attack | attacked | fooled | median queries | seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for a in report["attacks"]:
        queries = "-" if a["median_queries"] is None else f"{a['median_queries']:,.0f}"
        lines.append(
            f"| {a['budget']} | {a['attack']} | {a['n_attacked']} | {a['n_fooled']} "
            f"| {queries} | {a['seconds']:.1f} |"
        )
    flags = report.get("flags") or []
    lines += ["", "Flags: " + ("; ".join(f["code"] for f in flags) if flags else "none")]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=1000, help="images to evaluate")
    parser.add_argument("--pixels", default="1,3,10", help="pixel budgets")
    parser.add_argument("--eps", default="0.1,0.2,0.3", help="Linf budgets")
    parser.add_argument("--budget", type=int, default=1000, help="queries per image and attack")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--out", type=Path, default=Path("bench-out/evaluate"))
    parser.add_argument("--quick", action="store_true", help="50 images, 2 epochs")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_images, args.epochs = 50, 2
    if not (args.data_dir / "mnist").is_dir():
        parser.error(f"no MNIST under {args.data_dir}")
    train_path, eval_path = prepare_data(args.data_dir, args.out / "data")
    model = args.out / f"mnist-small-cnn-e{args.epochs}.pt"
    results: dict[str, Any] = {
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
    }
    if not model.exists():
        results["train_seconds"] = round(train_model(train_path, args.epochs, model), 1)
    report_dir = args.out / f"full-{args.n_images}"
    evaluate = [*CLI, "evaluate", "--model", str(model), "--data", str(eval_path)]
    evaluate += ["--split", "all", "--suite", "full", "--pixels", args.pixels, "--eps", args.eps]
    evaluate += ["--budget", str(args.budget), "--limit", str(args.n_images)]
    evaluate += ["--out", str(report_dir), "--quiet"]
    results["evaluate_command"] = shlex.join(["pixelguard", *evaluate[3:]])
    results["evaluate_seconds"] = round(run(evaluate), 1)
    results["load_average_end"] = load_average()
    results["report"] = json.loads((report_dir / "report.json").read_text())
    results["report"].pop("budgets", None)  # per-image records stay in report.json
    results["report"].pop("images", None)
    write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
