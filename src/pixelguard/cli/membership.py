"""``pixelguard membership``: does the model leak which images it was trained on?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent, seconds
from pixelguard.errors import ConfigError
from pixelguard.parsing import parse_key_values

if TYPE_CHECKING:
    from pixelguard.workflows.membership import MembershipEvaluation

MEMBERSHIP_PANEL = "Membership options"
SHADOW_PANEL = "Shadow-model options"


@opt.with_options(model_options=opt.ModelOptions)
def membership_command(
    *,
    model: opt.ModelSpec,
    members: Annotated[
        str,
        typer.Option(
            help="Images the model was trained on (a data spec as for --data).",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ],
    non_members: Annotated[
        str,
        typer.Option(
            help="Images of the same kind the model never saw (a data spec as for --data).",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for membership.json, report.html, scores.npz (and the shadow checkpoint).",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    attack_name: Annotated[
        str,
        typer.Option(
            "--attack",
            "-a",
            help="loss-threshold (the model's loss on each image) or shadow (Shokri's "
            "shadow models, trained on --shadow-data).",
            rich_help_panel=MEMBERSHIP_PANEL,
        ),
    ] = "loss-threshold",
    signal: Annotated[
        str,
        typer.Option(
            help="The loss-threshold score: loss, confidence or margin.",
            rich_help_panel=MEMBERSHIP_PANEL,
        ),
    ] = "loss",
    calibration: Annotated[
        str,
        typer.Option(
            help="loss-threshold: none (the raw score) or class (each score against the "
            "scores of --reference-data images of its class).",
            rich_help_panel=MEMBERSHIP_PANEL,
        ),
    ] = "none",
    reference_data: Annotated[
        str | None,
        typer.Option(
            help="The attacker's own labelled images, none of them members, for "
            "--calibration class.",
            rich_help_panel=MEMBERSHIP_PANEL,
        ),
    ] = None,
    shadow_data: Annotated[
        str | None,
        typer.Option(
            help="The attacker's own labelled images for the shadow models, of the "
            "members' kind but none of them.",
            rich_help_panel=SHADOW_PANEL,
        ),
    ] = None,
    shadow_models: Annotated[
        int, typer.Option(help="Shadow models to train.", rich_help_panel=SHADOW_PANEL)
    ] = 4,
    shadow_arch: Annotated[
        str, typer.Option(help=opt.ARCH_HELP, rich_help_panel=SHADOW_PANEL)
    ] = "small-cnn",
    shadow_epochs: Annotated[
        int,
        typer.Option(
            help="Training passes of each shadow model (best: like the target's).",
            rich_help_panel=SHADOW_PANEL,
        ),
    ] = 30,
    attack_model: Annotated[
        str,
        typer.Option(
            help="The attack model learnt from the shadows: gbm or logistic.",
            rich_help_panel=SHADOW_PANEL,
        ),
    ] = "gbm",
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="Any other attack setting as key=value, e.g. --param lr=0.002 (repeatable).",
            rich_help_panel=MEMBERSHIP_PANEL,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted shadow run in --out, keeping its finished "
            "shadow models.",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = False,
    members_labels: Annotated[
        str | None,
        typer.Option(help="Labels (.npy) of .npy members.", rich_help_panel=opt.DATA_PANEL),
    ] = None,
    non_members_labels: Annotated[
        str | None,
        typer.Option(help="Labels (.npy) of .npy non-members.", rich_help_panel=opt.DATA_PANEL),
    ] = None,
    shadow_labels: Annotated[
        str | None,
        typer.Option(help="Labels (.npy) of .npy shadow data.", rich_help_panel=opt.DATA_PANEL),
    ] = None,
    reference_labels: Annotated[
        str | None,
        typer.Option(help="Labels (.npy) of .npy reference data.", rich_help_panel=opt.DATA_PANEL),
    ] = None,
    members_split: Annotated[
        str,
        typer.Option(
            help="Split of --members: train, test or all.", rich_help_panel=opt.DATA_PANEL
        ),
    ] = "train",
    non_members_split: Annotated[
        str,
        typer.Option(
            help="Split of --non-members: train, test or all.", rich_help_panel=opt.DATA_PANEL
        ),
    ] = "test",
    shadow_split: Annotated[
        str,
        typer.Option(
            help="Split of --shadow-data: train, test or all.", rich_help_panel=opt.DATA_PANEL
        ),
    ] = "test",
    reference_split: Annotated[
        str,
        typer.Option(
            help="Split of --reference-data: train, test or all.", rich_help_panel=opt.DATA_PANEL
        ),
    ] = "test",
    limit: Annotated[
        int | None,
        typer.Option(
            help="Use at most N members and N non-members, drawn at random with --seed "
            "(default: all).",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the samples and of the shadow models.")] = 0,
    class_names: opt.ClassNames = None,
    data_layout: opt.DataLayout = "auto",
    value_range: opt.ValueRange = "auto",
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
) -> None:
    """Measure how well an attacker tells the model's training images from new ones."""
    from pixelguard.workflows.membership import (
        create_membership_attack,
        evaluate_membership,
        write_membership_reports,
    )

    settings: dict[str, Any] = (
        {
            "n_shadows": shadow_models,
            "arch": shadow_arch,
            "epochs": shadow_epochs,
            "attack_model": attack_model,
            "seed": seed,
        }
        if attack_name == "shadow"
        else {"signal": signal, "calibration": calibration}
    )
    settings.update(parse_key_values(param or [], "--param"))
    attack = create_membership_attack(attack_name, **settings)
    if attack_name != "shadow" and shadow_data is not None:
        raise ConfigError(f"--shadow-data is for --attack shadow, not {attack_name}")
    if reference_data is not None and calibration != "class":
        raise ConfigError("--reference-data is for --attack loss-threshold --calibration class")
    opt.check_output_folder(out)

    def data_options(labels: str | None, split: str) -> opt.DataOptions:
        return opt.DataOptions(labels, data_layout, value_range, split, class_names)

    sets = {
        "members": (members, data_options(members_labels, members_split)),
        "non_members": (non_members, data_options(non_members_labels, non_members_split)),
    }
    if shadow_data is not None:
        sets["shadow_data"] = (shadow_data, data_options(shadow_labels, shadow_split))
    if reference_data is not None:
        sets["reference"] = (reference_data, data_options(reference_labels, reference_split))
    loaded = {name: options.load(spec) for name, (spec, options) in sets.items()}
    classifier, _ = opt.load_classifier(model, model_options, loaded["members"])
    checkpoint = out / opt.CHECKPOINT_FOLDER
    with (
        bars.resume_hint(checkpoint, "shadow models"),
        bars.progress_bar(
            "shadow models", quiet=quiet or attack_name != "shadow", unit="model"
        ) as bar,
    ):
        evaluation = evaluate_membership(
            classifier,
            loaded["members"],
            loaded["non_members"],
            attack,
            shadow_data=loaded.get("shadow_data"),
            reference=loaded.get("reference"),
            limit=limit,
            seed=seed,
            checkpoint=checkpoint if attack_name == "shadow" else None,
            resume=resume,
            progress=bars.images_progress(bar),
        )
    extra: dict[str, Any] = {"model": opt.model_info(model, classifier, model_options)}
    for name, (spec, options) in sets.items():
        extra[name] = opt.data_info(spec, loaded[name], options)
    paths = write_membership_reports(out, evaluation, extra)
    if json_output:
        report = json.loads(paths[0].read_text(encoding="utf-8"))
        typer.echo(json.dumps({**report, "files": [str(p) for p in paths]}, indent=2))
        return
    _echo_membership(evaluation)
    typer.echo(files_line(paths))


def _echo_membership(evaluation: MembershipEvaluation) -> None:
    """Print the verdict, AUC and the low-FPR rates with their intervals."""
    result = evaluation.result
    typer.echo(
        f"{result.attack} membership attack on {result.n_members:,} members and "
        f"{result.n_non_members:,} non-members ({seconds(result.wall_time)})"
    )
    typer.echo(f"  ROC AUC {result.auc:.3f} (0.5 is chance), advantage {result.advantage:.3f}")
    for point in result.points:
        data = point.to_dict()
        low, high = data["tpr_ci"]
        note = (
            ""
            if point.measurable
            else f"; not measurable on {point.n_non_members:,} non-members, "
            f"needs {data['min_non_members']:,}"
        )
        typer.echo(
            f"  TPR at {100 * point.target_fpr:g}% FPR: {percent(point.tpr)} "
            f"(95% CI {100 * low:.1f}-{percent(high)}, {point.true_positives:,} of "
            f"{point.n_members:,} members){note}"
        )
    typer.echo(evaluation.verdict.text)
