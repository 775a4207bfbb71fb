"""Few-pixel attacks side by side: pixelguard PixelDE vs ART PixelAttack vs torchattacks OnePixel.

One process, one model per dataset, the same images and the same per-image query
budget for every attack. Every figure is checked by this script itself: an image
counts as a success only if a fresh forward pass on the returned image gives a label
other than the true one *and* at most ``k`` pixels differ from the clean image (a
pixel differs when any channel moves by more than 1e-6). Queries are counted for the
peers by wrapping the model (:class:`CountingModule`), one image per call.

Example:
    python benchmarks/bench_pixel.py --quick
    python benchmarks/bench_pixel.py --datasets digits,mnist --pixels 1,3,5 --n-images 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    MODELS_DIR,
    CallStats,
    CountingModule,
    ThroughputTable,
    begin_run,
    describe_machine,
    fingerprint,
    load_average,
    package_versions,
    source_revision,
    write_results,
)
from _sparse_common import joint_median_queries  # noqa: E402
from pixelguard.attacks.pixel_de import PixelDE  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.metrics.distances import l0_pixels  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.models.training import train_classifier  # noqa: E402
from pixelguard.models.zoo import load_checkpoint, save_checkpoint  # noqa: E402

logger = logging.getLogger("benchmarks.pixel")

POPULATION = 400
"""The paper's population (Su et al.): every attack searches with about 400 candidates."""
L0_TOLERANCE = 1e-6
"""A pixel counts as changed when any channel moves by more than this."""
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
"""MNIST and the CIFAR-10 tarball: ``shared/datasets`` beside the project checkout."""
ARCH = "small-cnn"


@dataclass(frozen=True)
class DatasetPlan:
    """How a benchmark dataset is built: training data, epochs, default budget."""

    name: str
    epochs: int
    generations: int
    """Default DE generations; the default per-image budget is 400 x (1 + generations)."""
    n_images: int
    """Default number of attacked images."""


PLANS = {
    "digits": DatasetPlan("digits", epochs=30, generations=50, n_images=20),
    "mnist": DatasetPlan("mnist", epochs=8, generations=10, n_images=20),
    "cifar10": DatasetPlan("cifar10", epochs=15, generations=10, n_images=20),
}


@dataclass
class Task:
    """A trained model and the clean images every attack gets."""

    name: str
    module: nn.Module
    input_shape: tuple[int, int, int]
    num_classes: int
    x: torch.Tensor
    y: torch.Tensor
    info: dict[str, Any]


@dataclass
class AttackRun:
    """Raw output of one attack on one task at one ``k``, before verification."""

    attack: str
    pixels: int
    config: dict[str, Any]
    x_adv: torch.Tensor
    queries: np.ndarray
    wall_seconds: float
    forward: CallStats
    notes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def _train_or_load(
    name: str, x: torch.Tensor, y: torch.Tensor, *, epochs: int, seed: int, num_classes: int
) -> tuple[nn.Module, dict[str, Any], Path]:
    """Train ``small-cnn`` with pixelguard's trainer, cached under ``bench-out/models``."""
    key = fingerprint(x, y, extra={"arch": ARCH, "epochs": epochs, "seed": seed})
    path = MODELS_DIR / f"{name}-{ARCH}-{key}.pt"
    if path.is_file():
        module, meta = load_checkpoint(path)
        logger.info("%s: loaded cached model %s", name, path)
        return module, dict(meta["metrics"]), path
    logger.info("%s: training %s on %d images for %d epochs", name, ARCH, len(y), epochs)
    module, metrics = train_classifier(
        x, y, arch=ARCH, epochs=epochs, seed=seed, num_classes=num_classes
    )
    c, h, w = x.shape[1:]
    save_checkpoint(
        path,
        module,
        arch=ARCH,
        arch_params={"in_channels": c, "num_classes": num_classes, "image_size": [h, w]},
        input_shape=(c, h, w),
        class_names=None,
        spec=TorchClassifier(module, (c, h, w)).spec,
        metrics=metrics,
    )
    return module, metrics, path


def _accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        pred = torch.cat([module(chunk).argmax(dim=1) for chunk in x.split(1024)])
    return pred == y


def _task(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    pool: tuple[torch.Tensor, torch.Tensor],
    pool_offset: int,
    *,
    epochs: int,
    n_images: int,
    seed: int,
    source: str,
) -> Task:
    """Train on ``train``; draw ``n_images`` correctly classified images from ``pool``."""
    num_classes = int(max(train[1].max(), pool[1].max())) + 1
    module, metrics, checkpoint = _train_or_load(
        name, train[0], train[1], epochs=epochs, seed=seed, num_classes=num_classes
    )
    module.eval()
    correct = _accuracy(module, *pool)
    candidates = correct.nonzero().flatten().numpy()
    if candidates.size < n_images:
        raise SystemExit(f"{name}: only {candidates.size} correctly classified images to attack")
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, n_images, replace=False))
    index = torch.from_numpy(chosen)
    c, h, w = (int(v) for v in train[0].shape[1:])
    info = {
        "source": source,
        "arch": ARCH,
        "train_images": int(train[1].shape[0]),
        "train_metrics": {k: v for k, v in metrics.items() if k != "seconds"},
        "pool_images": int(pool[1].shape[0]),
        "pool_accuracy": round(float(correct.float().mean()), 4),
        "attacked_indices": [int(i) + pool_offset for i in chosen],
        "checkpoint": str(checkpoint),
    }
    return Task(name, module, (c, h, w), num_classes, pool[0][index], pool[1][index], info)


def build_task(
    name: str, n_images: int, seed: int, quick: bool, data_dir: Path = SHARED_DATASETS
) -> Task:
    """Load ``name``'s data with pixelguard's loaders and train (or load) its model."""
    plan = PLANS[name]
    epochs = 2 if quick else plan.epochs
    if name == "digits":
        train, test = load_data("digits", split="train"), load_data("digits", split="test")
        return _task(
            name,
            (train.x, train.y),
            (test.x, test.y),
            0,
            epochs=epochs,
            n_images=n_images,
            seed=seed,
            source="sklearn digits: train split / test split",
        )
    if name == "mnist":
        data = load_data(str(data_dir / "mnist"), split="test")
        return _task(
            name,
            (data.x[:8000], data.y[:8000]),
            (data.x[8000:], data.y[8000:]),
            8000,
            epochs=epochs,
            n_images=n_images,
            seed=seed,
            source="MNIST test set: train on images 0-7999, attack images from 8000-9999",
        )
    tarball = data_dir / "cifar10-jpg.tar.gz"
    per_class = 200 if quick else 2000
    train = load_data(str(tarball), split="train", limit_per_class=per_class)
    test = load_data(str(tarball), split="test", limit_per_class=100)
    return _task(
        name,
        (train.x, train.y),
        (test.x, test.y),
        0,
        epochs=epochs,
        n_images=n_images,
        seed=seed,
        source=f"CIFAR-10 JPEG: {per_class}/class of train, attack images from 100/class of test",
    )


# --------------------------------------------------------------------------- budgets


def de_population(n_params: int) -> int:
    """Real population of the peers' SciPy-derived DE for ``popsize=400``.

    Both peers pass a per-parameter multiplier: ART ``max(1, 400 // n)``, torchattacks
    ``max(1, int(popsize / n))``; the population is that times ``n``.
    """
    return max(1, POPULATION // n_params) * n_params


def peer_iterations(budget: int, population: int, per_generation: int, final: int) -> int:
    """Most DE iterations whose worst case fits ``budget``.

    Worst case: the initial population, then per iteration the population plus
    ``per_generation`` early-stop checks, plus ``final`` queries at the end.
    """
    return max(0, (budget - population - final) // (population + per_generation))


# --------------------------------------------------------------------------- attacks


def run_pixelguard(
    task: Task,
    counting: CountingModule,
    k: int,
    budget: int,
    seed: int,
    *,
    batch_size: int | None = None,
) -> AttackRun:
    """pixelguard PixelDE on the whole batch at once (its normal use).

    ``batch_size`` is the TorchClassifier's chunk size (None: the adapter's default).
    """
    generations = math.ceil(budget / POPULATION) - 1
    attack = PixelDE(
        pixels=k, population=POPULATION, generations=generations, seed=seed, budget=budget
    )
    classifier = TorchClassifier(counting, task.input_shape, output="logits")
    if batch_size is not None:
        classifier.batch_size = batch_size
    counting.reset()
    start = time.perf_counter()
    result = attack.run(classifier, task.x, task.y)
    wall = time.perf_counter() - start
    forward = counting.reset()
    notes = {
        "claimed_success": result.success.tolist(),
        "attack_wall_time": round(result.wall_time, 4),
        "model_batch_size": classifier.batch_size,
    }
    return AttackRun(
        "pixelguard",
        k,
        attack.to_dict(),
        result.x_adv,
        result.queries.numpy(),
        wall,
        forward,
        notes,
    )


def _per_image(
    name: str,
    task: Task,
    counting: CountingModule,
    k: int,
    config: dict[str, Any],
    attack_one: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    seed: int,
) -> AttackRun:
    """Run a peer one image per call, counting each image's queries."""
    np.random.seed(seed)  # both peers draw from numpy's global RNG and take no seed
    advs, queries = [], []
    forward = CallStats()
    start = time.perf_counter()
    for i in range(task.x.shape[0]):
        counting.reset()
        advs.append(attack_one(task.x[i : i + 1], task.y[i : i + 1]))
        stats = counting.reset()
        queries.append(stats.images)
        forward.add(stats)
        logger.debug("%s k=%d image %d: %d queries", name, k, i, stats.images)
    wall = time.perf_counter() - start
    return AttackRun(
        name, k, config, torch.cat(advs), np.array(queries, dtype=np.int64), wall, forward
    )


def run_art(task: Task, counting: CountingModule, k: int, budget: int, seed: int) -> AttackRun:
    """ART PixelAttack: differential evolution (es=1), exactly k pixels (th=k), untargeted."""
    from art.attacks.evasion import PixelAttack
    from art.estimators.classification import PyTorchClassifier

    c = task.input_shape[0]
    population = de_population(k * (2 + c))
    # Per iteration one early-stop check (the DE callback), then one final check.
    max_iter = peer_iterations(budget, population, per_generation=1, final=1)
    estimator = PyTorchClassifier(
        model=counting,
        loss=nn.CrossEntropyLoss(),
        input_shape=task.input_shape,
        nb_classes=task.num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    attack = PixelAttack(estimator, th=k, es=1, max_iter=max_iter, targeted=False, verbose=False)
    config = {
        "th": k,
        "es": 1,
        "max_iter": max_iter,
        "targeted": False,
        "population": population,
        "predict_batch_size": 128,
    }

    def attack_one(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # ART's vendored DE divides tol by a convergence of 0 when all energies tie.
        with np.errstate(divide="ignore"):
            return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

    return _per_image("art", task, counting, k, config, attack_one, seed)


def run_torchattacks(
    task: Task, counting: CountingModule, k: int, budget: int, seed: int
) -> AttackRun:
    """torchattacks OnePixel with ``popsize`` set so its real population is about 400."""
    import torchattacks

    c = task.input_shape[0]
    population = de_population(k * (2 + c))
    # Per iteration one early-stop check (the DE callback); no final check.
    steps = peer_iterations(budget, population, per_generation=1, final=0)
    attack = torchattacks.OnePixel(
        counting, pixels=k, steps=steps, popsize=POPULATION, inf_batch=population
    )
    config = {
        "pixels": k,
        "steps": steps,
        "popsize": POPULATION,
        "inf_batch": population,
        "population": population,
    }

    def attack_one(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack(x, y).detach()

    return _per_image("torchattacks", task, counting, k, config, attack_one, seed)


Runner = Callable[[Task, CountingModule, int, int, int], AttackRun]
"""``runner(task, counting_module, k, budget, seed)``."""
RUNNERS: dict[str, Runner] = {
    "pixelguard": run_pixelguard,
    "art": run_art,
    "torchattacks": run_torchattacks,
}


# --------------------------------------------------------------------------- verification


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def verify(task: Task, run: AttackRun, budget: int, throughput: ThroughputTable) -> dict[str, Any]:
    """Check the run with a fresh forward pass and summarise it."""
    x, x_adv = task.x, run.x_adv.to(torch.float32)
    in_range = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(dim=1)
    pixels = l0_pixels(x, x_adv, L0_TOLERANCE)
    with torch.no_grad():
        pred = torch.cat([task.module(chunk).argmax(dim=1) for chunk in x_adv.split(1024)])
    fooled = pred != task.y
    success = fooled & (pixels <= run.pixels) & in_range
    s = success.numpy()
    queries = run.queries
    n = int(x.shape[0])
    model_seconds = throughput.model_seconds(run.forward.batch_sizes)
    summary: dict[str, Any] = {
        "n_images": n,
        "success_rate": round(float(s.mean()), 4),
        "successes": int(s.sum()),
        "fooled_but_too_many_pixels": int((fooled & (pixels > run.pixels)).sum()),
        "out_of_range_images": int((~in_range).sum()),
        "perturbed_on_failure": int(((~success) & (pixels > 0)).sum()),
        "median_pixels_success": _median(pixels.numpy()[s]),
        "median_queries": _median(queries),
        "median_queries_success": _median(queries[s]),
        "mean_queries": round(float(queries.mean()), 1),
        "max_queries": int(queries.max()),
        "over_budget_images": int((queries > budget).sum()),
        "total_queries": int(queries.sum()),
        "forward_images": run.forward.images,
        "forward_calls": run.forward.calls,
        "mean_forward_batch": round(run.forward.images / max(run.forward.calls, 1), 1),
        "wall_seconds": round(run.wall_seconds, 3),
        "seconds_per_image": round(run.wall_seconds / n, 4),
        "model_seconds_estimate": round(model_seconds, 3),
        "overhead_ratio": round(run.wall_seconds / model_seconds, 2) if model_seconds else None,
        "forward_seconds_measured": round(run.forward.seconds, 3),
        "overhead_ratio_measured": (
            round(run.wall_seconds / run.forward.seconds, 2) if run.forward.seconds else None
        ),
    }
    claimed = run.notes.get("claimed_success")
    if claimed is not None:
        summary["claimed_but_not_verified"] = int((torch.tensor(claimed) & ~success).sum())
        summary["verified_but_not_claimed"] = int((~torch.tensor(claimed) & success).sum())
    per_image = {
        "success": s.tolist(),
        "pixels_changed": pixels.tolist(),
        "pred_after": pred.tolist(),
        "queries": queries.tolist(),
    }
    return {
        "dataset": task.name,
        "attack": run.attack,
        "pixels": run.pixels,
        "budget": budget,
        "config": run.config,
        "summary": summary,
        "forward": run.forward.to_dict(),
        "notes": {k: v for k, v in run.notes.items() if k != "claimed_success"},
        "per_image": per_image,
    }


# --------------------------------------------------------------------------- report


def _fmt(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None, digits: int = 1) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.{digits}f}x"


def _config_line(records: list[dict[str, Any]]) -> str:
    """How each attack spent the budget at each k (generations / iterations)."""
    parts = []
    for r in records:
        c = r["config"]
        if r["attack"] == "pixelguard":
            parts.append(
                f"k={r['pixels']} pixelguard population {c['population']} x "
                f"{c['generations']} generations"
            )
        elif r["attack"] == "art":
            parts.append(f"ART population {c['population']}, max_iter {c['max_iter']}")
        else:
            parts.append(f"torchattacks population {c['population']}, steps {c['steps']}")
    return "; ".join(parts)


def render_markdown(results: dict[str, Any]) -> str:
    """Tables of per-attack figures and of pixelguard's ratios to each peer."""
    lines = [
        f"`{results['command']}` ({results['started_utc']}, {results['machine']['cpu']}, "
        f"{results['threads']} torch threads, load average at start/end "
        f"{results['load_average_start']} / {results['load_average_end']})",
        "",
    ]
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for record in results["runs"]:
        by_dataset.setdefault(record["dataset"], []).append(record)
    for name, records in by_dataset.items():
        info = results["datasets"][name]
        lines += [
            f"### {name}: {info['n_images']} images, budget {info['budget']:,} queries per image",
            "",
            f"Model {info['arch']} ({info['source']}); clean accuracy on the attack pool "
            f"{info['pool_accuracy']:.1%}. {_config_line(records)}.",
            "",
            "| k | attack | success | median px (succ.) | median queries | median queries "
            "(succ.) | max queries | s / image | overhead ratio (est. / in-forward) "
            "| perturbed on failure |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in records:
            s = r["summary"]
            lines.append(
                f"| {r['pixels']} | {r['attack']} | {s['success_rate']:.1%} "
                f"({s['successes']}/{s['n_images']}) | {_fmt(s['median_pixels_success'])} "
                f"| {_fmt(s['median_queries'])} | {_fmt(s['median_queries_success'])} "
                f"| {_fmt(s['max_queries'])} | {s['seconds_per_image']:.3f} "
                f"| {_fmt(s['overhead_ratio'], 2)} / {_fmt(s['overhead_ratio_measured'], 2)} "
                f"| {s['perturbed_on_failure']} |"
            )
        lines.append("")
        peers = [r for r in records if r["attack"] != "pixelguard"]
        ours = {r["pixels"]: r for r in records if r["attack"] == "pixelguard"}
        if peers and ours:
            lines += [
                f"pixelguard relative to each peer on {name} (success: pixelguard minus peer, "
                "in points; queries and time: peer / pixelguard, above 1 favours pixelguard)",
                "",
                "| k | peer | success diff | images both fooled | median queries there "
                "(peer / pg) | s / image | overhead ratio est. (peer / pg) |",
                "|---|---|---|---|---|---|---|",
            ]
            for r in peers:
                pg_record = ours.get(r["pixels"])
                if pg_record is None:
                    continue
                pg, s = pg_record["summary"], r["summary"]
                diff = 100 * (pg["success_rate"] - s["success_rate"])
                both, (q_pg, q_peer) = joint_median_queries(pg_record, r)
                lines.append(
                    f"| {r['pixels']} | {r['attack']} | {diff:+.1f} | {both} "
                    f"| {_ratio(q_peer, q_pg)} "
                    f"| {_ratio(s['seconds_per_image'], pg['seconds_per_image'])} "
                    f"| {_ratio(s['overhead_ratio'], pg['overhead_ratio'])} |"
                )
            lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--datasets",
        default="digits,mnist",
        help="comma-separated: digits, mnist, cifar10 (default: digits,mnist)",
    )
    parser.add_argument(
        "--pixels", default="1,3,5", help="comma-separated k values (default: 1,3,5)"
    )
    parser.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="images per dataset, the same for every attack (default: per dataset)",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="queries per image for every attack (default per dataset: "
        "400 x (1 + generations): digits 20,400, mnist and cifar10 4,400)",
    )
    parser.add_argument(
        "--peers",
        default="art,torchattacks",
        help="comma-separated peers: art, torchattacks, or none",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared or busy machine, 2+ threads make small "
        "forward batches several times slower and the timings erratic)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for training, image choice, attacks"
    )
    parser.add_argument(
        "--model-batch-size",
        type=int,
        default=None,
        help="pixelguard's TorchClassifier chunk size (default: the adapter's default)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=SHARED_DATASETS,
        help="folder holding mnist/ and cifar10-jpg.tar.gz (default: ../shared/datasets)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/pixel"), help="output folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 4 images, k=1, budget 2,000, 2 training epochs",
    )
    parser.add_argument("--verbose", action="store_true", help="log every peer image")
    args = parser.parse_args(argv)
    args.datasets = _csv(args.datasets)
    unknown = set(args.datasets) - set(PLANS)
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(sorted(unknown))}")
    args.peers = [] if args.peers == "none" else _csv(args.peers)
    if set(args.peers) - {"art", "torchattacks"}:
        parser.error("--peers takes art, torchattacks or none")
    try:
        args.pixels = [int(v) for v in _csv(args.pixels)]
    except ValueError:
        parser.error(f"--pixels takes comma-separated integers, got {args.pixels!r}")
    for name in ("n_images", "budget", "threads", "model_batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if not args.pixels or min(args.pixels) < 1:
        parser.error("--pixels needs positive integers")
    if args.quick:
        args.pixels = args.pixels[:1]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write ``results.json`` and ``results.md``; print the table."""
    args = parse_args(argv)
    run = begin_run("benchmarks/bench_pixel.py", argv, args.threads, verbose=args.verbose)
    threads, started = run.threads, run.started
    results: dict[str, Any] = {
        "command": run.command,
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
        "versions": package_versions(
            [
                "pixelguard",
                "torch",
                "numpy",
                "scipy",
                "adversarial-robustness-toolbox",
                "torchattacks",
            ]
        ),
        "pixelguard_source": source_revision(Path(__file__).resolve().parents[1]),
        "threads": threads,
        "model_batch_size": args.model_batch_size,
        "population": POPULATION,
        "l0_tolerance": L0_TOLERANCE,
        "datasets": {},
        "runs": [],
    }
    attacks = ["pixelguard", *args.peers]
    runners: dict[str, Runner] = {
        **RUNNERS,
        "pixelguard": partial(run_pixelguard, batch_size=args.model_batch_size),
    }
    for name in args.datasets:
        plan = PLANS[name]
        n_images = args.n_images or (4 if args.quick else plan.n_images)
        budget = args.budget or (2000 if args.quick else POPULATION * (1 + plan.generations))
        task = build_task(name, n_images, args.seed, args.quick, args.data_dir)
        logger.info("%s: measuring forward throughput", name)
        throughput = ThroughputTable.measure(task.module, task.input_shape)
        counting = CountingModule(task.module).eval()
        results["datasets"][name] = {
            **task.info,
            "n_images": n_images,
            "budget": budget,
            "input_shape": list(task.input_shape),
            "throughput_images_per_second": throughput.to_dict(),
        }
        for k in args.pixels:
            for attack in attacks:
                logger.info(
                    "%s k=%d: %s on %d images, budget %d", name, k, attack, n_images, budget
                )
                run = runners[attack](task, counting, k, budget, args.seed)
                record = verify(task, run, budget, throughput)
                s = record["summary"]
                logger.info(
                    "%s k=%d %s: success %.1f%%, median queries %s, %.3f s/image",
                    name,
                    k,
                    attack,
                    100 * s["success_rate"],
                    s["median_queries"],
                    s["seconds_per_image"],
                )
                results["runs"].append(record)
    results["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["load_average_end"] = load_average()
    results["wall_seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
