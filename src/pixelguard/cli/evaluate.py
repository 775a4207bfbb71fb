"""``pixelguard evaluate``: the worst-case robust accuracy of a model under an attack suite.

Exit codes: 0 done (every ``--fail-under`` gate passed), 1 a gate failed
(:data:`GATE_FAILED`), 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent
from pixelguard.defaults import SHARD_SIZE

if TYPE_CHECKING:
    from tqdm import tqdm

    from pixelguard.evaluate.runner import EvaluationProgress

GATE_FAILED = 1
"""Exit code of a run whose robust (or clean) accuracy is below a ``--fail-under`` gate."""


@opt.with_options(model_options=opt.ModelOptions, data_options=opt.DataOptions)
def evaluate_command(
    *,
    model: opt.ModelSpec,
    data: opt.DataSpec,
    suite: Annotated[
        str,
        typer.Option(
            help="Attacks to run: pixel (few-pixel), dense (Linf PGD) or full (both).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = "pixel",
    pixels: Annotated[
        str,
        typer.Option(help="Pixel budgets k, e.g. 1,3,10.", rich_help_panel=opt.ATTACK_PANEL),
    ] = "1,3,10",
    eps: Annotated[
        str,
        typer.Option(help="Linf budgets, e.g. 0.1,0.2,0.3.", rich_help_panel=opt.ATTACK_PANEL),
    ] = "0.1,0.2,0.3",
    budget: Annotated[
        int | None,
        typer.Option(
            help="Most model queries per image and attack.", rich_help_panel=opt.ATTACK_PANEL
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Evaluate at most N images, drawn at random with --seed (default: all).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of every attack and of the --limit sample.",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = 0,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-under",
            metavar="BUDGET:MIN",
            help="Exit with code 1 if accuracy at BUDGET is below MIN, e.g. pixels=1:0.5, "
            "linf=8/255:0.3 or clean:0.9 (repeatable; budgets as the report names them).",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
    shard_size: Annotated[
        int,
        typer.Option(
            help="Images per shard: per attack call, checkpoint file and Ray task.",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = SHARD_SIZE,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted evaluation in --out: evaluate only its missing shards.",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="Where shards run: local (this process) or ray (Ray tasks; needs the "
            "ray extra of pixelguard).",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to attach to, e.g. auto or ray://head:10001 "
            "(default: start a local one).",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for report.json, report.md, report.html, adversarial.npz and the checkpoint.",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    defense: opt.DefenseSpec = None,
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
    data_options: opt.DataOptions,
) -> None:
    """Run an attack suite; an image is robust only if every attack failed.

    Exits with code 1 when a --fail-under gate fails, 2 on bad input.
    """
    from pixelguard.evaluate.runner import evaluate
    from pixelguard.evaluate.suite import Gate, build_suite, check_gates
    from pixelguard.models.base import parse_floats
    from pixelguard.report.evaluation import write_evaluation_report

    opt.check_output_folder(out)
    gates = [Gate.parse(text) for text in fail_under or []]
    dataset = data_options.load(data)
    sample = dataset.sample(limit, seed)
    classifier, defense_info = opt.load_classifier(model, model_options, dataset, defense)
    attack_suite = build_suite(
        suite,
        pixels=opt.parse_ints(pixels, "--pixels"),
        eps=parse_floats(eps, "--eps") or (),
        budget=budget,
        gradients=classifier.capabilities.gradients,
        seed=seed,
    )
    check_gates(gates, attack_suite.budgets())
    checkpoint = out / opt.CHECKPOINT_FOLDER
    with (
        bars.resume_hint(checkpoint, "shards"),
        bars.progress_bar(f"{suite} suite", quiet=quiet) as bar,
    ):
        evaluation = evaluate(
            classifier,
            sample,
            attack_suite,
            shard_size=shard_size,
            progress=_evaluation_progress(bar),
            checkpoint_dir=checkpoint,
            resume=resume,
            backend=backend,
            ray_address=ray_address,
            defense=defense_info,
            model_info=opt.model_info(model, classifier, model_options, defense_info),
            data_info={
                "limit": limit,
                "seed": seed,
                **opt.data_info(data, sample, data_options),
                "drawn_from": len(dataset),
            },
        )
    paths = write_evaluation_report(out, evaluation)
    results = evaluation.check(gates)
    summary = evaluation.summary()
    if json_output:
        gate_data = [result.to_dict() for result in results]
        files = [str(path) for path in paths]
        typer.echo(json.dumps({**summary, "gates": gate_data, "files": files}, indent=2))
    else:
        _echo_evaluation(summary, paths)
    for result in results:  # on stderr, so that --json keeps stdout to the JSON
        typer.echo(result.text(), err=True)
    if not all(result.passed for result in results):
        raise typer.Exit(GATE_FAILED)


def _evaluation_progress(bar: tqdm | None) -> EvaluationProgress | None:
    """Move ``bar`` over the images and show the worst robust accuracy so far."""
    move = bars.images_progress(bar)
    if bar is None or move is None:
        return None
    shown = bar

    def update(done: int, total: int, robust: dict[str, float]) -> None:
        if robust:
            worst = min(robust, key=lambda label: robust[label])
            shown.set_postfix_str(f"robust {percent(robust[worst])} @{worst}", refresh=False)
        move(done, total)

    return update


def _echo_evaluation(summary: dict[str, Any], paths: Sequence[Path]) -> None:
    """Print what was evaluated, the accuracy per budget with its interval, the flags,
    the verdict and the files written."""
    from pixelguard.report.evaluation import accuracy_rows, evaluated_rows, verdict

    evaluated = dict(evaluated_rows(summary))
    typer.echo(
        f"{summary['suite']} suite on "
        + "; ".join(f"{what} {text}" for what, text in evaluated.items() if what != "suite")
    )
    rows = accuracy_rows(summary)
    width = max(len(name) for name, _ in rows)
    typer.echo(f"  {'budget':<{width}}  accuracy")
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    for flag in summary["flags"]:
        typer.echo(f"flag {flag['code']}: {flag['message']}")
    typer.echo(verdict(summary))
    typer.echo(files_line(paths))
