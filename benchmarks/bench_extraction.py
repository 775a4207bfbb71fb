"""Model extraction side by side: pixelguard Knockoff Nets vs ART 1.20 ``KnockoffNets``.

One process, one victim, the same query pool, held-out images and budgets for both:

- data: the official MNIST 10k test set (the IDX files in ``--data-dir``, loaded with
  ``pixelguard.data.load_data``). The victim (small-cnn) is trained on images 0-4,999;
  the attacker's query pool is images 5,000-7,999, a **disjoint split of the same
  distribution** (not another distribution), enlarged with copies shifted by up to
  +-2 pixels (``--pool-copies`` in all), so a 20k budget never repeats an image; images
  8,000-9,999 are held out for agreement/accuracy and the transfer attacks.
  ``--pool cifar10`` queries instead with **another distribution**: the 10,000 CIFAR-10
  test photographs (``--cifar``), grey and resized to 28x28, with shifted copies.
- pixelguard ``KnockoffNets(sampling="random")``, two ways: *one-shot* (one training
  run from scratch per budget, ART's protocol exactly) and *curve* (one run whose
  rounds end at the budgets, the surrogate fine-tuned after each round).
- ART ``KnockoffNets(sampling_strategy="random", nb_stolen=budget)``, one run per
  budget, with a ``PyTorchClassifier`` victim and a thieved ``PyTorchClassifier`` of the
  same architecture, initial weights, optimiser (Adam, same lr), batch size and epochs.
  ART draws ``nb_stolen`` pool images without replacement, so its queries equal the
  budget (counted here by wrapping the victim module). Its ``fit`` reduces the victim's
  answers to hard labels (cross-entropy with index targets), with or without
  ``use_probability``; pixelguard trains on the victim's probabilities.
- transfer from the 20k pixelguard surrogate, verified on the victim: PGD (Linf) and
  sparse-PGD (k pixels) success rates, and sparse-rs (k pixels) on the victim from
  scratch vs warm-started from the sparse-PGD adversarial images, same budget.

Agreement = share of held-out images where surrogate and victim predict the same class.

Example:
    python benchmarks/bench_extraction.py --threads 1
    python benchmarks/bench_extraction.py --pool cifar10 --skip-one-shot --out bench-out/extraction-cifar
    python benchmarks/bench_extraction.py --quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
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
    begin_run,
    describe_machine,
    load_average,
    package_versions,
    write_results,
)
from pixelguard.attacks.base import create_attack  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.leakage.extraction import (  # noqa: E402
    KnockoffNets,
    build_surrogate,
    make_holdout,
    measure,
)
from pixelguard.leakage.transfer import transfer_attack, warm_start_sparse_rs  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.models.training import train_classifier  # noqa: E402

logger = logging.getLogger("bench_extraction")


def shifted_pool(x: torch.Tensor, copies: int, seed: int) -> torch.Tensor:
    """``x`` and ``copies - 1`` copies, each image rolled by a random (dy, dx) in [-2, 2]."""
    generator = torch.Generator().manual_seed(seed)
    out = [x]
    for _ in range(copies - 1):
        shifts = torch.randint(-2, 3, (x.shape[0], 2), generator=generator)
        copy = torch.empty_like(x)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                rows = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
                copy[rows] = torch.roll(x[rows], shifts=(dy, dx), dims=(2, 3))
        out.append(copy)
    return torch.cat(out)


def cifar10_grey_pool(
    archive: Path, size: tuple[int, int], limit: int | None = None
) -> torch.Tensor:
    """CIFAR-10 test JPEGs from ``archive`` as grey images resized to ``size`` (another
    distribution than the victim's: natural photographs, not digits), in [0, 1] NCHW."""
    import io
    import tarfile

    from PIL import Image

    images = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not (member.isfile() and member.name.endswith(".jpg") and "test/" in member.name):
                continue
            handle = tar.extractfile(member)
            assert handle is not None
            img = Image.open(io.BytesIO(handle.read())).convert("L").resize(size, Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.float32) / 255.0)
            if limit is not None and len(images) >= limit:
                break
    return torch.from_numpy(np.stack(images)).unsqueeze(1)


def art_knockoff(
    victim_module: CountingModule,
    pool: torch.Tensor,
    budget: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    num_classes: int,
) -> tuple[torch.nn.Module, int, float]:
    """ART's KnockoffNets (random) at ``budget``: the thieved module, queries, seconds."""
    from art.attacks.extraction import KnockoffNets as ArtKnockoff
    from art.estimators.classification import PyTorchClassifier

    shape = tuple(pool.shape[1:])
    victim = PyTorchClassifier(
        model=victim_module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
    )
    thief_module = build_surrogate("small-cnn", shape, num_classes, seed)  # same init as ours
    thief = PyTorchClassifier(
        model=thief_module,
        loss=torch.nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(thief_module.parameters(), lr=lr),
        input_shape=shape,
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
    )
    attack = ArtKnockoff(
        classifier=victim,
        batch_size_fit=batch_size,
        batch_size_query=1024,
        nb_epochs=epochs,
        nb_stolen=budget,
        sampling_strategy="random",
        verbose=False,
    )
    np.random.seed(seed)  # ART samples the pool with numpy's global generator
    torch.manual_seed(seed)  # and its fit shuffles with torch's
    victim_module.reset()
    start = time.perf_counter()
    stolen = attack.extract(pool.numpy(), thieved_classifier=thief)
    seconds = time.perf_counter() - start
    queries = victim_module.reset().images
    return stolen.model.eval(), queries, seconds


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the results record."""
    ds = load_data(str(args.data_dir), split="test")
    x, y = ds.x, ds.y
    n_victim, pool_end = (2000, 3000) if args.quick else (5000, 8000)
    start = time.perf_counter()
    victim_module, victim_metrics = train_classifier(
        x[:n_victim],
        y[:n_victim],
        arch="small-cnn",
        epochs=args.victim_epochs,
        lr=2e-3,
        seed=args.seed,
    )
    victim_seconds = time.perf_counter() - start
    counting = CountingModule(victim_module).eval()
    # output given: no probe query outside the counted ones
    victim = TorchClassifier(counting, tuple(x.shape[1:]), output="logits", batch_size=1024)
    assert victim.num_classes == 10  # the adapter's one probe (4 rows), before any counting
    counting.reset()
    held_x, held_y = x[pool_end:], y[pool_end:]
    if args.quick:
        held_x, held_y = held_x[:1000], held_y[:1000]
    holdout = make_holdout(victim, held_x, held_y)
    counting.reset()
    victim_accuracy = float((holdout.victim_pred == held_y).float().mean())
    if args.pool == "mnist-split":
        pool = shifted_pool(x[n_victim:pool_end], args.pool_copies, args.seed)
        pool_text = (
            f"test images {n_victim}-{pool_end - 1} (disjoint split, same distribution) "
            f"x{args.pool_copies} with +-2 px shifted copies: {pool.shape[0]} images"
        )
    else:
        natural = cifar10_grey_pool(args.cifar, (28, 28), 2000 if args.quick else None)
        pool = shifted_pool(natural, args.pool_copies, args.seed)
        pool_text = (
            f"CIFAR-10 test JPEGs ({natural.shape[0]}, another distribution), grey, resized "
            f"to 28x28, x{args.pool_copies} with +-2 px shifted copies: {pool.shape[0]} images"
        )
    budgets = args.budgets
    if pool.shape[0] < max(budgets):
        raise SystemExit(
            f"the pool holds {pool.shape[0]} images, fewer than the budget {max(budgets)}"
        )
    common = {"epochs": args.epochs, "lr": args.lr, "batch_size": 128, "seed": args.seed}
    rows: list[dict[str, Any]] = []

    # pixelguard, curve: one run with rounds ending at the budgets
    t = time.perf_counter()
    curve_cfg = KnockoffNets(
        budget=max(budgets), rounds=tuple(budgets), sampling=args.sampling, **common
    )
    curve = curve_cfg.run(victim, pool, holdout=holdout)
    curve_seconds = time.perf_counter() - t
    curve_queries = counting.reset().images
    assert curve_queries == curve.queries == max(budgets), (curve_queries, curve.queries)
    for point in curve.curve:
        rows.append(
            {
                "library": "pixelguard",
                "mode": "curve",
                "budget": point.queries,
                "seed": args.seed,
                "queries": point.queries,
                "agreement": point.agreement,
                "accuracy": point.accuracy,
                "seconds": None,
            }
        )
    rows[-1]["seconds"] = round(curve_seconds, 1)

    for budget in budgets:
        seeds = args.seeds if budget <= args.multi_seed_max else [args.seed]
        for seed in seeds:
            if not args.skip_one_shot:
                t = time.perf_counter()
                settings = {**common, "seed": seed}
                one = KnockoffNets(
                    budget=budget, rounds=(), sampling=args.sampling, **settings
                ).run(victim, pool, holdout=holdout)
                queries = counting.reset().images
                agreement, accuracy = one.curve[-1].agreement, one.curve[-1].accuracy
                rows.append(
                    {
                        "library": "pixelguard",
                        "mode": "one-shot",
                        "budget": budget,
                        "seed": seed,
                        "queries": queries,
                        "agreement": agreement,
                        "accuracy": accuracy,
                        "seconds": round(time.perf_counter() - t, 1),
                    }
                )
                logger.info(
                    "pixelguard one-shot %d seed %d: agreement %.4f", budget, seed, agreement
                )
            module, queries, seconds = art_knockoff(
                counting,
                pool,
                budget,
                epochs=args.epochs,
                lr=args.lr,
                batch_size=128,
                seed=seed,
                num_classes=10,
            )
            agreement, accuracy = measure(module, holdout)
            rows.append(
                {
                    "library": "ART",
                    "mode": "one-shot",
                    "budget": budget,
                    "seed": seed,
                    "queries": queries,
                    "agreement": agreement,
                    "accuracy": accuracy,
                    "seconds": round(seconds, 1),
                }
            )
            logger.info(
                "ART %d seed %d: agreement %.4f (%d queries)", budget, seed, agreement, queries
            )

    # transfer from the largest-budget pixelguard surrogate
    surrogate = curve.classifier()
    xt, yt = held_x[: args.transfer_images], held_y[: args.transfer_images]
    t = time.perf_counter()
    pgd = transfer_attack(
        create_attack("pgd", eps=args.eps, steps=40, seed=args.seed), surrogate, victim, xt, yt
    )
    spgd = transfer_attack(
        create_attack("sparse-pgd", pixels=args.pixels, seed=args.seed), surrogate, victim, xt, yt
    )
    counting.reset()
    warm = warm_start_sparse_rs(
        create_attack(
            "sparse-rs", pixels=args.pixels, budget=args.sparse_rs_budget, seed=args.seed
        ),
        victim,
        xt,
        yt,
        spgd.x_adv,
    )
    transfer_seconds = time.perf_counter() - t
    return {
        "protocol": {
            "data": f"MNIST official 10k test set ({args.data_dir})",
            "victim": f"small-cnn trained on test images 0-{n_victim - 1}, {args.victim_epochs} epochs",
            "query_pool": pool_text,
            "held_out": f"test images {pool_end}-{pool_end + held_x.shape[0] - 1}",
            "surrogate": "small-cnn, same initial weights for both libraries",
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": 128,
            "sampling": args.sampling,
        },
        "victim": {
            "held_out_accuracy": victim_accuracy,
            "train_seconds": round(victim_seconds, 1),
            "train_accuracy": victim_metrics["train_accuracy"],
        },
        "extraction": rows,
        "transfer": {
            "note": "computed on the pixelguard surrogate (curve run, largest budget), verified on the victim",
            "pgd": pgd.to_dict(),
            "sparse_pgd": spgd.to_dict(),
            "sparse_rs_warm_start": warm.to_dict(),
            "seconds": round(transfer_seconds, 1),
        },
    }


def mean_agreement(
    rows: list[dict[str, Any]], library: str, mode: str | None, budget: int
) -> float | None:
    """Mean agreement over seeds of ``library`` (``mode`` None: its best mode) at ``budget``."""
    modes = {r["mode"] for r in rows if r["library"] == library and r["budget"] == budget}
    means = []
    for m in modes if mode is None else [mode]:
        values = [
            r["agreement"]
            for r in rows
            if r["library"] == library and r["mode"] == m and r["budget"] == budget
        ]
        if values:
            means.append(sum(values) / len(values))
    return max(means) if means else None


def check_targets(results: dict[str, Any]) -> dict[str, Any]:
    """At least ART's (mean) agreement at every budget, like for like (one-shot vs one-shot
    where run, else the curve), and 95% within the largest budget."""
    rows = results["extraction"]
    out: dict[str, Any] = {}
    for budget in results["budgets"]:
        art = mean_agreement(rows, "ART", "one-shot", budget)
        ours = mean_agreement(rows, "pixelguard", "one-shot", budget)
        if ours is None:
            ours = mean_agreement(rows, "pixelguard", "curve", budget)
        out[f"at_least_art_at_{budget}"] = ours is not None and art is not None and ours >= art
    best = mean_agreement(rows, "pixelguard", None, max(results["budgets"]))
    out["agreement_95_within_budget"] = best is not None and best >= 0.95
    return out


def render_markdown(results: dict[str, Any]) -> str:
    """The tables for BENCHMARKS.md."""
    lines = [
        "| budget | pixelguard curve | pixelguard one-shot | ART KnockoffNets | pixelguard / ART (one-shot means) |",
        "|---:|---:|---:|---:|---:|",
    ]
    rows = results["extraction"]

    def cell(lib: str, mode: str, budget: int) -> str:
        found = [
            r for r in rows if r["library"] == lib and r["mode"] == mode and r["budget"] == budget
        ]
        if not found:
            return "-"
        agree = [r["agreement"] for r in found]
        acc = sum(r["accuracy"] for r in found) / len(found)
        text = f"{100 * sum(agree) / len(agree):.2f}%"
        if len(found) > 1:
            text += f" ({100 * min(agree):.1f}-{100 * max(agree):.1f}, {len(found)} seeds)"
        return f"{text}, {100 * acc:.1f}% acc, {found[0]['queries']:,} q"

    for budget in results["budgets"]:
        one = mean_agreement(rows, "pixelguard", "one-shot", budget)
        art = mean_agreement(rows, "ART", "one-shot", budget)
        ratio = "-" if one is None or art is None else f"{one / art:.3f}"
        lines.append(
            f"| {budget:,} | {cell('pixelguard', 'curve', budget)} | "
            f"{cell('pixelguard', 'one-shot', budget)} | {cell('ART', 'one-shot', budget)} | {ratio} |"
        )
    tr = results["transfer"]
    w = tr["sparse_rs_warm_start"]
    lines += [
        "",
        f"Transfer from the pixelguard largest-budget surrogate ({tr['note']}):",
        "",
        "| attack | victim-correct images | fools surrogate | transfers to victim |",
        "|---|---:|---:|---:|",
    ]
    for key in ("pgd", "sparse_pgd"):
        t = tr[key]
        lines.append(
            f"| {t['attack']} {t['params'].get('eps', '') or ''}{' k=' + str(t['params']['pixels']) if 'pixels' in t['params'] else ''} "
            f"| {t['n_victim_correct']} | {100 * t['surrogate_success_rate']:.1f}% | {100 * t['transfer_success_rate']:.1f}% |"
        )
    lines += [
        "",
        f"sparse-rs k={w['pixels']} on the victim, budget {w['budget']} per image, {w['n_images']} images:",
        "",
        "| start | success | victim queries (total) | mean queries when both succeed |",
        "|---|---:|---:|---:|",
        f"| random (cold) | {100 * w['cold_success_rate']:.1f}% | {w['cold_queries_total']:,} | {w['cold_mean_queries_when_both_succeed']:.1f} |",
        f"| surrogate sparse-pgd adversarials (warm) | {100 * w['warm_success_rate']:.1f}% | {w['warm_queries_total']:,} | {w['warm_mean_queries_when_both_succeed']:.1f} |",
        "",
        f"Queries saved: {w['queries_saved']:,} ({100 * (w['queries_saved_fraction'] or 0):.1f}%); "
        f"{w['transferred_at_first_query']} images fooled by the first (transferred) query.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/datasets/mnist"))
    parser.add_argument(
        "--budgets", type=lambda s: [int(v) for v in s.split(",")], default=[1000, 5000, 20000]
    )
    parser.add_argument("--epochs", type=int, default=5, help="surrogate epochs (both libraries)")
    parser.add_argument("--victim-epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sampling", default="random", choices=["random", "uncertain"])
    parser.add_argument(
        "--pool-copies", type=int, default=None, help="default 8 (mnist-split), 3 (cifar10)"
    )
    parser.add_argument(
        "--pool",
        default="mnist-split",
        choices=["mnist-split", "cifar10"],
        help="query pool: a disjoint MNIST split, or CIFAR-10 test photographs (grey, 28x28)",
    )
    parser.add_argument(
        "--cifar", type=Path, default=Path("/work/shared/datasets/cifar10-jpg.tar.gz")
    )
    parser.add_argument(
        "--skip-one-shot", action="store_true", help="only the pixelguard curve vs ART"
    )
    parser.add_argument("--transfer-images", type=int, default=100)
    parser.add_argument("--eps", type=float, default=0.3)
    parser.add_argument("--pixels", type=int, default=10)
    parser.add_argument("--sparse-rs-budget", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the victim, curve and transfer"
    )
    parser.add_argument(
        "--seeds",
        type=lambda v: [int(p) for p in v.split(",")],
        default=[0, 1, 2],
        help="seeds of the one-shot runs of both libraries (budgets up to --multi-seed-max)",
    )
    parser.add_argument(
        "--multi-seed-max", type=int, default=5000, help="larger budgets: --seed only"
    )
    parser.add_argument("--quick", action="store_true", help="small victim, budgets 200,1000")
    parser.add_argument("--out", type=Path, default=Path("bench-out/extraction"))
    args = parser.parse_args(argv)
    if args.pool_copies is None:
        args.pool_copies = 8 if args.pool == "mnist-split" else 3
    if args.quick:
        args.budgets = [200, 1000]
        args.pool_copies = 2
        args.transfer_images = 20
        args.sparse_rs_budget = 200
        args.victim_epochs = 2
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write results.json and results.md; print the tables."""
    args = parse_args(argv)
    run = begin_run("benchmarks/bench_extraction.py", argv, args.threads)
    threads, started = run.threads, run.started
    results: dict[str, Any] = {
        "command": run.command,
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
        "versions": package_versions(
            ["pixelguard", "torch", "numpy", "adversarial-robustness-toolbox"]
        ),
        "threads": threads,
        "budgets": args.budgets,
    }
    results.update(run(args))
    results["targets"] = check_targets(results)
    results["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["load_average_end"] = load_average()
    results["wall_seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
