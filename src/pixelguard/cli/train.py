"""``pixelguard train``: train a small zoo network and save a pixelguard checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pixelguard.cli import options as opt
from pixelguard.cli.output import percent, seconds

VAL_FRACTION = 0.1
"""Share of the training images held out when the data has no test split."""


def train(
    *,
    data: opt.DataSpec,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="The checkpoint to write (.pt).", rich_help_panel=opt.OUTPUT_PANEL
        ),
    ],
    arch: Annotated[str, typer.Option(help=opt.ARCH_HELP)] = "small-cnn",
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 20,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and shuffling.")] = 0,
    split: Annotated[
        str,
        typer.Option(
            help="Split to train on: train, test or all. With train, accuracy is "
            "reported on the test split where the data has one.",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ] = "train",
    labels: opt.Labels = None,
    data_layout: opt.DataLayout = "auto",
    value_range: opt.ValueRange = "auto",
    quiet: opt.Quiet = False,
) -> None:
    """Train a small CNN or MLP; `pixelguard attack --model OUT` then needs no model options."""
    from pixelguard.workflows.training import train_on_dataset

    options = opt.DataOptions(labels, data_layout, value_range, split)
    train_data = options.load(data)
    test = options.separate_test_split(data, train_data) if split == "train" else None
    with opt.progress_bar("training", quiet=quiet, unit="epoch") as bar:
        trained = train_on_dataset(
            train_data,
            arch=arch,
            epochs=epochs,
            lr=lr,
            seed=seed,
            test=test,
            val_fraction=0.0 if test is not None else VAL_FRACTION,
            progress=opt.epochs_progress(bar),
        )
    trained.save(out)
    metrics = trained.metrics
    typer.echo(
        f"trained {arch} on {metrics['train_size']:,} images of {train_data.source} "
        f"in {seconds(metrics['seconds'])}"
    )
    typer.echo(f"  train accuracy       {percent(metrics['train_accuracy'])}")
    if test is not None:
        typer.echo(
            f"  test accuracy        {percent(metrics['test_accuracy'])}  ({len(test):,} images)"
        )
    elif metrics["val_accuracy"] is not None:
        typer.echo(
            f"  validation accuracy  {percent(metrics['val_accuracy'])}  "
            f"({metrics['val_size']:,} held-out images)"
        )
    typer.echo(f"wrote {out}")
