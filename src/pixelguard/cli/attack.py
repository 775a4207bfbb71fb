"""``pixelguard attack``: attack a model on a dataset and write the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pixelguard.cli import attack_options, bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import echo_summary


@opt.with_options(model_options=opt.ModelOptions, data_options=opt.DataOptions)
def attack(
    *,
    model: opt.ModelSpec,
    data: opt.DataSpec,
    attack_name: opt.AttackName = attack_options.DEFAULT_ATTACK,
    pixels: Annotated[
        str | None,
        typer.Option(
            "--pixels",
            "-k",
            help="Most pixels to change (default: 1), or 'auto': find the fewest pixels per "
            "image (the min-pixels attack; --budget is then the total per image).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Targeted attack towards this class (number or name).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    budget: opt.QueryBudget = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the attack.", rich_help_panel=opt.ATTACK_PANEL)
    ] = 0,
    step: Annotated[
        str | None,
        typer.Option(
            help="Step size of a gradient attack (gradient-descent: eta; pgd, sparse-pgd: "
            "step_size); fractions such as 1/255 are accepted.",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    iterations: Annotated[
        int | None,
        typer.Option(
            help="Iterations of the attack (steps; pixel-de: generations).",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    eps: Annotated[
        str | None,
        typer.Option(
            help="Perturbation budget of fgsm and pgd, e.g. 8/255 or 0.03.",
            rich_help_panel=opt.ATTACK_PANEL,
        ),
    ] = None,
    population: Annotated[
        int | None,
        typer.Option(help="Candidates per image (pixel-de).", rich_help_panel=opt.ATTACK_PANEL),
    ] = None,
    generations: Annotated[
        int | None,
        typer.Option(help="Evolution generations (pixel-de).", rich_help_panel=opt.ATTACK_PANEL),
    ] = None,
    param: opt.AttackParams = None,
    chunk_size: Annotated[
        int,
        typer.Option(
            help="Images per attack call and per checkpoint.", rich_help_panel=opt.ATTACK_PANEL
        ),
    ] = 100,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the interrupted run in --out after its last finished chunk.",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = False,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for results.json, adversarial.npz, examples.png and the checkpoint.",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    limit: opt.Limit = None,
    defense: opt.DefenseSpec = None,
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
    data_options: opt.DataOptions,
) -> None:
    """Attack a model's correctly classified images and report how many were fooled.

    Without --attack, sparse random search runs (the exact corner scan at one pixel);
    --pixels auto finds the fewest pixels per image.
    """
    from pixelguard.evaluate.attack_run import attack_dataset
    from pixelguard.report import write_run_reports

    opt.check_output_folder(out)
    attack_name, pixel_budget = attack_options.resolve_pixels(attack_name, pixels)
    attack_config = attack_options.build_attack(
        attack_name,
        {
            **attack_options.named_attack_options(
                attack_name, step=step, iterations=iterations, eps=eps
            ),
            "pixels": pixel_budget,
            "budget": budget,
            "seed": seed,
            "population": population,
            "generations": generations,
        },
        param or [],
    )
    dataset = data_options.load(data).sample(limit, seed)
    classifier, defense_info = opt.load_classifier(model, model_options, dataset, defense)
    _check_class_names(data_options.class_names, dataset.class_names, classifier.num_classes)
    target_class = opt.resolve_target(target, dataset.class_names, classifier.num_classes)
    search = attack_options.single_pixel_search_text(attack_config, classifier.input_shape)
    checkpoint = out / opt.CHECKPOINT_FOLDER
    with (
        bars.resume_hint(checkpoint, "chunks"),
        bars.progress_bar(attack_config.name, quiet=quiet) as bar,
    ):
        run = attack_dataset(
            classifier,
            dataset,
            attack_config,
            target=target_class,
            chunk_size=chunk_size,
            checkpoint_dir=checkpoint,
            resume=resume,
            progress=bars.images_progress(bar),
        )
    reports = write_run_reports(
        out,
        run,
        dataset.x,
        model_info=opt.model_info(model, classifier, model_options, defense_info),
        data_info={**opt.data_info(data, dataset, data_options), "limit": limit, "seed": seed},
    )
    if json_output:
        summary = {**run.summary(), "files": [str(p) for p in reports.paths()]}
        if search is not None:
            summary["single_pixel_search"] = search
        typer.echo(json.dumps(summary, indent=2))
    else:
        echo_summary(run, dataset.source, reports.paths())
        if search is not None:
            typer.echo(search)


def _check_class_names(option: str | None, names: list[str] | None, num_classes: int) -> None:
    """With ``--class-names``, one name per class of the model.

    Raises:
        ConfigError: a number of names other than the model's number of classes.
    """
    if option is None or names is None:
        return
    from pixelguard.data.class_names import check_class_count

    check_class_count(names, num_classes, what=f"--class-names {option}")
