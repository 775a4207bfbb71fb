"""Sparse (L0) attacks side by side: pixelguard sparse-bayes / Sparse-RS / DE vs the peers.

One process, one model per dataset and the same images for every attack:

- pixelguard ``SparseBayes(pixels=k, budget=B)`` (``pg-sparse-bayes``, the default
  black-box L0 attack) and ``SparseRS(pixels=k, steps=B-1, budget=B, min_batch=1)``
  (``pg-sparse-rs``: one proposal per image per step, the paper's algorithm;
  ``pg-sparse-rs-batched`` is the library default ``min_batch=64``, which lets the
  last few images propose several candidates per step). At k=1 with a budget above
  ``2**C * H * W`` both run the exact corner scan; for k > 1 their searches;
- pixelguard ``PixelDE(pixels=k)``, population 400;
- ART ``PixelAttack`` (es=1 differential evolution, th=k, its fixed ~400 population,
  ``max_iter`` set for the budget: 100 at the paper budget of 40,400 queries);
- torchattacks ``OnePixel`` with ``popsize=400`` as the per-parameter multiplier, so its
  real population is about 400 (``steps`` set for the budget: 100 at 40,400);
- torchattacks ``Pixle`` (defaults: 20 restarts x 10 iterations, at most 401 queries;
  fewer restarts when the budget is smaller) and foolbox ``SaltAndPepperNoiseAttack``
  (1,000 steps, or budget - 2 when smaller): neither controls L0, so each runs once
  per dataset and, for every k, counts as a success only where it changed at most k
  pixels.

An attack whose smallest run does not fit the budget (a DE population of about 400
above a budget of 300) is left out, and the log says so (:func:`budget_misfit`).

Every success is re-verified here: a fresh forward pass on the returned image gives a
label other than the true one, the image lies in [0, 1], *and* at most k pixels
differ from the clean image (a pixel differs when any channel moves by more than
1e-6). Peer queries are counted by wrapping the model (:class:`CountingModule`);
pixelguard's own per-image counts are cross-checked against the same wrapper.

Example:
    python benchmarks/bench_sparse.py --quick
    python benchmarks/bench_sparse.py                      # digits and MNIST, k = 1, 3, 10
    python benchmarks/bench_sparse.py --datasets cifar10 --n-images 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PEER_STACK,
    CountingModule,
    begin_run,
    describe_machine,
    load_average,
    package_versions,
    write_results,
)
from _sparse_common import (  # noqa: E402
    L0_TOLERANCE,
    AttackOutput,
    joint_median_queries,
    plot_success_curves,
    strict_check,
    summarise,
)
from bench_pixel import (  # noqa: E402
    POPULATION,
    SHARED_DATASETS,
    Task,
    build_task,
    de_population,
    run_art,
    run_pixelguard,
    run_torchattacks,
)
from pixelguard.attacks import SparseBayes, SparseRS  # noqa: E402
from pixelguard.attacks.base import Attack  # noqa: E402
from pixelguard.attacks.corner_search import corner_search_cost  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402

logger = logging.getLogger("benchmarks.sparse")

DEFAULT_IMAGES = {"digits": 15, "mnist": 12, "cifar10": 10}
"""Images per dataset in the default run (what fits ~40 minutes on a busy 2-core machine)."""
PAPER_BUDGET = 400 * 101
"""The one-pixel paper's budget: population 400, the initial one plus 100 generations."""
DEFAULT_BUDGETS = {"digits": PAPER_BUDGET, "mnist": 400 * 11, "cifar10": 10_000}
"""Queries per image: the paper's on digits (ART's default max_iter=100, OnePixel 100
steps); 10 generations on MNIST, where every query costs a full CNN pass; on CIFAR-10
10,000, just above the 8,192 candidates of the exact one-pixel corner scan."""
SPARSE_SEARCH = ("pg-sparse-bayes", "pg-sparse-rs", "pg-sparse-rs-batched")
"""pixelguard's sparse searches (``--sparse-rs-budget`` applies to them)."""
PIXELGUARD = (*SPARSE_SEARCH, "pg-de")
PER_K_PEERS = ("art", "onepixel")
ANY_L0_PEERS = ("pixle", "saltpepper")
"""Peers that do not control L0: run once per dataset, judged within each k."""
ALL_PEERS = (*PER_K_PEERS, *ANY_L0_PEERS)


# --------------------------------------------------------------------------- attacks


def _from_pixel_run(name: str, run: Any) -> AttackOutput:
    """Convert a ``bench_pixel`` run record into this benchmark's raw output."""
    notes = dict(run.notes)
    notes["forward"] = run.forward.to_dict()
    return AttackOutput(name, run.config, run.x_adv, run.queries, run.wall_seconds, notes)


def run_pixelguard_sparse(
    name: str, attack: Attack, task: Task, counting: CountingModule, k: int, budget: int
) -> AttackOutput:
    """A pixelguard sparse attack on the whole batch; its counts checked against the wrapper."""
    classifier = TorchClassifier(counting, task.input_shape, output="logits")
    classifier.num_classes  # noqa: B018  (its 4-image probe batch, before counting starts)
    counting.reset()
    start = time.perf_counter()
    result = attack.run(classifier, task.x, task.y)
    wall = time.perf_counter() - start
    forward = counting.reset()
    queries = result.queries.numpy()
    n = int(task.x.shape[0])
    # run() spends two uncounted verification passes (clean and adversarial batch).
    notes = {
        "corner_scan": k == 1 and budget >= corner_search_cost(task.input_shape),
        "attack_wall_time": round(result.wall_time, 4),
        "claimed_success": int(result.success.sum()),
        "wrapper_images_minus_reported": forward.images - int(queries.sum()) - 2 * n,
        "forward": forward.to_dict(),
    }
    return AttackOutput(name, attack.to_dict(), result.x_adv, queries, wall, notes)


def run_sparse_rs(
    task: Task, counting: CountingModule, k: int, budget: int, seed: int
) -> AttackOutput:
    """pixelguard SparseRS, one proposal per image per step (``min_batch=1``, the paper's)."""
    attack = SparseRS(pixels=k, steps=budget - 1, budget=budget, seed=seed, min_batch=1)
    return run_pixelguard_sparse("pg-sparse-rs", attack, task, counting, k, budget)


def run_sparse_rs_batched(
    task: Task, counting: CountingModule, k: int, budget: int, seed: int
) -> AttackOutput:
    """pixelguard SparseRS with the library's default ``min_batch`` (64)."""
    attack = SparseRS(pixels=k, steps=budget - 1, budget=budget, seed=seed)
    return run_pixelguard_sparse("pg-sparse-rs-batched", attack, task, counting, k, budget)


def run_sparse_bayes(
    task: Task, counting: CountingModule, k: int, budget: int, seed: int
) -> AttackOutput:
    """pixelguard SparseBayes (its steps follow ``min(steps, budget - 1)`` by themselves)."""
    attack = SparseBayes(pixels=k, budget=budget, seed=seed)
    return run_pixelguard_sparse("pg-sparse-bayes", attack, task, counting, k, budget)


def run_de(task: Task, counting: CountingModule, k: int, budget: int, seed: int) -> AttackOutput:
    """pixelguard PixelDE, population 400, generations for the budget (``bench_pixel``'s)."""
    return _from_pixel_run("pg-de", run_pixelguard(task, counting, k, budget, seed))


def run_art_peer(
    task: Task, counting: CountingModule, k: int, budget: int, seed: int
) -> AttackOutput:
    """ART PixelAttack, es=1, th=k, max_iter for the budget (``bench_pixel``'s set-up)."""
    return _from_pixel_run("art", run_art(task, counting, k, budget, seed))


def run_onepixel(
    task: Task, counting: CountingModule, k: int, budget: int, seed: int
) -> AttackOutput:
    """torchattacks OnePixel, real population ~400, steps for the budget (``bench_pixel``'s)."""
    return _from_pixel_run("onepixel", run_torchattacks(task, counting, k, budget, seed))


def _one_image_at_a_time(
    name: str,
    task: Task,
    counting: CountingModule,
    attack_one: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, np.ndarray, float]:
    """Run a per-image peer, counting each image's queries through the wrapper."""
    advs, queries = [], []
    n = int(task.x.shape[0])
    start = time.perf_counter()
    for i in range(n):
        counting.reset()
        advs.append(attack_one(task.x[i : i + 1], task.y[i : i + 1]))
        queries.append(counting.reset().images)
        if (i + 1) % 5 == 0 or i + 1 == n:
            logger.info("  %s: %d/%d images, %.1f s", name, i + 1, n, time.perf_counter() - start)
    return torch.cat(advs), np.array(queries, dtype=np.int64), time.perf_counter() - start


PIXLE_ITERATIONS = 10
"""Pixle's iterations per restart (its default); each costs two queries."""


def pixle_restarts(budget: int) -> int:
    """Pixle's default 20 restarts, fewer when its worst case (1 + 2 x 10 per restart)
    would exceed ``budget``."""
    return min(20, (budget - 1) // (2 * PIXLE_ITERATIONS))


def saltpepper_steps(budget: int) -> int:
    """foolbox's default 1,000 steps, fewer when they (plus 2 checks) exceed ``budget``."""
    return min(1000, budget - 2)


def run_pixle(task: Task, counting: CountingModule, budget: int, seed: int) -> AttackOutput:
    """torchattacks Pixle with its defaults (20 restarts x 10 iterations, 2..10 px patches),
    fewer restarts where the budget is smaller (:func:`pixle_restarts`)."""
    import torchattacks

    np.random.seed(seed)  # Pixle draws from numpy's global RNG and takes no seed
    restarts = pixle_restarts(budget)
    attack = torchattacks.Pixle(counting, restarts=restarts, max_iterations=PIXLE_ITERATIONS)
    config = {
        "restarts": restarts,
        "max_iterations": PIXLE_ITERATIONS,
        "x_dimensions": [2, 10],
        "y_dimensions": [2, 10],
        "pixel_mapping": "random",
        "update_each_iteration": False,
    }
    x_adv, queries, wall = _one_image_at_a_time(
        "pixle", task, counting, lambda x, y: attack(x, y).detach()
    )
    return AttackOutput("pixle", config, x_adv, queries, wall)


def run_saltpepper(task: Task, counting: CountingModule, budget: int, seed: int) -> AttackOutput:
    """foolbox SaltAndPepperNoiseAttack (1000 steps, or :func:`saltpepper_steps`; whole
    batch, no early stop); queries shared equally."""
    import foolbox

    torch.manual_seed(seed)  # foolbox draws its noise from torch's global RNG
    fmodel = foolbox.PyTorchModel(counting.eval(), bounds=(0.0, 1.0))
    steps = saltpepper_steps(budget)
    attack = foolbox.attacks.SaltAndPepperNoiseAttack(steps=steps)
    counting.reset()
    start = time.perf_counter()
    x_adv, _, _ = attack(fmodel, task.x, task.y, epsilons=None)
    wall = time.perf_counter() - start
    forward = counting.reset()
    n = int(task.x.shape[0])
    # Fully batched with no early stop: every image is in every forward call.
    queries = np.full(n, forward.images // n, dtype=np.int64)
    config = {"steps": steps, "across_channels": True}
    return AttackOutput(
        "saltpepper", config, x_adv.detach(), queries, wall, {"forward": forward.to_dict()}
    )


PER_K_RUNNERS: dict[str, Callable[[Task, CountingModule, int, int, int], AttackOutput]] = {
    "pg-sparse-bayes": run_sparse_bayes,
    "pg-sparse-rs": run_sparse_rs,
    "pg-sparse-rs-batched": run_sparse_rs_batched,
    "pg-de": run_de,
    "art": run_art_peer,
    "onepixel": run_onepixel,
}
ANY_L0_RUNNERS: dict[str, Callable[[Task, CountingModule, int, int], AttackOutput]] = {
    "pixle": run_pixle,
    "saltpepper": run_saltpepper,
}
"""``runner(task, counting_module, budget, seed)``: attacks that do not control L0."""


def budget_misfit(name: str, input_shape: Sequence[int], k: int, budget: int) -> str | None:
    """Why attack ``name`` cannot run within ``budget`` queries per image (None: it can).

    The DE attacks need one whole population (about 400 candidates) and their checks;
    Pixle at least one restart; salt-and-pepper at least one step.
    """
    if name in ("art", "onepixel"):
        need = de_population(k * (2 + int(input_shape[0])))
        need += name == "art"  # ART's final check after the initial population
    else:
        need = {"pg-de": POPULATION, "pixle": 1 + 2 * PIXLE_ITERATIONS, "saltpepper": 3}.get(
            name, 1
        )
    if budget >= need:
        return None
    return f"{name} needs at least {need:,} queries per image (budget {budget:,})"


# --------------------------------------------------------------------------- records


def record(
    task: Task, output: AttackOutput, k: int, budget: int, check: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The verified, serialisable record of one attack at one k."""
    summary = summarise(output, check, k, budget)
    return {
        "dataset": task.name,
        "attack": output.attack,
        "pixels": k,
        "budget": budget,
        "config": output.config,
        "summary": summary["summary"],
        "notes": output.notes,
        "per_image": {
            "success": summary["success"].tolist(),
            "fooled_any_pixels": check["fooled"].tolist(),
            "pixels_changed": check["pixels"].tolist(),
            "pred_after": check["pred"].tolist(),
            "queries": output.queries.tolist(),
        },
    }


def run_dataset(
    task: Task,
    ks: Sequence[int],
    attacks: Sequence[str],
    budget: int,
    seed: int,
    sparse_rs_budget: int | None = None,
) -> list[dict[str, Any]]:
    """Every attack at every k on one task; returns the verified records.

    ``sparse_rs_budget`` gives pixelguard's sparse random search a budget of its own
    (e.g. a tenth of the peers'); every other attack gets ``budget``.
    """
    counting = CountingModule(task.module).eval()
    n = int(task.x.shape[0])
    records: list[dict[str, Any]] = []

    def log(r: dict[str, Any]) -> None:
        s = r["summary"]
        logger.info(
            "%s k=%d %s: success %d/%d, median queries %s, %.3f s/image",
            task.name,
            r["pixels"],
            r["attack"],
            s["successes"],
            n,
            s["median_queries"],
            s["seconds_per_image"],
        )

    def fits(name: str, k: int, limit: int) -> bool:
        misfit = budget_misfit(name, task.input_shape, k, limit)
        if misfit:
            logger.warning("%s k=%d: %s not run: %s", task.name, k, name, misfit)
        return misfit is None

    for name in (a for a in attacks if a in ANY_L0_RUNNERS):
        if not fits(name, 0, budget):
            continue
        logger.info("%s: %s on %d images (does not control L0; judged per k)", task.name, name, n)
        output = ANY_L0_RUNNERS[name](task, counting, budget, seed)
        check = strict_check(task.module, task.x, task.y, output.x_adv)
        for k in ks:
            records.append(record(task, output, k, budget, check))
            log(records[-1])
    for k in ks:
        for name in (a for a in attacks if a in PER_K_RUNNERS):
            limit = budget
            if name in SPARSE_SEARCH and sparse_rs_budget:
                # At k = 1 the exact corner scan runs whenever its cost is affordable.
                scan = corner_search_cost(task.input_shape) if k == 1 else 0
                limit = min(budget, max(sparse_rs_budget, scan))
            if not fits(name, k, limit):
                continue
            logger.info("%s k=%d: %s on %d images, budget %d", task.name, k, name, n, limit)
            output = PER_K_RUNNERS[name](task, counting, k, limit, seed)
            check = strict_check(task.module, task.x, task.y, output.x_adv)
            records.append(record(task, output, k, limit, check))
            log(records[-1])
    return records


# --------------------------------------------------------------------------- targets


def _by_attack(records: list[dict[str, Any]], dataset: str, k: int) -> dict[str, dict[str, Any]]:
    return {
        r["attack"]: r["summary"] for r in records if r["dataset"] == dataset and r["pixels"] == k
    }


def _record(records: list[dict[str, Any]], dataset: str, k: int, attack: str) -> dict[str, Any]:
    return next(
        r for r in records if r["dataset"] == dataset and r["pixels"] == k and r["attack"] == attack
    )


def _best(rows: dict[str, dict[str, Any]], names: Sequence[str]) -> tuple[str | None, int]:
    """The attack with most successes among ``names`` (ties: fewer median queries)."""
    present = [n for n in names if n in rows]
    if not present:
        return None, 0
    name = max(present, key=lambda a: (rows[a]["successes"], -(rows[a]["median_queries"] or 0)))
    return name, rows[name]["successes"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Evaluate the issue's targets (a), (b), (c) on the measured records."""
    records, out = results["runs"], []
    for dataset, info in results["datasets"].items():
        cost = corner_search_cost(tuple(info["input_shape"]))
        rows = _by_attack(records, dataset, 1)
        if "pg-sparse-rs" in rows:
            pg = rows["pg-sparse-rs"]
            peer, peer_succ = _best(rows, ALL_PEERS)
            out.append(
                {
                    "target": "a",
                    "dataset": dataset,
                    "k": 1,
                    "met": pg["successes"] >= peer_succ and pg["max_queries"] <= cost,
                    "detail": f"corner scan {pg['successes']}/{pg['n_images']} vs best peer "
                    f"{peer} {peer_succ}; max queries {pg['max_queries']:,} "
                    f"(bound 2^C*H*W = {cost:,})",
                }
            )
        for k in (3, 10):
            rows = _by_attack(records, dataset, k)
            ours, ours_succ = _best(rows, PIXELGUARD)
            peer, peer_succ = _best(rows, ALL_PEERS)
            if ours is None or peer is None or "art" not in rows:
                continue
            pg, art = rows[ours], rows["art"]
            _, (q_pg, q_art) = joint_median_queries(
                _record(records, dataset, k, ours), _record(records, dataset, k, "art")
            )
            q_ratio = _ratio(q_art, q_pg)
            t_art = _ratio(art["seconds_per_image"], pg["seconds_per_image"])
            t_op = _ratio(
                rows.get("onepixel", {}).get("seconds_per_image"), pg["seconds_per_image"]
            )
            out.append(
                {
                    "target": "b",
                    "dataset": dataset,
                    "k": k,
                    "met": ours_succ >= peer_succ
                    and (q_ratio or 0) >= 10
                    and (t_art or 0) >= 10
                    and (t_op is None or t_op >= 10),
                    "detail": f"{ours} {ours_succ}/{pg['n_images']} vs best peer {peer} {peer_succ}; "
                    f"ART / ours median queries on images both fooled = {q_ratio}x; s/image ART / ours = {t_art}x, "
                    f"OnePixel / ours = {t_op}x",
                }
            )
        rows = _by_attack(records, dataset, 10)
        if dataset != "digits" and {"pg-sparse-rs", "pg-de"} <= rows.keys():
            rs, de = rows["pg-sparse-rs"], rows["pg-de"]
            _, (q_rs, q_de) = joint_median_queries(
                _record(records, dataset, 10, "pg-sparse-rs"),
                _record(records, dataset, 10, "pg-de"),
            )
            q_ratio = _ratio(q_de, q_rs)
            out.append(
                {
                    "target": "c",
                    "dataset": dataset,
                    "k": 10,
                    "met": rs["successes"] >= de["successes"] and (q_ratio or 0) >= 10,
                    "detail": f"sparse-rs {rs['successes']}/{rs['n_images']} vs DE {de['successes']}; "
                    f"DE / sparse-rs median queries on images both fooled = {q_ratio}x "
                    f"({q_de} vs {q_rs})",
                }
            )
    return out


# --------------------------------------------------------------------------- report


def plot_curves(results: dict[str, Any], out: Path) -> list[str]:
    """Success rate against queries (log x) per dataset and k: one PNG each."""
    written = []
    for dataset in results["datasets"]:
        for k in results["pixels"]:
            runs = [r for r in _ordered(results["runs"], dataset) if r["pixels"] == k]
            if not runs:
                continue
            scan = " (corner scan)"
            series = [
                {
                    "label": r["attack"] + (scan if r["notes"].get("corner_scan") else ""),
                    "queries": r["per_image"]["queries"],
                    "success": r["per_image"]["success"],
                }
                for r in runs
            ]
            path = out / f"success_vs_queries_{dataset}_k{k}.png"
            plot_success_curves(
                series,
                path,
                title=f"{dataset}, k = {k}, {runs[0]['summary']['n_images']} images",
                ylabel=f"images fooled with <= {k} px (%)",
                max_queries=max(max(r["per_image"]["queries"]) for r in runs),
            )
            written.append(str(path))
    return written


def _fmt(value: float | int | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ordered(runs: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """One dataset's records by k, pixelguard first, then the peers."""
    order = {a: i for i, a in enumerate((*PIXELGUARD, *ALL_PEERS))}
    mine = [r for r in runs if r["dataset"] == dataset]
    return sorted(mine, key=lambda r: (r["pixels"], order[r["attack"]]))


def _ratio_table(runs: list[dict[str, Any]], dataset: str) -> list[str]:
    """Each peer against pixelguard's best attack at the same k."""
    lines = [
        f"Peers against pixelguard's best attack on {dataset} (success: pixelguard minus peer; "
        "queries and time: peer / pixelguard, above 1 favours pixelguard)",
        "",
        "| k | pixelguard | peer | success diff | images both fooled | median queries there "
        "(peer / pg) | s / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in sorted({r["pixels"] for r in runs if r["dataset"] == dataset}):
        rows = _by_attack(runs, dataset, k)
        ours, _ = _best(rows, PIXELGUARD)
        if ours is None:
            continue
        pg = rows[ours]
        records = {r["attack"]: r for r in runs if r["dataset"] == dataset and r["pixels"] == k}
        for peer in (p for p in ALL_PEERS if p in rows):
            s = rows[peer]
            both, (q_pg, q_peer) = joint_median_queries(records[ours], records[peer])
            q, t = _ratio(q_peer, q_pg), _ratio(s["seconds_per_image"], pg["seconds_per_image"])
            there = "-" if q is None else f"{_fmt(q_peer)} / {_fmt(q_pg)} = {_fmt(q, 2)}x"
            lines.append(
                f"| {k} | {ours} | {peer} | {pg['successes'] - s['successes']:+d} "
                f"| {both} | {there} | {_fmt(t, 2)}x |"
            )
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """Per dataset and k: the table of every attack; then pixelguard's ratios and targets."""
    lines: list[str] = []
    for dataset, info in results["datasets"].items():
        lines += [
            f"#### {dataset}: {info['n_images']} images, model {info['arch']} "
            f"(clean accuracy on the attack pool {info['pool_accuracy']:.1%}), "
            f"budget {info['budget']:,} queries per image"
            + (
                f" (pixelguard sparse-rs: {info['sparse_rs_budget']:,})"
                if info.get("sparse_rs_budget", info["budget"]) != info["budget"]
                else ""
            ),
            "",
            "| k | attack | success (<= k px) | fooled (any px) | median px (succ.) "
            "| median queries | median queries (succ.) | max queries | s / image |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in _ordered(results["runs"], dataset):
            s = r["summary"]
            name = r["attack"] + (" (corner scan)" if r["notes"].get("corner_scan") else "")
            lines.append(
                f"| {r['pixels']} | {name} | {s['success_rate']:.0%} ({s['successes']}/"
                f"{s['n_images']}) | {s['fooled_any_pixels']} (median "
                f"{_fmt(s['median_pixels_fooled'])} px) | {_fmt(s['median_pixels_success'])} "
                f"| {_fmt(s['median_queries'])} | {_fmt(s['median_queries_success'])} "
                f"| {_fmt(s['max_queries'])} | {_fmt(s['seconds_per_image'], 3)} |"
            )
        lines += ["", *_ratio_table(results["runs"], dataset), ""]
    lines += [
        "#### Targets",
        "",
        "| target | dataset | k | met | figures |",
        "|---|---|---|---|---|",
    ]
    for t in results["targets"]:
        lines.append(
            f"| {t['target']} | {t['dataset']} | {t['k']} | {'yes' if t['met'] else 'NO'} "
            f"| {t['detail']} |"
        )
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--pixels", default="1,3,10", help="comma-separated k (default: 1,3,10)")
    parser.add_argument(
        "--n-images",
        type=int,
        default=None,
        help="images per dataset, the same for every attack (default: "
        + ", ".join(f"{d} {n}" for d, n in DEFAULT_IMAGES.items())
        + ")",
    )
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="queries per image for every attack (default per dataset: digits 40,400 = "
        "the paper's, ART's default max_iter=100; mnist 4,400 = 10 generations; "
        "cifar10 10,000)",
    )
    parser.add_argument(
        "--sparse-rs-budget",
        type=int,
        default=None,
        help="queries per image for pixelguard's sparse searches only (default: --budget); e.g. a "
        "tenth of the peers' budget, to show it fools more images with far fewer queries "
        "(at k=1 raised to the exact corner scan's cost, 2^C*H*W)",
    )
    parser.add_argument(
        "--attacks",
        default=",".join(a for a in (*PIXELGUARD, *ALL_PEERS) if a != "pg-sparse-rs-batched"),
        help="comma-separated, from: "
        + ", ".join((*PIXELGUARD, *ALL_PEERS))
        + " (default: all but pg-sparse-rs-batched)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine, 2 "
        "OpenMP threads contend and every forward pass gets far slower)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for training, images, attacks")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=SHARED_DATASETS,
        help="folder holding mnist/ and cifar10-jpg.tar.gz",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/sparse"), help="output folder")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 images, k=1,3, budget 2,000, 2-epoch models",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    args.datasets = _csv(args.datasets)
    unknown = set(args.datasets) - set(DEFAULT_IMAGES)
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(sorted(unknown))}")
    args.attacks = _csv(args.attacks)
    unknown = set(args.attacks) - {*PIXELGUARD, *ALL_PEERS}
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(sorted(unknown))}")
    args.pixels = [int(v) for v in _csv(args.pixels)]
    if args.quick:
        args.pixels = args.pixels[:2]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write results.json, results.md and the plots; print the tables."""
    args = parse_args(argv)
    run = begin_run("benchmarks/bench_sparse.py", argv, args.threads, verbose=args.verbose)
    threads, started = run.threads, run.started
    results: dict[str, Any] = {
        "command": run.command,
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
        "versions": package_versions(PEER_STACK),
        "threads": threads,
        "l0_tolerance": L0_TOLERANCE,
        "pixels": args.pixels,
        "attacks": args.attacks,
        "datasets": {},
        "runs": [],
    }
    for name in args.datasets:
        n_images = args.n_images or (3 if args.quick else DEFAULT_IMAGES[name])
        budget = args.budget or (2000 if args.quick else DEFAULT_BUDGETS[name])
        task: Task = build_task(name, n_images, args.seed, args.quick, args.data_dir)
        results["datasets"][name] = {
            **task.info,
            "n_images": n_images,
            "budget": budget,
            "sparse_rs_budget": args.sparse_rs_budget or budget,
            "input_shape": list(task.input_shape),
        }
        start = time.perf_counter()
        results["runs"] += run_dataset(
            task, args.pixels, args.attacks, budget, args.seed, args.sparse_rs_budget
        )
        results["datasets"][name]["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["targets"] = check_targets(results)
    results["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["load_average_end"] = load_average()
    results["wall_seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    args.out.mkdir(parents=True, exist_ok=True)
    results["plots"] = plot_curves(results, args.out)
    write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
