"""``pixelguard train``: train a small zoo network and save a pixelguard checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import percent, seconds

if TYPE_CHECKING:
    from pixelguard.data.base import Dataset

VAL_FRACTION = 0.1
"""Share of the training images held out when the data has no test split."""


@opt.with_options(data_options=opt.DataOptions, defaults={"split": "train"})
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
    test_data: Annotated[
        str | None,
        typer.Option(
            help="Clean images to measure on (default: the data's own test split, if any). "
            "With a set written by pixelguard poison, the backdoor's attack success rate "
            "is measured on them too.",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ] = None,
    quiet: opt.Quiet = False,
    data_options: opt.DataOptions,
) -> None:
    """Train a small CNN or MLP; `pixelguard attack --model OUT` then needs no model options."""
    from pixelguard.poisoning.backdoor import read_poison_info
    from pixelguard.workflows.poisoning import backdoor_report
    from pixelguard.workflows.training import train_on_dataset

    train_data = data_options.load(data)
    test: Dataset | None = None
    if test_data is not None:
        test = opt.DataOptions(split="test").load(test_data)
    elif data_options.split == "train":
        test = data_options.separate_test_split(data, train_data)
    poison = read_poison_info(data)
    with bars.progress_bar("training", quiet=quiet, unit="epoch") as bar:
        trained = train_on_dataset(
            train_data,
            arch=arch,
            epochs=epochs,
            lr=lr,
            seed=seed,
            test=test,
            val_fraction=0.0 if test is not None else VAL_FRACTION,
            progress=bars.epochs_progress(bar),
        )
    metrics = trained.metrics
    if poison is not None and test is not None:
        metrics["backdoor"] = backdoor_report(trained.classifier(), test, poison)
    trained.save(out)
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
    if poison is not None:
        typer.echo(
            f"  poisoned training set: {int(poison.mask.sum()):,} images with trigger "
            f"{poison.metadata['trigger']} ({poison.mode})"
        )
        backdoor = metrics.get("backdoor")
        if backdoor is None:
            typer.echo("  attack success rate  - (give clean test images with --test-data)")
        else:
            typer.echo(
                f"  attack success rate  {percent(backdoor['attack_success_rate'])}  "
                f"({backdoor['n_triggered']:,} triggered test images)"
            )
    typer.echo(f"wrote {out}")
