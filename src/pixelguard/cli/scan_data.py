"""``pixelguard scan-data``: screen a training set for poison (spectral signatures or
activation clustering), score the flags against the true mask, optionally retrain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent
from pixelguard.errors import ConfigError
from pixelguard.parsing import parse_key_values

if TYPE_CHECKING:
    from pixelguard.data import Dataset
    from pixelguard.workflows.screening import Backdoor, ScreeningRun

SCAN_PANEL = "Screening options"
RETRAIN_PANEL = "Retraining options"
METHOD_NAMES = ("spectral", "activation-clustering")


@opt.with_options(
    model_options=opt.ModelOptions, data_options=opt.DataOptions, defaults={"split": "train"}
)
def scan_data_command(
    *,
    model: opt.ModelSpec,
    data: opt.DataSpec,
    method: Annotated[
        str,
        typer.Option(
            help="Screening method: spectral (Tran et al. 2018) or activation-clustering "
            "(Chen et al. 2018). Features come from the input of the model's last nn.Linear: "
            "torch models only (pixelguard checkpoints, torch module files, file.py:factory).",
            rich_help_panel=SCAN_PANEL,
        ),
    ] = "spectral",
    epsilon: Annotated[
        float | None,
        typer.Option(
            help="spectral: expected poison share per class; flags removal-factor x epsilon "
            "of every class (default: estimated per class).",
            rich_help_panel=SCAN_PANEL,
        ),
    ] = None,
    removal_factor: Annotated[
        float | None,
        typer.Option(
            help="spectral: flag this many times the expected or estimated poison (default 1.5).",
            rich_help_panel=SCAN_PANEL,
        ),
    ] = None,
    size_threshold: Annotated[
        float | None,
        typer.Option(
            help="activation-clustering: flag the smaller cluster of a class when it holds "
            "less than this share of it (default 0.35).",
            rich_help_panel=SCAN_PANEL,
        ),
    ] = None,
    scan_param: Annotated[
        list[str] | None,
        typer.Option(
            help="Any other method setting as key=value (repeatable), e.g. "
            "min_separation=0.85 or n_components=10.",
            rich_help_panel=SCAN_PANEL,
        ),
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain/--no-retrain",
            help="Train a fresh network on the images not flagged and measure it on --test-data.",
            rich_help_panel=RETRAIN_PANEL,
        ),
    ] = False,
    arch: Annotated[
        str, typer.Option(help=opt.ARCH_HELP, rich_help_panel=RETRAIN_PANEL)
    ] = "small-cnn",
    epochs: Annotated[
        int,
        typer.Option(help="Retraining passes over the kept images.", rich_help_panel=RETRAIN_PANEL),
    ] = 20,
    test_data: Annotated[
        str | None,
        typer.Option(
            help="Clean test images for clean accuracy and attack success rate, of the "
            "model and (with --retrain) of the retrained one; same data options as --data, "
            "split test.",
            rich_help_panel=RETRAIN_PANEL,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the clustering and the retraining.")] = 0,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for scan.json and report.html.",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
    data_options: opt.DataOptions,
) -> None:
    """Screen a training set for poison; flags in scan.json, flagged images in report.html."""
    from pixelguard.poisoning.backdoor import read_poison_info
    from pixelguard.workflows.screening import (
        check_screenable,
        create_screen,
        scan_training_set,
        write_scan_reports,
    )

    screen = create_screen(
        method,
        **_method_settings(method, epsilon, removal_factor, size_threshold, seed, scan_param),
    )
    opt.check_output_folder(out)
    if retrain and epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    dataset = data_options.load(data)
    info = read_poison_info(data)
    if info is not None and tuple(info.mask.shape) != (len(dataset),):
        raise ConfigError(
            f"{data}: its poison mask covers {info.mask.numel()} images, the data holds {len(dataset)}"
        )
    test = data_options.load(test_data, split="test") if test_data is not None else None
    classifier, _ = opt.load_classifier(model, model_options, dataset)
    check_screenable(classifier, dataset)
    backdoor = _backdoor(info, test)
    with bars.progress_bar("retraining", quiet=quiet or not retrain, unit="epoch") as bar:
        run = scan_training_set(
            classifier,
            dataset,
            screen,
            poison_mask=None if info is None else info.mask,
            backdoor=backdoor,
            test=test,
            retrain=retrain,
            arch=arch,
            epochs=epochs,
            seed=seed,
            progress=bars.epochs_progress(bar),
        )
    extra: dict[str, Any] = {
        "model": opt.model_info(model, classifier, model_options),
        "data": opt.data_info(data, dataset, data_options),
        "test_data": None if test is None else {"spec": test_data, "n_images": len(test)},
        "poison": None if info is None else info.metadata,
    }
    paths = write_scan_reports(out, run, dataset, extra)
    if json_output:
        body = json.loads(paths[0].read_text(encoding="utf-8"))
        typer.echo(json.dumps({**body, "files": [str(p) for p in paths]}, indent=2))
        return
    _echo_scan(run, dataset)
    typer.echo(files_line(paths))


def _method_settings(
    method: str,
    epsilon: float | None,
    removal_factor: float | None,
    size_threshold: float | None,
    seed: int,
    scan_param: list[str] | None,
) -> dict[str, Any]:
    """The method's settings from its named options and ``--scan-param``; options that
    belong to the other method are refused."""
    if method not in METHOD_NAMES:
        raise ConfigError(f"--method must be one of {', '.join(METHOD_NAMES)}, got {method!r}")
    named = {"epsilon": epsilon, "removal_factor": removal_factor, "size_threshold": size_threshold}
    other = {
        "spectral": ("size_threshold",),
        "activation-clustering": ("epsilon", "removal_factor"),
    }
    for name in other[method]:
        if named[name] is not None:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to --method {method}")
    settings = {k: v for k, v in named.items() if v is not None}
    if method == "activation-clustering":
        settings["seed"] = seed
    return {**settings, **parse_key_values(scan_param or [], "--scan-param")}


def _backdoor(info: Any, test: Dataset | None) -> Backdoor | None:
    """The trigger and target from the poisoned data's metadata, for the ASR on ``test``."""
    from pixelguard.workflows.screening import Backdoor

    if info is None or test is None:
        return None
    if test.image_shape != tuple(info.metadata["image_shape"]):
        return None
    return Backdoor(info.trigger, info.target, info.mode)


def _echo_scan(run: ScreeningRun, dataset: Dataset) -> None:
    from pixelguard.workflows.screening import headline

    typer.echo(headline(run))
    data = run.to_dict()
    names = dataset.class_names
    flagged = [
        f"{c['label']}" + (f" ({names[c['label']]})" if names else "") + f": {c['n_flagged']:,}"
        for c in data["classes"]
        if c["n_flagged"]
    ]
    typer.echo(f"  flagged per class: {', '.join(flagged) if flagged else 'none'}")
    if run.metrics is not None:
        m = run.metrics
        typer.echo(
            f"  precision {percent(m.precision)}, recall {percent(m.recall)}, F1 {m.f1:.3f} "
            f"({m.true_positives:,} true and {m.false_positives:,} false positives, "
            f"{m.false_negatives:,} poisoned images missed)"
        )
    if run.retrain is not None:
        r = run.retrain
        line = f"  retrained {r['arch']} on {r['n_kept']:,} kept images ({r['epochs']} epochs)"
        if "clean_accuracy" in r:
            line += f": clean accuracy {percent(r['clean_accuracy'])}"
        if "attack_success_rate" in r:
            line += f", attack success rate {percent(r['attack_success_rate'])}"
        typer.echo(line)
