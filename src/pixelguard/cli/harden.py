"""``pixelguard harden``: adversarially train a checkpoint and compare robustness before/after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent, seconds

if TYPE_CHECKING:
    from pixelguard.workflows.hardening import RobustnessComparison

TRAIN_PANEL = "Training options"
EVALUATION_PANEL = "Evaluation options"


@opt.with_options(data_options=opt.DataOptions, exclude=("split",))
def harden_command(
    *,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A pixelguard checkpoint (from pixelguard train) to harden.",
            rich_help_panel=opt.MODEL_PANEL,
        ),
    ],
    data: opt.DataSpec,
    against: Annotated[
        str,
        typer.Option(
            help="Threat model to train against: pixels:K, linf:EPS or l2:EPS.",
            rich_help_panel=TRAIN_PANEL,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The hardened checkpoint to write (.pt).",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    epochs: Annotated[
        int, typer.Option(help="Passes over the training images.", rich_help_panel=TRAIN_PANEL)
    ] = 10,
    lr: Annotated[
        float, typer.Option(help="Adam learning rate.", rich_help_panel=TRAIN_PANEL)
    ] = 1e-3,
    batch_size: Annotated[
        int, typer.Option(help="Images per training step.", rich_help_panel=TRAIN_PANEL)
    ] = 128,
    fraction: Annotated[
        float,
        typer.Option(
            help="Share of each batch trained on as adversarial examples, in (0, 1].",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = 0.5,
    trades: Annotated[
        float | None,
        typer.Option(
            metavar="BETA",
            help="Train with the TRADES loss, weighting its KL term by BETA (e.g. 6).",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    attack_steps: Annotated[
        int,
        typer.Option(help="Gradient steps of the training attack.", rich_help_panel=TRAIN_PANEL),
    ] = 10,
    seed: Annotated[int, typer.Option(help="Seed of training and of the evaluation attacks.")] = 0,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run after its last finished epoch.",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Evaluate both models on at most N test images, drawn at random with --seed.",
            rich_help_panel=EVALUATION_PANEL,
        ),
    ] = 200,
    budget: Annotated[
        int | None,
        typer.Option(
            help="Most model queries per image and evaluation attack.",
            rich_help_panel=EVALUATION_PANEL,
        ),
    ] = None,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also write evaluation reports to DIR/before and DIR/after, and DIR/hardening.json.",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ] = None,
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    data_options: opt.DataOptions,
) -> None:
    """Adversarially train a model on the train split; compare robustness on the test split."""
    from pixelguard.attacks.base import parse_threat
    from pixelguard.files import write_json
    from pixelguard.report.evaluation import write_evaluation_report
    from pixelguard.workflows.hardening import (
        compare_robustness,
        harden_checkpoint,
        hardening_state_path,
        load_trainable_checkpoint,
    )

    if report_dir is not None:
        opt.check_output_folder(report_dir, "--report-dir")
    threat = parse_threat(against)
    original = load_trainable_checkpoint(model)
    train = data_options.load(data, split="train")
    test = (data_options.separate_test_split(data, train) or train).sample(limit, seed)
    with (
        bars.resume_hint(hardening_state_path(out), "epochs"),
        bars.progress_bar("hardening", quiet=quiet, unit="epoch") as bar,
    ):
        saved, hardened = harden_checkpoint(
            original,
            train,
            threat,
            out,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            adversarial_fraction=fraction,
            trades_beta=trades,
            attack_steps=attack_steps,
            seed=seed,
            resume=resume,
            progress=bars.epochs_progress(bar),
        )
    with bars.progress_bar("evaluating", quiet=quiet) as bar:
        comparison = compare_robustness(
            original.classifier(),
            saved.classifier(),
            test,
            threat,
            budget=budget,
            seed=seed,
            progress=bars.images_progress(bar),
        )
    summary = {
        **comparison.to_dict(),
        "model": str(out),
        "training": {**hardened.params, "train_size": len(train), "history": hardened.history},
    }
    paths = [out]
    if report_dir is not None:
        paths += write_evaluation_report(report_dir / "before", comparison.before)
        paths += write_evaluation_report(report_dir / "after", comparison.after)
        paths.append(write_json(report_dir / "hardening.json", summary))
    if json_output:
        typer.echo(json.dumps({**summary, "files": [str(p) for p in paths]}, indent=2))
        return
    typer.echo(
        f"hardened {original.arch} against {threat.spec} for {epochs} epochs on {len(train):,} "
        f"images of {train.source} in {seconds(hardened.seconds)}"
    )
    _echo_comparison(comparison, test.source)
    typer.echo(files_line(paths))


def _echo_comparison(comparison: RobustnessComparison, source: str) -> None:
    """Print clean and robust accuracy of both models as an aligned table."""
    data = comparison.to_dict()
    typer.echo(
        f"{data['suite']} suite at {data['budget']} on {data['n_images']:,} images of {source}"
    )
    header = f"robust at {data['budget']}"
    typer.echo(f"  {'model':<6}  {'clean':>6}  {header}")
    for name in ("before", "after"):
        row = data[name]
        typer.echo(
            f"  {name:<6}  {percent(row['clean_accuracy']):>6}  {percent(row['robust_accuracy'])}"
        )
