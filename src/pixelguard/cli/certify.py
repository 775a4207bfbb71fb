"""``pixelguard certify``: certified pixel robustness by randomized ablation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, number, percent
from pixelguard.errors import ConfigError

if TYPE_CHECKING:
    from pixelguard.defenses.ablation import AblationBase
    from pixelguard.workflows.certification import Certification

CERTIFY_PANEL = "Certification options"
TRAIN_PANEL = "Base classifier training (--train-base)"


@opt.with_options(data_options=opt.DataOptions)
def certify_command(
    *,
    data: opt.DataSpec,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for certify.json.", rich_help_panel=opt.OUTPUT_PANEL
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="An ablation base classifier checkpoint (written by --train-base).",
            rich_help_panel=opt.MODEL_PANEL,
        ),
    ] = None,
    train_base: Annotated[
        Path | None,
        typer.Option(
            help="Train an ablation base classifier on the train split, save it to this "
            "checkpoint and certify with it.",
            rich_help_panel=TRAIN_PANEL,
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option(
            help="Pixels kept per ablation (default: the base classifier's; "
            "needed with --train-base).",
            rich_help_panel=CERTIFY_PANEL,
        ),
    ] = None,
    samples: Annotated[
        int,
        typer.Option(
            help="Ablations per image estimating the vote.", rich_help_panel=CERTIFY_PANEL
        ),
    ] = 1000,
    select_samples: Annotated[
        int,
        typer.Option(help="Ablations per image choosing the class.", rich_help_panel=CERTIFY_PANEL),
    ] = 100,
    alpha: Annotated[
        float,
        typer.Option(
            help="Each certificate fails with probability at most alpha.",
            rich_help_panel=CERTIFY_PANEL,
        ),
    ] = 0.05,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Certify at most N images, drawn at random with --seed (default: all).",
            rich_help_panel=CERTIFY_PANEL,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the ablations (and of training).")] = 0,
    arch: Annotated[
        str,
        typer.Option(help=opt.ARCH_HELP, rich_help_panel=TRAIN_PANEL),
    ] = "small-cnn",
    epochs: Annotated[
        int, typer.Option(help="Passes over the training images.", rich_help_panel=TRAIN_PANEL)
    ] = 30,
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    data_options: opt.DataOptions,
) -> None:
    """Certify how many pixels provably cannot change each prediction (randomized ablation)."""
    from pixelguard.defenses.ablation import load_ablation_base
    from pixelguard.defenses.certify import RandomizedAblation
    from pixelguard.files import write_json
    from pixelguard.workflows.certification import certify_dataset, train_ablation_base

    opt.check_output_folder(out)
    if model is not None and train_base is None:
        base = load_ablation_base(model)
        if keep is not None and keep != base.keep:
            raise ConfigError(
                f"{model} was trained with keep={base.keep}; certify with the same --keep"
            )
    elif train_base is not None and model is None:
        if keep is None:
            raise ConfigError("--train-base needs --keep K, the pixels kept per ablation")
        train = data_options.load(data, split="train")
        base = train_ablation_base(train, keep, arch=arch, epochs=epochs, seed=seed)
        base.save(train_base)
    else:
        raise ConfigError("give either --model BASE.pt or --train-base PATH to train one")
    certifier = RandomizedAblation(
        base.module,
        base.image_shape,
        base.keep,
        samples=samples,
        samples_select=select_samples,
        alpha=alpha,
        seed=seed,
    )
    dataset = data_options.load(data).sample(limit, seed)
    with bars.progress_bar("certifying", quiet=quiet) as bar:
        certification = certify_dataset(certifier, dataset, progress=bars.images_progress(bar))
    report = {
        **certification.to_dict(),
        "base": _base_info(base, model if model is not None else str(train_base)),
        "data": opt.data_info(data, dataset, data_options),
    }
    path = write_json(out / "certify.json", report)
    if json_output:
        typer.echo(json.dumps({**report, "files": [str(path)]}, indent=2))
        return
    _echo_certification(certification, dataset.source)
    typer.echo(files_line([path]))


def _base_info(base: AblationBase, path: str) -> dict[str, Any]:
    """The base classifier, for the report."""
    return {"path": path, "arch": base.arch, "keep": base.keep, "metrics": base.metrics}


def _echo_certification(certification: Certification, source: str) -> None:
    """Print accuracy, abstentions, the median radius and the certified-accuracy curve."""
    data = certification.to_dict()
    params = data["certifier"]
    n_certified = int(certification.certified_correct.sum())
    typer.echo(
        f"randomized ablation (keep {params['keep']} of {data['pixels']} pixels, "
        f"{params['samples']:,} samples, alpha {params['alpha']:g}) on {data['n_images']:,} "
        f"images of {source}"
    )
    rows = [
        ("smoothed accuracy", percent(data["clean_accuracy"])),
        ("abstained", f"{data['abstained']:,}"),
        (
            "median radius",
            f"{number(data['median_radius'])} pixels  (over {n_certified:,} images certified correct)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"  {name:<{width}}  {value}")
    curve = ", ".join(
        f"{point['radius']}: {percent(point['certified_accuracy'])}"
        for point in data["certified_accuracy"]
    )
    typer.echo(f"  certified accuracy by radius  {curve}")
