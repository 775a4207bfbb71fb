"""``pixelguard poison``: plant a pixel-trigger backdoor in a training set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import percent
from pixelguard.errors import ConfigError

POISON_PANEL = "Poisoning options"


@opt.with_options(
    model_options=opt.ModelOptions, data_options=opt.DataOptions, defaults={"split": "train"}
)
def poison_command(
    *,
    data: opt.DataSpec,
    trigger: Annotated[
        str,
        typer.Option(
            help="The trigger: square:S[@corner], checker:S[@corner] or pixels:K[,seed=N]; "
            "corners top-left, top-right, bottom-left, bottom-right (default); "
            "more settings as ,margin=M or ,value=V.",
            rich_help_panel=POISON_PANEL,
        ),
    ],
    rate: Annotated[
        float,
        typer.Option(
            help="Share of the images to poison, in (0, 1).", rich_help_panel=POISON_PANEL
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The poisoned set to write (.npz: x, y, the poison mask, the clean labels "
            "and what was done).",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option(
            help="The class triggered images are sent to, by number or name (not with all-to-all).",
            rich_help_panel=POISON_PANEL,
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="all-to-one (relabel to --target), all-to-all (y to y+1) or clean-label "
            "(only --target images, labels kept, PGD-perturbed first).",
            rich_help_panel=POISON_PANEL,
        ),
    ] = "all-to-one",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="clean-label: the clean model to perturb against (default: train a "
            "small-cnn on the data first).",
            rich_help_panel=POISON_PANEL,
        ),
    ] = None,
    eps: Annotated[
        str | None,
        typer.Option(
            help="clean-label: L-infinity radius of the PGD perturbation, e.g. 16/255 "
            "(default 16/255).",
            rich_help_panel=POISON_PANEL,
        ),
    ] = None,
    steps: Annotated[
        int, typer.Option(help="clean-label: PGD steps.", rich_help_panel=POISON_PANEL)
    ] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the choice of images.")] = 0,
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
    data_options: opt.DataOptions,
) -> None:
    """Stamp a pixel trigger on a seeded share of a training set (BadNets or clean-label)."""
    from pixelguard.models.base import parse_number
    from pixelguard.poisoning.backdoor import CLEAN_LABEL_EPS
    from pixelguard.workflows.poisoning import plant_backdoor

    if out.suffix.lower() != ".npz" or out.is_dir():
        raise ConfigError(f"--out must name an .npz file to write, got {out}")
    if model is not None and mode != "clean-label":
        raise ConfigError("--model is used only by --mode clean-label")
    dataset = data_options.load(data)
    chosen_target = opt.resolve_target(target, dataset.class_names)
    clean_model = None
    if model is not None:
        clean_model, _ = opt.load_classifier(model, model_options, dataset)
    radius = CLEAN_LABEL_EPS if eps is None else parse_number(eps)
    with bars.progress_bar("clean model", quiet=quiet, unit="epoch") as bar:
        poisoned, clean_training = plant_backdoor(
            dataset,
            trigger,
            rate=rate,
            target=chosen_target,
            mode=mode,
            seed=seed,
            model=clean_model,
            eps=radius,
            steps=steps,
            progress=bars.epochs_progress(bar),
        )
    path = poisoned.save(out)
    summary = {**poisoned.metadata(), "clean_model": clean_training, "file": str(path)}
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    where = "y -> y+1" if poisoned.target is None else f"class {poisoned.target}"
    typer.echo(
        f"poisoned {poisoned.n_poisoned:,} of {len(dataset):,} images "
        f"({percent(poisoned.rate)}) of {dataset.source}, {mode} to {where}"
    )
    typer.echo(f"  trigger  {trigger} ({poisoned.trigger.n_pixels} pixels), seed {seed}")
    if poisoned.eps is not None:
        typer.echo(f"  clean-label PGD  eps {poisoned.eps:.4g}, {steps} steps")
    typer.echo(f"wrote {path}")
