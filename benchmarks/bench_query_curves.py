"""Success against queries: pixelguard sparse-bayes vs its plain Sparse-RS vs the peers.

Each row of the benchmark is (dataset, k, budget, images), e.g. ``mnist:10:1000:40``:
the model and images of ``bench_pixel``'s ``build_task`` (cached under
``bench-out/models``; ``--task-seed`` picks the model and the images), every attack on
the same images with at most k changed pixels and at most ``budget`` queries per image.
The attacks and their verification are ``bench_sparse``'s: ``pg-sparse-bayes``
(pixelguard's default), ``pg-sparse-rs`` (plain Sparse-RS, one proposal per image per
step, ``min_batch=1``), and the peers (ART PixelAttack, torchattacks OnePixel and
Pixle, foolbox salt-and-pepper), configured for the budget as ``bench_sparse`` does.
A peer whose smallest run exceeds the budget (one DE population of about 400 queries
above a budget of 300) is left out, and the table says so.

pixelguard's attacks run once per seed (``--seeds``: results differ a lot between
seeds on 30-50 images); the peers once (``--peer-seed``, default the first seed).

Queries per image count everything the attack sent through the model for that image,
the clean query included: pixelguard's own counts (cross-checked against a counting
wrapper), the wrapper's for the peers. An image counts as fooled within q queries
when the attack succeeded on it (fresh forward pass, at most k pixels changed by more
than 1e-6, in [0, 1]) and spent at most q queries on it. ART only stops after a whole
generation and salt-and-pepper never stops early (every image costs its steps + 2), so
their curves show what those attacks spend, not when a success first appeared.

Written to ``--out``: ``results.json`` (every run with its per-image successes and
queries; rewritten after every row), ``table.md`` and one PNG per row
(``curves_<dataset>_k<k>_b<budget>.png``). The table gives per row and seed the
images fooled and the fraction fooled within q for q in 100, 300, 1,000, 3,000,
10,000 (up to the budget); the median queries over the images every pixelguard run
fooled (both attacks at every seed), and over those the best peer fooled too; and
sparse-bayes against sparse-rs (same seed) and against the best peer (most images
fooled) over the images both fooled, per seed and pooled over the seeds. Medians
that count failures are never used for a ratio.

Example:
    python benchmarks/bench_query_curves.py --rows digits:3:300:8 --seeds 0 --attacks \\
        pg-sparse-bayes,pg-sparse-rs --out bench-out/query-curves-smoke
    python benchmarks/bench_query_curves.py                  # the issue's four rows
    python benchmarks/bench_query_curves.py --rows mnist:10:10000:40,cifar10:10:10000:30 \\
        --attacks pg-sparse-bayes,pg-sparse-rs --out bench-out/query-curves-long
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PEER_STACK,
    CountingModule,
    begin_run,
    describe_machine,
    load_average,
    package_versions,
    source_revision,
)
from _sparse_common import (  # noqa: E402
    L0_TOLERANCE,
    AttackOutput,
    compare_queries,
    fooled_at,
    grid_up_to,
    joint_median_queries,
    plot_success_curves,
    pool_runs,
    strict_check,
)
from bench_pixel import SHARED_DATASETS, Task, build_task  # noqa: E402
from bench_sparse import (  # noqa: E402
    ALL_PEERS,
    ANY_L0_RUNNERS,
    PER_K_RUNNERS,
    PIXELGUARD,
    _best,
    _csv,
    _fmt,
    budget_misfit,
    record,
)

logger = logging.getLogger("benchmarks.query_curves")

OURS, PLAIN = "pg-sparse-bayes", "pg-sparse-rs"
DEFAULT_ROWS = "digits:3:300:50,mnist:10:1000:40,cifar10:10:1000:30,cifar10:3:3000:30"
"""The issue's rows (dataset:k:budget:images)."""
DEFAULT_ATTACKS = (OURS, PLAIN, *ALL_PEERS)
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class Row:
    """One benchmark row: a dataset, k pixels, a budget per image, a number of images."""

    dataset: str
    pixels: int
    budget: int
    n_images: int

    @classmethod
    def parse(cls, text: str) -> Row:
        """``dataset:k:budget:images``, e.g. ``mnist:10:1000:40``."""
        dataset, k, budget, n = text.split(":")
        return cls(dataset, int(k), int(budget), int(n))

    @property
    def key(self) -> str:
        return f"{self.dataset}:{self.pixels}:{self.budget}:{self.n_images}"


# --------------------------------------------------------------------------- running


def run_row(
    row: Row,
    task: Task,
    attacks: Sequence[str],
    seeds: Sequence[int],
    peer_seed: int,
    any_l0_cache: dict[tuple[str, ...], tuple[AttackOutput, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every attack on one row: pixelguard's once per seed, the peers once.

    Returns the verified records (each with ``row`` and ``seed``) and, for the
    attacks left out, why.
    """
    counting = CountingModule(task.module).eval()
    k, budget, n = row.pixels, row.budget, row.n_images
    records: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in attacks:
        misfit = budget_misfit(name, task.input_shape, k, budget)
        if misfit:
            logger.warning("%s: %s not run: %s", row.key, name, misfit)
            skipped[name] = misfit
            continue
        for seed in seeds if name in PIXELGUARD else [peer_seed]:
            logger.info("%s: %s, seed %d, on %d images", row.key, name, seed, n)
            if name in ANY_L0_RUNNERS:
                # Does not control L0: one run per images and budget serves every k.
                cache_key = (name, row.dataset, str(n), str(budget))
                if cache_key not in any_l0_cache:
                    output = ANY_L0_RUNNERS[name](task, counting, budget, seed)
                    check = strict_check(task.module, task.x, task.y, output.x_adv)
                    any_l0_cache[cache_key] = (output, check)
                output, check = any_l0_cache[cache_key]
            else:
                output = PER_K_RUNNERS[name](task, counting, k, budget, seed)
                check = strict_check(task.module, task.x, task.y, output.x_adv)
            r = {"row": row.key, "seed": seed, **record(task, output, k, budget, check)}
            records.append(r)
            s = r["summary"]
            logger.info(
                "%s: %s seed %d: fooled %d/%d, median queries (successes) %s, max %d, %.3f s/image",
                row.key,
                name,
                seed,
                s["successes"],
                n,
                s["median_queries_success"],
                s["max_queries"],
                s["seconds_per_image"],
            )
            if s["max_queries"] > budget:
                logger.warning(
                    "%s: %s spent %d > %d queries", row.key, name, s["max_queries"], budget
                )
            gap = r["notes"].get("wrapper_images_minus_reported")
            if gap:
                logger.warning("%s: %s reported %d queries fewer than sent", row.key, name, gap)
    return records, skipped


# --------------------------------------------------------------------------- analysis


def analyse_row(records: list[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """Fooled-within-q, the joint median over the compared runs and the query ratios."""
    budget = records[0]["budget"]
    grid = grid_up_to(budget)
    peers = {r["attack"]: r for r in records if r["attack"] not in PIXELGUARD}
    # Most images fooled (ties: fewer median queries over all images); none if none fooled any.
    best_peer, best_fooled = _best({a: r["summary"] for a, r in peers.items()}, list(peers))
    best_peer = best_peer if best_fooled else None

    def run(attack: str, seed: int) -> dict[str, Any] | None:
        return next((r for r in records if r["attack"] == attack and r["seed"] == seed), None)

    def joint_over(runs: list[dict[str, Any]]) -> tuple[int, dict[str, float | None]]:
        both, medians = joint_median_queries(*runs) if runs else (0, [])
        return both, {f"{r['attack']}@{r['seed']}": m for r, m in zip(runs, medians)}

    ours_and_plain = [r for r in records if r["attack"] in (OURS, PLAIN)]
    both_pg, joint_pg = joint_over(ours_and_plain)
    both, joint = joint_over(ours_and_plain + ([peers[best_peer]] if best_peer else []))
    table = [
        {
            "attack": r["attack"],
            "seed": r["seed"],
            "fooled": r["summary"]["successes"],
            "n_images": r["summary"]["n_images"],
            "fooled_within": dict(zip(grid, [round(float(v), 4) for v in fooled_at(r, grid)])),
            "median_queries_own_successes": r["summary"]["median_queries_success"],
            "joint_median_queries_pixelguard": joint_pg.get(f"{r['attack']}@{r['seed']}"),
            "joint_median_queries": joint.get(f"{r['attack']}@{r['seed']}"),
            "max_queries": r["summary"]["max_queries"],
            "seconds_per_image": r["summary"]["seconds_per_image"],
            **({"overhead": r["overhead"]["overhead_ratio"]} if "overhead" in r else {}),
        }
        for r in records
    ]
    ratios: list[dict[str, Any]] = []
    for seed in seeds:
        ours, plain = run(OURS, seed), run(PLAIN, seed)
        if ours is None:
            continue
        entry: dict[str, Any] = {"seed": seed, "ours_fooled": ours["summary"]["successes"]}
        if plain is not None:
            entry["vs_sparse_rs"] = {
                "fooled": plain["summary"]["successes"],
                **compare_queries(ours, plain),
            }
        entry["vs_peers"] = {
            name: {"fooled": peer["summary"]["successes"], **compare_queries(ours, peer)}
            for name, peer in peers.items()
        }
        ratios.append(entry)
    pooled: dict[str, Any] = {}
    ours_runs = [run(OURS, s) for s in seeds]
    if all(r is not None for r in ours_runs) and len(seeds) > 1:
        plain_runs = [run(PLAIN, s) for s in seeds]
        if all(r is not None for r in plain_runs):
            pooled["vs_sparse_rs"] = compare_queries(pool_runs(ours_runs), pool_runs(plain_runs))
        if best_peer:
            pooled["vs_best_peer"] = compare_queries(
                pool_runs(ours_runs), pool_runs([peers[best_peer]] * len(seeds))
            )
    return {
        "grid": grid,
        "best_peer": best_peer,
        "joint_pixelguard": {"runs": sorted(joint_pg), "images_fooled_by_all": both_pg},
        "joint": {"runs": sorted(joint), "images_fooled_by_all": both},
        "table": table,
        "ratios": ratios,
        "pooled_seeds": pooled,
    }


# --------------------------------------------------------------------------- report


def plot_row(row: Row, records: list[dict[str, Any]], out: Path) -> str:
    """One PNG: fraction fooled against queries for every run of the row."""
    colours = {a: f"C{i}" for i, a in enumerate((*PIXELGUARD, *ALL_PEERS))}
    series = []
    for r in records:
        several = sum(q["attack"] == r["attack"] for q in records) > 1
        seeds = sorted(q["seed"] for q in records if q["attack"] == r["attack"])
        series.append(
            {
                "label": f"{r['attack']} (seed {r['seed']})" if several else r["attack"],
                "queries": r["per_image"]["queries"],
                "success": r["per_image"]["success"],
                "color": colours[r["attack"]],
                "linestyle": LINESTYLES[seeds.index(r["seed"]) % len(LINESTYLES)],
            }
        )
    path = out / f"curves_{row.dataset}_k{row.pixels}_b{row.budget}.png"
    plot_success_curves(
        series,
        path,
        title=f"{row.dataset}, k = {row.pixels}, budget {row.budget:,}, {row.n_images} images",
        ylabel=f"images fooled with <= {row.pixels} px (%)",
        max_queries=row.budget,
    )
    return str(path)


def _pair(c: dict[str, Any] | None) -> str:
    """``both fooled | other / ours medians = ratio`` cells of one comparison."""
    if c is None:
        return "- | -"
    if c["median_ours"] is None:
        return f"{c['both_fooled']} | -"
    there = f"{_fmt(c['median_other'])} / {_fmt(c['median_ours'])}"
    ratio = "-" if c["ratio"] is None else f"{c['ratio']:.2f}x"
    return f"{c['both_fooled']} | {there} = {ratio}"


def render_runs(a: dict[str, Any], skipped: dict[str, str]) -> list[str]:
    """Markdown of one row's :func:`analyse_row`: the runs at the grid points, the
    attacks left out, then sparse-bayes against sparse-rs and the best peer.

    An ``overhead`` column appears when the runs have one (``bench_imagenet``).
    """
    grid = a["grid"]
    overhead = any("overhead" in t for t in a["table"])
    lines = [
        "| attack | seed | fooled | "
        + " | ".join(f"within {q:,}" for q in grid)
        + " | median q (own successes) "
        + f"| median q (the {a['joint_pixelguard']['images_fooled_by_all']} fooled by every "
        + "pg run) "
        + f"| median q (the {a['joint']['images_fooled_by_all']} fooled by every pg run "
        + "and the best peer) "
        + "| max q | s / image |"
        + (" overhead (wall / model at fastest batch) |" if overhead else ""),
        "|---|---|---|" + "---|" * len(grid) + "---|" * 5 + ("---|" if overhead else ""),
    ]
    for t in a["table"]:
        within = " | ".join(f"{v:.0%}" for v in t["fooled_within"].values())
        lines.append(
            f"| {t['attack']} | {t['seed']} | {t['fooled']}/{t['n_images']} | {within} "
            f"| {_fmt(t['median_queries_own_successes'])} "
            f"| {_fmt(t['joint_median_queries_pixelguard'])} | {_fmt(t['joint_median_queries'])} "
            f"| {t['max_queries']:,} | {_fmt(t['seconds_per_image'], 3)} |"
            + (f" {_fmt(t.get('overhead'), 2)} |" if overhead else "")
        )
    lines.append("")
    compared = ", ".join(a["joint"]["runs"]) or "none"
    lines.append(
        f"Joint medians: over the images every listed run fooled ({compared}; pg runs: "
        "pg-sparse-bayes and pg-sparse-rs at every seed). Medians over each run's own "
        "successes compare different images: for reference only."
    )
    for name, why in skipped.items():
        lines.append(f"Not run: {name}: {why}.")
    best = a["best_peer"]
    lines += [
        "",
        f"sparse-bayes against sparse-rs (same seed) and against the best peer "
        f"({best or 'none: no peer fooled an image'}), "
        "median queries over the images both fooled (other / sparse-bayes; above 1: "
        "sparse-bayes needs fewer)",
        "",
        "| seed | sparse-bayes fooled | sparse-rs fooled | both | median q rs / bayes "
        f"| {best or 'peer'} fooled | both | median q peer / bayes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in a["ratios"]:
        rs = e.get("vs_sparse_rs")
        peer = e["vs_peers"].get(best) if best else None
        lines.append(
            f"| {e['seed']} | {e['ours_fooled']} | {'-' if rs is None else rs['fooled']} "
            f"| {_pair(rs)} | {'-' if peer is None else peer['fooled']} | {_pair(peer)} |"
        )
    pooled = a["pooled_seeds"]
    if pooled:
        lines.append(
            f"| all seeds (image, seed pairs) | | | {_pair(pooled.get('vs_sparse_rs'))} "
            f"| | {_pair(pooled.get('vs_best_peer'))} |"
        )
    lines.append("")
    return lines


def render_row(row: Row, info: dict[str, Any]) -> list[str]:
    """The Markdown of one row: a heading, the model, then :func:`render_runs`."""
    lines = [
        f"### {row.dataset}, k = {row.pixels}, budget {row.budget:,} queries, "
        f"{row.n_images} images",
        "",
    ]
    if info["analysis"] is None:
        return [*lines, "No attack ran.", ""]
    return [
        *lines,
        f"Model {info['task']['arch']} (clean accuracy on the attack pool "
        f"{info['task']['pool_accuracy']:.1%}); {info['wall_seconds']:,.0f} s for the row.",
        "",
        *render_runs(info["analysis"], info["skipped"]),
    ]


def render(results: dict[str, Any]) -> str:
    lines = [
        f"`{results['command']}`",
        "",
        f"{results['started_utc']}, {results['machine']['cpu']} "
        f"({results['machine']['cores']} cores), {results['threads']} torch thread(s), "
        f"load average {results['load_average_start']} at the start, "
        f"{results.get('load_average_end')} at the end; {results.get('wall_seconds', 0):,.0f} s.",
        "",
    ]
    for key, info in results["rows"].items():
        lines += render_row(Row.parse(key), info)
    return "\n".join(lines) + "\n"


def save(out: Path, results: dict[str, Any]) -> str:
    """Write ``results.json`` and ``table.md``; return the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = render(results)
    (out / "table.md").write_text(table)
    return table


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows",
        default=DEFAULT_ROWS,
        help=f"comma-separated dataset:k:budget:images (default: {DEFAULT_ROWS})",
    )
    parser.add_argument(
        "--attacks",
        default=",".join(DEFAULT_ATTACKS),
        help="comma-separated, from: "
        + ", ".join((*PIXELGUARD, *ALL_PEERS))
        + f" (default: {','.join(DEFAULT_ATTACKS)})",
    )
    parser.add_argument(
        "--seeds", default="0,1,2", help="seeds of pixelguard's attacks (default: 0,1,2)"
    )
    parser.add_argument(
        "--peer-seed", type=int, default=None, help="the peers' seed (default: the first seed)"
    )
    parser.add_argument(
        "--task-seed",
        type=int,
        default=0,
        help="seed of the model and of the image choice (default 0: the cached models)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared 2-core machine 2 threads contend)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=SHARED_DATASETS,
        help="folder holding mnist/ and cifar10-jpg.tar.gz",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/query-curves"))
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    try:
        args.rows = [Row.parse(text) for text in _csv(args.rows)]
    except ValueError:
        parser.error("--rows: each row is dataset:k:budget:images, e.g. mnist:10:1000:40")
    unknown = {r.dataset for r in args.rows} - {"digits", "mnist", "cifar10"}
    if unknown:
        parser.error(f"unknown dataset(s): {', '.join(sorted(unknown))}")
    args.attacks = _csv(args.attacks)
    unknown = set(args.attacks) - {*PIXELGUARD, *ALL_PEERS}
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(sorted(unknown))}")
    args.seeds = [int(s) for s in _csv(args.seeds)]
    if args.peer_seed is None:
        args.peer_seed = args.seeds[0]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every row; write results.json, table.md and the curves; print the table."""
    args = parse_args(argv)
    run = begin_run("benchmarks/bench_query_curves.py", argv, args.threads, verbose=args.verbose)
    threads, started = run.threads, run.started
    results: dict[str, Any] = {
        "command": run.command,
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(),
        "revision": source_revision(Path(__file__).resolve().parents[1]),
        "load_average_start": load_average(),
        "versions": package_versions(PEER_STACK),
        "threads": threads,
        "l0_tolerance": L0_TOLERANCE,
        "seeds": args.seeds,
        "peer_seed": args.peer_seed,
        "task_seed": args.task_seed,
        "attacks": args.attacks,
        "rows": {},
        "runs": [],
    }
    tasks: dict[tuple[str, int], Task] = {}
    any_l0_cache: dict[tuple[str, ...], tuple[AttackOutput, dict[str, Any]]] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    for row in args.rows:
        if (row.dataset, row.n_images) not in tasks:
            tasks[row.dataset, row.n_images] = build_task(
                row.dataset, row.n_images, args.task_seed, False, args.data_dir
            )
        task = tasks[row.dataset, row.n_images]
        start = time.perf_counter()
        records, skipped = run_row(
            row, task, args.attacks, args.seeds, args.peer_seed, any_l0_cache
        )
        results["runs"] += records
        results["rows"][row.key] = {
            "task": {**task.info, "input_shape": list(task.input_shape)},
            "skipped": skipped,
            "wall_seconds": round(time.perf_counter() - start, 1),
            "analysis": analyse_row(records, args.seeds) if records else None,
            "plot": plot_row(row, records, args.out) if records else None,
        }
        save(args.out, results)
    results["load_average_end"] = load_average()
    results["wall_seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    print(save(args.out, results))
    return results


if __name__ == "__main__":
    main()
