"""What ``pixelguard attack`` runs without ``--attack``, measured against the old default.

``pixelguard attack`` used to run ``pixel-de`` (differential evolution, population 400,
100 generations); it now runs ``sparse-rs`` (the exact corner scan at one pixel when its
steps or budget cover ``2**C * H * W``; sparse random search with 10,000 steps for more
pixels). This script builds every attack exactly as the CLI does (the CLI's own option
helpers: ``resolve_pixels``, ``named_attack_options``, ``build_attack``, then
``pixelguard.create_attack``), loads the model and data with the CLI's loaders, and
calls ``pixelguard.attack_dataset(model, dataset, attack)`` with the CLI's chunk size
and a checkpoint folder, as ``pixelguard attack`` does. It measures:

1. k = 1: the old default (pixel-de, its defaults) against the new default (sparse-rs,
   its defaults: the exact corner scan);
2. k > 1 (default 5): pixel-de defaults against sparse-rs defaults (10,000 steps) and
   sparse-rs at smaller budgets, both as ``--budget Q`` (10,000 steps cut at Q
   queries) and as ``--iterations Q`` (the step-size schedule compressed into Q steps);
3. one peer library at its default budget (ART ``PixelAttack``, ``es=1``, ``max_iter=100``,
   ``th=k``; or torchattacks ``OnePixel`` at the paper's 400 x 100), on a subset, against
   pixelguard's default run on the same subset.

The model is the MNIST small CNN of ``bench_evaluate.py`` (``pixelguard train``, 10
epochs, on MNIST test images 0-7,999; cached in ``bench-out/evaluate``). The attacked
images are drawn with a seeded RNG from the correctly classified images 8,000-9,999.
``--datasets cifar10`` adds the CIFAR-10 small CNN of ``bench_sparse.py``.

Every success is re-verified here: a fresh forward pass of the bare module on the
returned image gives another label, the image lies in [0, 1] and at most k pixels
differ from the clean one (a pixel differs when a channel moves by more than 1e-6).

pixel-de at its default (40,400 queries per image) costs far more than the rest, so it
runs on the first ``--de-images`` of the images (default 20) and the peer on the first
``--peer-images`` (default 4); ``--de-images 0`` leaves it out.

Example:
    python benchmarks/bench_default_attack.py --quick
    python benchmarks/bench_default_attack.py            # MNIST, 40 images, k = 1 and 5
    python benchmarks/bench_default_attack.py --pixels 10 --de-images 0 --peer none \
        --no-iterations --out bench-out/default-attack/k10   # sparse-rs budgets only
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pixelguard  # noqa: E402
from _common import (  # noqa: E402
    CountingModule,
    begin_run,
    describe_machine,
    load_average,
    package_versions,
    source_revision,
    write_results,
)
from _sparse_common import L0_TOLERANCE, strict_check  # noqa: E402
from bench_evaluate import prepare_data, train_model  # noqa: E402
from bench_pixel import SHARED_DATASETS, build_task, de_population  # noqa: E402
from pixelguard.attacks.corner_search import corner_search_cost  # noqa: E402
from pixelguard.cli import attack_options  # noqa: E402
from pixelguard.cli import options as opt  # noqa: E402
from pixelguard.cli.output import attack_text  # noqa: E402
from pixelguard.data import Dataset  # noqa: E402
from pixelguard.models.base import Classifier  # noqa: E402

logger = logging.getLogger("benchmarks.default_attack")

REPO = Path(__file__).resolve().parents[1]
CLI_CHUNK_SIZE = 100
"""``pixelguard attack --chunk-size`` default: images per attack call and checkpoint."""


# --------------------------------------------------------------------------- tasks


@dataclass
class Task:
    """A classifier loaded as the CLI loads it, its bare module, and the attacked images."""

    name: str
    classifier: Classifier
    module: nn.Module
    dataset: Dataset
    info: dict[str, Any]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dataset.image_shape


def _correct_sample(
    classifier: Classifier, dataset: Dataset, n: int, seed: int, offset: int
) -> tuple[Dataset, dict[str, Any]]:
    """``n`` correctly classified images of ``dataset``, drawn with ``seed``, in index order."""
    with torch.no_grad():
        pred = classifier.predict(dataset.x).argmax(dim=1)
    correct = (pred == dataset.y).numpy()
    candidates = correct.nonzero()[0]
    if candidates.size < n:
        raise SystemExit(f"only {candidates.size} correctly classified images, {n} wanted")
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, n, replace=False))
    info = {
        "pool_images": len(dataset),
        "pool_accuracy": round(float(correct.mean()), 4),
        "attacked_indices": [int(i) + offset for i in chosen],
    }
    return dataset.subset(chosen), info


def mnist_task(args: argparse.Namespace) -> Task:
    """bench_evaluate's MNIST model (``pixelguard train``), loaded as ``pixelguard attack`` does."""
    train_path, eval_path = prepare_data(args.data_dir, args.model_dir / "data")
    model_path = args.model_dir / f"mnist-small-cnn-e{args.epochs}.pt"
    trained = None
    if not model_path.exists():
        trained = round(train_model(train_path, args.epochs, model_path), 1)
    dataset = opt.DataOptions(split="all").load(str(eval_path))
    classifier = opt.ModelOptions().load(str(model_path), dataset.image_shape)
    sample, info = _correct_sample(classifier, dataset, args.n_images, args.seed, offset=8000)
    info.update(
        {
            "model": str(model_path),
            "data": str(eval_path),
            "source": "MNIST test set: pixelguard train on images 0-7,999 "
            f"({args.epochs} epochs), attacked images from 8,000-9,999",
            "train_seconds": trained,
        }
    )
    return Task("mnist", classifier, classifier.module, sample, info)


def cifar10_task(args: argparse.Namespace) -> Task:
    """bench_sparse's CIFAR-10 small CNN (cached in bench-out/models), as a library model."""
    built = build_task("cifar10", args.cifar_images, args.seed, args.quick, args.data_dir)
    classifier = pixelguard.load_model(built.module, input_shape=built.input_shape)
    dataset = Dataset(built.x, built.y, None, "cifar10 (bench_pixel.build_task)")
    info = {k: v for k, v in built.info.items() if k != "train_metrics"}
    return Task("cifar10", classifier, built.module, dataset, info)


# --------------------------------------------------------------------------- attacks


@dataclass
class Spec:
    """One attack as the CLI options that select it (None: option not given)."""

    label: str
    attack: str | None = None
    pixels: int | None = None
    budget: int | None = None
    iterations: int | None = None
    params: tuple[str, ...] = ()

    def cli(self) -> str:
        """The ``pixelguard attack`` options for this run (model, data, out left out)."""
        parts = []
        if self.attack is not None:
            parts += ["--attack", self.attack]
        if self.pixels is not None:
            parts += ["--pixels", str(self.pixels)]
        if self.budget is not None:
            parts += ["--budget", str(self.budget)]
        if self.iterations is not None:
            parts += ["--iterations", str(self.iterations)]
        for p in self.params:
            parts += ["--param", p]
        return " ".join(parts) or "(defaults)"


def build_cli_attack(spec: Spec, seed: int) -> Any:
    """The attack ``pixelguard attack`` builds from these options (its own helpers)."""
    name, pixel_budget = attack_options.resolve_pixels(
        spec.attack or attack_options.DEFAULT_ATTACK,
        None if spec.pixels is None else str(spec.pixels),
    )
    return attack_options.build_attack(
        name,
        {
            **attack_options.named_attack_options(
                name, step=None, iterations=spec.iterations, eps=None
            ),
            "pixels": pixel_budget,
            "budget": spec.budget,
            "seed": seed,
            "population": None,
            "generations": None,
        },
        list(spec.params),
    )


def _scan_runs(attack: Any, shape: tuple[int, int, int]) -> bool:
    """Whether sparse-rs runs the exact corner scan (its documented rule)."""
    if attack.name != "sparse-rs":
        return False
    allowed = attack.budget if attack.budget is not None else attack.steps
    return attack.pixels == 1 and attack.exact_single_pixel and allowed >= corner_search_cost(shape)


class ForwardCounter:
    """Counts the images through a module's ``forward`` with hooks (the call path is unchanged)."""

    def __init__(self, module: nn.Module) -> None:
        self.images = 0
        self.calls = 0
        self.seconds = 0.0
        self._start = 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, _module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.images += int(inputs[0].shape[0])
        self.calls += 1
        self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._start

    def take(self) -> dict[str, Any]:
        out = {
            "images": self.images,
            "calls": self.calls,
            "forward_seconds": round(self.seconds, 3),
        }
        self.images, self.calls, self.seconds = 0, 0, 0.0
        return out


def run_pixelguard(
    task: Task, counter: ForwardCounter, spec: Spec, dataset: Dataset, seed: int, k: int
) -> dict[str, Any]:
    """``pixelguard.attack_dataset`` with the CLI's attack, chunk size and a checkpoint folder."""
    attack = build_cli_attack(spec, seed)
    counter.take()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = pixelguard.attack_dataset(
            task.classifier,
            dataset,
            attack,
            chunk_size=CLI_CHUNK_SIZE,
            checkpoint_dir=Path(tmp) / opt.CHECKPOINT_FOLDER,
        )
        wall = time.perf_counter() - start
    forward = counter.take()
    n = len(dataset)
    if run.n_attacked != n:
        raise SystemExit(f"{spec.label}: attacked {run.n_attacked} of {n} (all should be correct)")
    result = run.result
    check = strict_check(task.module, dataset.x, dataset.y, result.x_adv)
    success = check["fooled"] & (check["pixels"] <= k)
    queries = result.queries.numpy().astype(np.int64)
    return {
        "label": spec.label,
        "library": "pixelguard",
        "cli": spec.cli(),
        "cli_prints": attack_text(run),
        "attack": result.attack,
        "params": result.params,
        "budget": result.budget,
        "corner_scan": _scan_runs(attack, task.shape),
        "pixels": k,
        "n_images": n,
        "wall_seconds": round(wall, 3),
        "attack_wall_time": round(result.wall_time, 3),
        "forward": forward,
        "claimed_success": int(result.success.sum()),
        "per_image": {
            "success": success.tolist(),
            "queries": queries.tolist(),
            "pixels_changed": check["pixels"].tolist(),
            "pred_after": check["pred"].tolist(),
        },
    }


def run_peer(
    task: Task, peer: str, x: torch.Tensor, y: torch.Tensor, k: int, seed: int, quick: bool
) -> dict[str, Any]:
    """The peer at its default budget, one image per call, queries counted by a wrapper."""
    counting = CountingModule(task.module).eval()
    c = task.shape[0]
    if peer == "art":
        from art.attacks.evasion import PixelAttack
        from art.estimators.classification import PyTorchClassifier

        estimator = PyTorchClassifier(
            model=counting,
            loss=nn.CrossEntropyLoss(),
            input_shape=task.shape,
            nb_classes=task.classifier.num_classes,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        # Defaults (es=1: differential evolution, max_iter=100, untargeted); th=k because
        # th=None binary-searches th in 1..127 (peer-libraries.md).
        extra = {"max_iter": 3} if quick else {}
        attack = PixelAttack(estimator, th=k, verbose=False, **extra)
        config = {
            "library": "ART",
            "attack": "PixelAttack",
            "th": k,
            "es": attack.es,
            "max_iter": attack.max_iter,
            "population": de_population(k * (2 + c)),
        }

        def one(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            with np.errstate(divide="ignore"):  # ART's DE divides by a zero convergence
                return torch.from_numpy(attack.generate(xi.numpy(), y=yi.numpy()))

    else:
        import torchattacks

        population = de_population(k * (2 + c))
        steps = 3 if quick else 100
        # popsize is a per-parameter multiplier: 400 gives the paper's ~400 population
        # (its default 10 gives 9 candidates; peer-libraries.md).
        ta = torchattacks.OnePixel(
            counting, pixels=k, steps=steps, popsize=400, inf_batch=population
        )
        config = {
            "library": "torchattacks",
            "attack": "OnePixel",
            "pixels": k,
            "steps": steps,
            "popsize": 400,
            "population": population,
        }

        def one(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return ta(xi, yi).detach()

    np.random.seed(seed)  # both peers draw from numpy's global RNG and take no seed
    advs, queries = [], []
    start = time.perf_counter()
    for i in range(int(x.shape[0])):
        counting.reset()
        advs.append(one(x[i : i + 1], y[i : i + 1]))
        queries.append(counting.reset().images)
        logger.info("  %s k=%d image %d/%d: %d queries", peer, k, i + 1, len(x), queries[-1])
    wall = time.perf_counter() - start
    x_adv = torch.cat(advs)
    check = strict_check(task.module, x, y, x_adv)
    success = check["fooled"] & (check["pixels"] <= k)
    return {
        "label": f"{peer} (default budget)",
        "library": peer,
        "config": config,
        "pixels": k,
        "n_images": int(x.shape[0]),
        "wall_seconds": round(wall, 3),
        "per_image": {
            "success": success.tolist(),
            "queries": queries,
            "pixels_changed": check["pixels"].tolist(),
            "pred_after": check["pred"].tolist(),
        },
    }


# --------------------------------------------------------------------------- statistics


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def stats(r: dict[str, Any], images: Sequence[int] | None = None) -> dict[str, Any]:
    """Success, queries and time of run ``r`` (on the positions ``images`` of its images)."""
    per = r["per_image"]
    idx = list(range(r["n_images"])) if images is None else list(images)
    success = [bool(per["success"][i]) for i in idx]
    queries = [int(per["queries"][i]) for i in idx]
    fooled_q = [q for q, s in zip(queries, success) if s]
    return {
        "n": len(idx),
        "successes": sum(success),
        "success_rate": round(sum(success) / len(idx), 4) if idx else None,
        "median_queries_fooled": _median(fooled_q),
        "median_queries": _median(queries),
        "max_queries": max(queries) if queries else None,
        "total_queries": sum(queries),
        "seconds_per_image": round(r["wall_seconds"] / r["n_images"], 3),
    }


def common_median(runs: Sequence[dict[str, Any]], images: Sequence[int]) -> dict[str, Any]:
    """Images (positions in ``images``) fooled by every run, and each run's median queries there."""
    both = [
        j
        for j, i in enumerate(images)
        if all(r["per_image"]["success"][r["_pos"][i]] for r in runs)
    ]
    return {
        "count": len(both),
        "median_queries": {
            r["label"]: _median([r["per_image"]["queries"][r["_pos"][images[j]]] for j in both])
            for r in runs
        },
    }


# --------------------------------------------------------------------------- report


def _fmt(v: float | int | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def _pos(run: dict[str, Any], images: Sequence[int]) -> dict[int, int]:
    """Dataset position -> position in ``run`` for the images ``run`` attacked."""
    return {i: j for j, i in enumerate(images)}


def comparison(
    section: dict[str, Any], runs: dict[str, dict[str, Any]]
) -> tuple[list[str], dict[str, Any]]:
    """One table: every run on ``section['images']``, median queries over the common set."""
    images = section["images"]
    chosen = [runs[label] for label in section["runs"]]
    common = common_median(chosen, images)
    lines = [
        "| attack | CLI options | what ran | success | median queries (fooled) "
        f"| median queries (all {common['count']} fooled by every row) | max queries "
        "| total queries | s / image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {}
    for r in chosen:
        s = stats(r, [r["_pos"][i] for i in images])
        rows[r["label"]] = s
        ran = r.get("cli_prints") or ", ".join(f"{k}={v}" for k, v in r["config"].items())
        if r.get("corner_scan"):
            ran += "; exact corner scan"
        lines.append(
            f"| {r['label']} | `{r.get('cli', '-')}` | {ran} | {s['successes']}/{s['n']} "
            f"| {_fmt(s['median_queries_fooled'])} | {_fmt(common['median_queries'][r['label']])} "
            f"| {_fmt(s['max_queries'])} | {_fmt(s['total_queries'])} "
            f"| {_fmt(s['seconds_per_image'], 2)} |"
        )
    return lines, {"rows": rows, "common": common}


def render(results: dict[str, Any]) -> str:
    lines = [
        f"`{results['command']}` ({results['started_utc']}, commit "
        f"`{(results['revision']['commit'] or '?')[:7]}`"
        + (
            f" + uncommitted {', '.join(results['revision']['uncommitted_src_files'])}"
            if results["revision"]["uncommitted_src_files"]
            else ""
        )
        + f"; {results['machine']['cpu']}, {results['machine']['cores']} cores, "
        f"{results['threads']} torch thread; load average {results['load_average_start']} at "
        f"start, {results['load_average_end']} at end; {results['wall_seconds']:.0f} s in all)",
        "",
    ]
    for ds in results["datasets"].values():
        lines += [
            f"### {ds['name']}: {ds['n_images']} images ({ds['info']['source']}; clean accuracy "
            f"on the pool {ds['info']['pool_accuracy']:.1%})",
            "",
        ]
        for sec in ds["sections"]:
            lines += [f"#### {sec['title']}", "", *sec["table"], ""]
            if sec.get("ratios"):
                lines += [*sec["ratios"], ""]
    return "\n".join(lines) + "\n"


def within_line(run: dict[str, Any], limits: Sequence[int]) -> str:
    """How many images ``run`` fooled within each of ``limits`` queries (from its per-image counts)."""
    per = run["per_image"]
    fooled_at = [q for q, ok in zip(per["queries"], per["success"]) if ok]
    parts = [f"<= {q:,}: {sum(f <= q for f in fooled_at)}" for q in sorted(set(limits))]
    largest = f"{max(fooled_at):,}" if fooled_at else "-"
    parts.append(f"all: {len(fooled_at)} (most queries to a success: {largest})")
    return f"{run['label']}: images fooled within a query count, " + ", ".join(parts)


def peer_ratio_lines(peer: dict[str, Any], pg: dict[str, Any]) -> list[str]:
    p, g = stats(peer), stats(pg)
    return [
        "| k | peer | success peer / pixelguard default | s / image peer / pixelguard default "
        "| total queries peer / pixelguard default |",
        "|---|---|---|---|---|",
        f"| {peer['pixels']} | {peer['label']} | {p['successes']}/{p['n']} vs {g['successes']}/"
        f"{g['n']} ({_ratio(p['successes'], g['successes'])}) "
        f"| {_ratio(p['seconds_per_image'], g['seconds_per_image'])} "
        f"| {_ratio(p['total_queries'], g['total_queries'])} |",
    ]


# --------------------------------------------------------------------------- main


def run_task(task: Task, args: argparse.Namespace) -> dict[str, Any]:
    """Every comparison on one task; the runs and the rendered tables."""
    n = len(task.dataset)
    de_n = min(args.de_images, n)
    peer_n = min(args.peer_images, n)
    counter = ForwardCounter(task.module)
    runs: dict[str, dict[str, Any]] = {}
    sections: list[dict[str, Any]] = []
    all_images = list(range(n))
    de_images = list(range(de_n))
    de_params = (f"generations={args.de_generations}",) if args.de_generations is not None else ()

    def go(spec: Spec, k: int, images: list[int]) -> dict[str, Any]:
        key = f"{spec.label}"
        logger.info("%s k=%d: %s on %d images", task.name, k, spec.cli(), len(images))
        r = run_pixelguard(task, counter, spec, task.dataset.subset(images), args.seed, k)
        r["_pos"] = _pos(r, images)
        r["images"] = images
        s = stats(r)
        logger.info(
            "  -> %d/%d fooled, median queries (fooled) %s, %.2f s/image, %s",
            s["successes"],
            s["n"],
            s["median_queries_fooled"],
            s["seconds_per_image"],
            r["cli_prints"],
        )
        runs[key] = r
        return r

    for k in args.pixels:
        pix = None if k == 1 else k  # k = 1 is the CLI default: no --pixels
        new = go(Spec(f"sparse-rs default k={k}", pixels=pix), k, all_images)
        variants = []
        if k > 1:
            for q in args.budgets:
                variants.append(
                    go(Spec(f"sparse-rs --budget {q} k={k}", pixels=pix, budget=q), k, all_images)
                )
                if args.iterations_too:
                    variants.append(
                        go(
                            Spec(f"sparse-rs --iterations {q} k={k}", pixels=pix, iterations=q),
                            k,
                            all_images,
                        )
                    )
        if variants:
            table, data = comparison(
                {"images": all_images, "runs": [new["label"], *(v["label"] for v in variants)]},
                runs,
            )
            sections.append(
                {
                    "title": f"k = {k}: sparse-rs budgets, {n} images",
                    "table": [
                        *table,
                        "",
                        within_line(new, [v["budget"] or v["params"]["steps"] for v in variants]),
                    ],
                    "data": data,
                }
            )
        if de_n:
            old = go(
                Spec(f"pixel-de default k={k}", attack="pixel-de", pixels=pix, params=de_params),
                k,
                de_images,
            )
            table, data = comparison(
                {"images": de_images, "runs": [old["label"], new["label"]]}, runs
            )
            note = (
                f"sparse-rs's row is its {n}-image run restricted to these {de_n} images (s / image "
                f"over all {n})."
                if de_n < n
                else ""
            )
            sections.append(
                {
                    "title": f"k = {k}: old default (pixel-de) vs new default (sparse-rs), {de_n} images",
                    "table": [*table, "", note] if note else table,
                    "data": data,
                }
            )
        if args.peer != "none" and peer_n:
            peer_images = list(range(peer_n))
            sub = task.dataset.subset(peer_images)
            logger.info("%s k=%d: peer %s on %d images", task.name, k, args.peer, peer_n)
            peer = run_peer(task, args.peer, sub.x, sub.y, k, args.seed, args.quick)
            peer["_pos"] = _pos(peer, peer_images)
            peer["images"] = peer_images
            peer["label"] = peer["label"] + f" k={k}"
            runs[peer["label"]] = peer
            pg = go(Spec(f"sparse-rs default k={k}, peer subset", pixels=pix), k, peer_images)
            table, data = comparison(
                {"images": peer_images, "runs": [pg["label"], peer["label"]]}, runs
            )
            sections.append(
                {
                    "title": f"k = {k}: {args.peer} at its default budget vs pixelguard's default, "
                    f"{peer_n} images",
                    "table": table,
                    "ratios": peer_ratio_lines(peer, pg),
                    "data": data,
                }
            )
    for r in runs.values():
        r.pop("_pos", None)
    return {
        "name": task.name,
        "n_images": n,
        "de_images": de_n,
        "peer_images": peer_n,
        "input_shape": list(task.shape),
        "corner_scan_cost": corner_search_cost(task.shape),
        "info": task.info,
        "runs": runs,
        "sections": sections,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", default="mnist", help="comma-separated: mnist, cifar10")
    p.add_argument("--n-images", type=int, default=40, help="MNIST images (default 40)")
    p.add_argument("--cifar-images", type=int, default=20, help="CIFAR-10 images (default 20)")
    p.add_argument(
        "--de-images",
        type=int,
        default=20,
        help="pixel-de runs on the first N of the images (default 20: at its default "
        "40,400-query budget it costs about 20 s per unfooled MNIST image on one core)",
    )
    p.add_argument(
        "--peer-images", type=int, default=4, help="the peer runs on the first N images (default 4)"
    )
    p.add_argument("--pixels", default="1,5", help="comma-separated k (default 1,5)")
    p.add_argument(
        "--budgets",
        default="1000,3000",
        help="smaller sparse-rs budgets at k > 1 (default 1000,3000)",
    )
    p.add_argument(
        "--no-iterations",
        dest="iterations_too",
        action="store_false",
        help="skip the --iterations Q runs (only --budget Q)",
    )
    p.add_argument("--peer", default="art", choices=("art", "onepixel", "none"))
    p.add_argument("--de-generations", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=10, help="training epochs of the MNIST model")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image draw and the attacks")
    p.add_argument("--data-dir", type=Path, default=SHARED_DATASETS)
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path("bench-out/evaluate"),
        help="bench_evaluate's folder: MNIST split and cached model (default bench-out/evaluate)",
    )
    p.add_argument("--out", type=Path, default=Path("bench-out/default-attack"))
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 4 images (pixel-de 2, peer 1), budgets 200,500, pixel-de 3 "
        "generations, peer 3 iterations",
    )
    args = p.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.pixels = [int(v) for v in args.pixels.split(",") if v.strip()]
    args.budgets = [int(v) for v in args.budgets.split(",") if v.strip()]
    if args.quick:
        args.n_images, args.cifar_images = 4, 4
        args.de_images, args.peer_images = 2, 1
        args.budgets = [200, 500]
        args.de_generations = 3
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    run = begin_run("benchmarks/bench_default_attack.py", argv, args.threads)
    threads, started = run.threads, run.started
    clock = time.perf_counter()
    results: dict[str, Any] = {
        "command": run.command,
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
        "revision": source_revision(REPO),
        "versions": package_versions(
            ["pixelguard", "torch", "numpy", "adversarial-robustness-toolbox", "torchattacks"]
        ),
        "threads": threads,
        "l0_tolerance": L0_TOLERANCE,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "datasets": {},
    }
    builders = {"mnist": mnist_task, "cifar10": cifar10_task}
    for name in args.datasets:
        task = builders[name](args)
        start = time.perf_counter()
        results["datasets"][name] = run_task(task, args)
        results["datasets"][name]["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["load_average_end"] = load_average()
    results["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["wall_seconds"] = round(time.perf_counter() - clock, 1)
    write_results(args.out, results, render(results))
    return results


if __name__ == "__main__":
    main()
