"""``pixelguard evaluate``: the worst-case robust accuracy of a model under an attack suite."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent
from pixelguard.evaluate.runner import SHARD_SIZE, Evaluation, EvaluationProgress, evaluate
from pixelguard.evaluate.suite import build_suite
from pixelguard.models.base import DEFAULT_BATCH_SIZE, parse_floats
from pixelguard.report.evaluation import verdict, write_evaluation_report


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
            help="Evaluate only the first N images (default: all).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of every attack.", rich_help_panel=opt.ATTACK_PANEL)
    ] = 0,
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
    labels: opt.Labels = None,
    data_layout: opt.DataLayout = "auto",
    value_range: opt.ValueRange = "auto",
    split: Annotated[
        str,
        typer.Option(help="Split to evaluate: test, train or all.", rich_help_panel=opt.DATA_PANEL),
    ] = "test",
    input_shape: opt.InputShape = None,
    layout: opt.Layout = None,
    scale: opt.Scale = None,
    mean: opt.Mean = None,
    std: opt.Std = None,
    output: opt.Output = None,
    batch_size: opt.BatchSize = DEFAULT_BATCH_SIZE,
    trust_pickle: opt.TrustPickle = False,
    http_config: opt.HttpConfig = None,
    defense: opt.DefenseSpec = None,
    quiet: opt.Quiet = False,
) -> None:
    """Run an attack suite; an image is robust only if every attack failed."""
    model_options = opt.ModelOptions(
        input_shape, layout, scale, mean, std, output, batch_size, trust_pickle, http_config
    )
    data_options = opt.DataOptions(labels, data_layout, value_range, split)
    classifier, defense_info = opt.apply_defense(model_options.load(model), defense)
    dataset = data_options.load(data)
    attack_suite = build_suite(
        suite,
        pixels=opt.parse_ints(pixels, "--pixels"),
        eps=parse_floats(eps, "--eps") or (),
        budget=budget,
        gradients=classifier.capabilities.gradients,
        seed=seed,
    )
    checkpoint = out / opt.CHECKPOINT_FOLDER
    with (
        opt.resume_hint(checkpoint, "shards"),
        opt.progress_bar(f"{suite} suite", quiet=quiet) as bar,
    ):
        evaluation = evaluate(
            classifier,
            dataset,
            attack_suite,
            limit=limit,
            shard_size=shard_size,
            progress=_evaluation_progress(bar),
            checkpoint_dir=checkpoint,
            resume=resume,
            backend=backend,
            ray_address=ray_address,
            defense=defense_info,
        )
    paths = write_evaluation_report(out, evaluation)
    _echo_evaluation(evaluation, dataset.source)
    typer.echo(files_line(paths))


def _evaluation_progress(bar: tqdm | None) -> EvaluationProgress | None:
    """Move ``bar`` over the images and show the worst robust accuracy so far."""
    move = opt.images_progress(bar)
    if bar is None or move is None:
        return None
    shown = bar

    def update(done: int, total: int, robust: dict[str, float]) -> None:
        if robust:
            worst = min(robust, key=lambda label: robust[label])
            shown.set_postfix_str(f"robust {percent(robust[worst])} @{worst}", refresh=False)
        move(done, total)

    return update


def _echo_evaluation(evaluation: Evaluation, source: str) -> None:
    """Print the verdict, the robust accuracy per budget and the flags."""
    typer.echo(f"{evaluation.suite} suite on {source}")
    rows = [("clean", percent(evaluation.clean_accuracy))]
    rows += [(label, percent(acc)) for label, acc in evaluation.robust_accuracy().items()]
    width = max(len(name) for name, _ in rows)
    typer.echo(f"  {'budget':<{width}}  robust accuracy")
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    for flag in evaluation.flags:
        typer.echo(f"flag {flag.code}: {flag.message}")
    typer.echo(verdict(evaluation))
