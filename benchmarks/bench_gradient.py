"""Linf PGD side by side: pixelguard PGD vs torchattacks PGD vs ART ProjectedGradientDescentPyTorch.

One process, the same trained model and the same correctly classified images for
every attack, the same eps, step size, number of steps and one random start. After
one warm-up run each, the attacks run ``--repeats`` interleaved rounds; each one's
median wall time gives its throughput in attacked images per second. Every success rate is checked by this
script: an image counts when a fresh forward pass on the returned image gives a
label other than the true one *and* it lies within ``eps`` (Linf, 1e-6 slack) of the
clean image and in [0, 1]. Images pushed through the model's ``forward`` are
counted for every attack with :class:`CountingModule`.

pixelguard stops each image at its first success; the peers run every step on every
image. The ``fwd imgs`` column shows what that saves; ``--eps`` sets how many images
fall early (at a small eps few do and the comparison is step for step).

Example:
    python benchmarks/bench_gradient.py --quick
    python benchmarks/bench_gradient.py --datasets digits,mnist --n-images 512 --steps 40
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    CallStats,
    CountingModule,
    describe_machine,
    load_average,
    package_versions,
    set_threads,
)
from bench_pixel import Task, build_task  # noqa: E402
from pixelguard.attacks.pgd import PGD  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402

logger = logging.getLogger("benchmarks.gradient")

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``attack(x, y) -> x_adv`` with everything else bound."""


def pixelguard_pgd(module: nn.Module, task: Task, eps: float, step: float, steps: int) -> AttackFn:
    model = TorchClassifier(module, task.input_shape, output="logits", batch_size=4096)
    attack = PGD(eps=eps, step_size=step, steps=steps, random_start=True, seed=0)
    return lambda x, y: attack.run(model, x, y).x_adv


def torchattacks_pgd(
    module: nn.Module, task: Task, eps: float, step: float, steps: int
) -> AttackFn:
    import torchattacks

    attack = torchattacks.PGD(module, eps=eps, alpha=step, steps=steps, random_start=True)
    return lambda x, y: attack(x, y)


def art_pgd(module: nn.Module, task: Task, eps: float, step: float, steps: int) -> AttackFn:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    estimator = PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=task.input_shape,
        nb_classes=task.num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    attack = ProjectedGradientDescentPyTorch(
        estimator,
        norm=np.inf,
        eps=eps,
        eps_step=step,
        max_iter=steps,
        num_random_init=1,
        batch_size=4096,
        verbose=False,
    )

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(attack.generate(x=x.numpy(), y=y.numpy()))

    return run


RUNNERS: dict[str, Callable[[nn.Module, Task, float, float, int], AttackFn]] = {
    "pixelguard": pixelguard_pgd,
    "torchattacks": torchattacks_pgd,
    "art": art_pgd,
}


def verified_success(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, eps: float
) -> float:
    """Share of images misclassified by a fresh forward pass, within eps and [0, 1]."""
    with torch.no_grad():
        pred = module(x_adv).argmax(dim=1)
    inside = ((x_adv - x).flatten(1).abs().amax(dim=1) <= eps + 1e-6) & (
        x_adv.flatten(1).amin(dim=1) >= 0
    )
    inside &= x_adv.flatten(1).amax(dim=1) <= 1
    return float(((pred != y) & inside).float().mean())


def measure(names: list[str], task: Task, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Warm every attack up once, then time ``args.repeats`` rounds of all of them.

    The rounds interleave the attacks, so that a change of load on the machine hits
    every attack alike; each attack's median wall time is reported.
    """
    step = 2.5 * args.eps / args.steps
    counting = {name: CountingModule(task.module).eval() for name in names}
    attacks = {
        name: RUNNERS[name](counting[name], task, args.eps, step, args.steps) for name in names
    }
    x, y = task.x, task.y
    times: dict[str, list[float]] = {name: [] for name in names}
    forward = {name: CallStats() for name in names}
    x_adv = {}
    for name in names:
        attacks[name](x, y)
        counting[name].reset()
    for _ in range(args.repeats):
        for name in names:
            start = time.perf_counter()
            x_adv[name] = attacks[name](x, y)
            times[name].append(time.perf_counter() - start)
            forward[name].add(counting[name].reset())
    rows = []
    for name in names:
        wall = statistics.median(times[name])
        rows.append(
            {
                "attack": name,
                "wall_seconds": round(wall, 4),
                "images_per_second": round(x.shape[0] / wall, 1),
                "forward_images_per_run": forward[name].images // args.repeats,
                "success_rate": round(
                    verified_success(task.module, x, y, x_adv[name], args.eps), 4
                ),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,mnist", help="comma-separated: digits, mnist")
    parser.add_argument("--attacks", default=",".join(RUNNERS), help="comma-separated attacks")
    parser.add_argument("--n-images", type=int, default=256)
    parser.add_argument("--eps", type=float, default=0.1, help="Linf budget in [0, 1] units")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: all cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2-epoch models, 64 images, 1 repeat")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("art").setLevel(logging.WARNING)
    if args.quick:
        args.n_images, args.repeats = 64, 1
    threads = set_threads(args.threads)
    names = [a for a in args.attacks.split(",") if a]
    results: dict[str, Any] = {
        "machine": describe_machine(),
        "versions": package_versions(["torch", "torchattacks", "adversarial-robustness-toolbox"]),
        "threads": threads,
        "load_average_start": load_average(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": {},
    }
    for dataset in [d for d in args.datasets.split(",") if d]:
        task = build_task(dataset, args.n_images, args.seed, args.quick)
        rows = measure(names, task, args)
        results["tasks"][dataset] = {"input_shape": task.input_shape, "rows": rows}
        print(
            f"\n{dataset} {task.input_shape}, {args.n_images} images, Linf eps {args.eps}, "
            f"{args.steps} steps, {threads} threads"
        )
        print(f"{'attack':<14}{'images/s':>10}{'wall s':>9}{'success':>9}{'fwd imgs':>10}")
        for r in rows:
            print(
                f"{r['attack']:<14}{r['images_per_second']:>10}{r['wall_seconds']:>9}"
                f"{r['success_rate']:>9}{r['forward_images_per_run']:>10}"
            )
    results["load_average_end"] = load_average()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
