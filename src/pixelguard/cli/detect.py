"""``pixelguard detect``: how well a detector catches an attack, plain and adaptive."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixelguard.cli import attack_options, bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent
from pixelguard.errors import ConfigError
from pixelguard.parsing import parse_key_values

if TYPE_CHECKING:
    from pixelguard.attacks.base import Attack
    from pixelguard.data.base import Dataset
    from pixelguard.defenses.detect import Detector
    from pixelguard.models.base import Classifier
    from pixelguard.workflows.detection import DetectionEvaluation

DETECTOR_PANEL = "Detector options"


@opt.with_options(model_options=opt.ModelOptions, data_options=opt.DataOptions)
def detect_command(
    *,
    model: opt.ModelSpec,
    data: opt.DataSpec,
    detector: Annotated[
        str,
        typer.Option(
            help=f"Detector to evaluate: {', '.join(opt.DETECTOR_NAMES)} (or isolated-pixels).",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ],
    detector_param: Annotated[
        list[str] | None,
        typer.Option(
            help="A detector setting as key=value (repeatable), e.g. top=3 for "
            "isolated-pixel or squeezers=median3,bits4 for feature-squeezing.",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ] = None,
    fpr: Annotated[
        str,
        typer.Option(
            help="Target false-positive rates on clean images, e.g. 0.01,0.05.",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ] = "0.01,0.05",
    fit_fraction: Annotated[
        float,
        typer.Option(
            help="Share of the images (a seeded split) the detector is fitted and "
            "calibrated on; the rest are held out and attacked.",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ] = 0.5,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive/--no-adaptive",
            help="Also attack model plus detector: success only when misclassified "
            "(with --trigger: sent to --target) and not flagged.",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ] = True,
    trigger: Annotated[
        str | None,
        typer.Option(
            help="Detect backdoor inputs instead of adversarial ones: the positives are the "
            "held-out images stamped with this trigger (e.g. square:3@bottom-right) that "
            "the model sends to --target. For --detector strip.",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="With --trigger: the backdoor's target class, by number or name "
            "(default: none, an all-to-all backdoor: any changed prediction counts).",
            rich_help_panel=DETECTOR_PANEL,
        ),
    ] = None,
    attack_name: opt.AttackName = attack_options.DEFAULT_ATTACK,
    pixels: Annotated[
        int | None,
        typer.Option(
            "--pixels",
            "-k",
            help="Most pixels to change (default: the attack's own).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    budget: opt.QueryBudget = None,
    param: opt.AttackParams = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Attack at most N held-out images, drawn at random with --seed (default: all).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the split, of the attack and of the random subsets.")
    ] = 0,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for detection.json.", rich_help_panel=opt.OUTPUT_PANEL
        ),
    ],
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
    data_options: opt.DataOptions,
) -> None:
    """Fit a detector on clean images, attack held-out ones, report how many it catches."""
    from pixelguard.defenses.detect import create_detector
    from pixelguard.files import write_json
    from pixelguard.models.base import parse_floats
    from pixelguard.poisoning.triggers import parse_trigger
    from pixelguard.workflows.detection import evaluate_trigger_detector

    if target is not None and trigger is None:
        raise ConfigError("--target goes with --trigger (the backdoor's target class)")
    rates = parse_floats(fpr, "--fpr") or ()
    settings = {"seed": seed, **parse_key_values(detector_param or [], "--detector-param")}
    attack = attack_options.build_attack(
        attack_name, {"pixels": pixels, "budget": budget, "seed": seed}, param or []
    )
    opt.check_output_folder(out)
    dataset = data_options.load(data)
    classifier, _ = opt.load_classifier(model, model_options, dataset)
    stamp = None if trigger is None else parse_trigger(trigger, dataset.image_shape)
    backdoor_target = opt.resolve_target(target, dataset.class_names)
    chosen = create_detector(detector, classifier, **settings)
    if stamp is not None:
        evaluation = evaluate_trigger_detector(
            classifier,
            dataset,
            chosen,
            stamp,
            target=backdoor_target,
            fprs=rates,
            fit_fraction=fit_fraction,
            limit=limit,
            seed=seed,
            attack=attack if adaptive else None,
        )
    else:
        evaluation = _attack_evaluation(
            classifier, dataset, chosen, attack, rates, fit_fraction, adaptive, limit, seed, quiet
        )
    report = {
        **evaluation.to_dict(),
        "model": opt.model_info(model, classifier, model_options),
        "data": opt.data_info(data, dataset, data_options),
    }
    path = write_json(out / "detection.json", report)
    if json_output:
        typer.echo(json.dumps({**report, "files": [str(path)]}, indent=2))
        return
    _echo_detection(evaluation, dataset.source)
    typer.echo(files_line([path]))


def _attack_evaluation(
    classifier: Classifier,
    dataset: Dataset,
    detector: Detector,
    attack: Attack,
    rates: tuple[float, ...],
    fit_fraction: float,
    adaptive: bool,
    limit: int | None,
    seed: int,
    quiet: bool,
) -> DetectionEvaluation:
    """The detector against the attack, plain and adaptive, with a progress bar."""
    from pixelguard.workflows.detection import evaluate_detector

    with bars.progress_bar("attack runs", quiet=quiet, unit="run") as bar:
        return evaluate_detector(
            classifier,
            dataset,
            detector,
            attack,
            fprs=rates,
            fit_fraction=fit_fraction,
            adaptive=adaptive,
            limit=limit,
            seed=seed,
            progress=bars.images_progress(bar),
        )


def _echo_detection(evaluation: DetectionEvaluation, source: str) -> None:
    """Print the split, the AUROC and, per target false-positive rate, the measured
    rates with their confidence intervals."""
    data = evaluation.to_dict()
    split = data["split"]
    attack = data["attack"]
    if attack["name"] == "trigger":
        against = f"the trigger {attack['params']['trigger']}"
        positives = f"{data['n_attacked']:,} stamped, {data['n_adversarial']:,} sent to the target"
        kind = "triggered"
    else:
        against = attack["name"]
        positives = f"{data['n_attacked']:,} attacked, {data['n_adversarial']:,} adversarial"
        kind = "adversarial"
    typer.echo(f"{data['detector']['detector']} detector against {against} on {source}")
    typer.echo(
        f"  fitted on {split['n_fit']:,} clean images ({percent(split['fit_fraction'])}, "
        f"seed {split['seed']}); {split['n_test']:,} held out, {positives}"
    )
    auroc = data["auroc"]
    typer.echo(f"  AUROC {'-' if auroc is None else f'{auroc:.3f}'}")
    level = f"{data['intervals']['confidence']:.0%}"
    for point in data["operating_points"]:
        n_clean = point["false_positives"] + point["true_negatives"]
        n_adv = point["true_positives"] + point["false_negatives"]
        typer.echo(
            f"  at target FPR {percent(point['target_fpr'])}: "
            f"precision {percent(point['precision'])}, F1 {point['f1']:.3f}"
        )
        typer.echo(f"    FPR {_measured(point['fpr'], point['fpr_ci'], level, n_clean, 'clean')}")
        rate, interval = point["detection_rate"], point["detection_rate_ci"]
        typer.echo(f"    detection {_measured(rate, interval, level, n_adv, kind)}")
        adaptive = point["adaptive"]
        if adaptive is not None:
            rate, interval = adaptive["detection_rate"], adaptive["detection_rate_ci"]
            n_fooled = adaptive["n_fooled"]
            typer.echo(f"    adaptive detection {_measured(rate, interval, level, n_fooled, kind)}")
    typer.echo(
        f"  (detection: the share of {kind} images flagged at the threshold calibrated "
        "for the target FPR; intervals are Clopper-Pearson)"
    )


def _measured(
    rate: float | None, interval: list[float] | None, level: str, n: int, kind: str
) -> str:
    """``"4.0% (95% CI 1.1-9.9%, 100 clean images)"``; ``"- (no ... images)"`` without any."""
    if rate is None or interval is None:
        return f"- (no {kind} images)"
    low, high = interval
    return f"{percent(rate)} ({level} CI {100 * low:.1f}-{percent(high)}, {n:,} {kind} images)"
