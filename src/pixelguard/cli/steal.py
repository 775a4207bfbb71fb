"""``pixelguard steal``: extract a surrogate by queries and attack the victim through it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import files_line, percent, seconds
from pixelguard.errors import ConfigError, DataError

if TYPE_CHECKING:
    from pixelguard.data import Dataset
    from pixelguard.workflows.stealing import StealReport

STEAL_PANEL = "Extraction options"
TRANSFER_PANEL = "Transfer options"

QueryData = Annotated[
    str,
    typer.Option(
        "--query-data",
        help="The attacker's images to query the victim on (their labels serve only the "
        "held-out accuracy): 'digits', a "
        ".npy/.npz file, a folder of class folders, MNIST IDX or CIFAR-10 batches.",
        rich_help_panel=opt.DATA_PANEL,
    ),
]


@opt.with_options(
    model_options=opt.ModelOptions, data_options=opt.DataOptions, defaults={"split": "all"}
)
def steal_command(
    *,
    model: opt.ModelSpec,
    query_data: QueryData,
    budget: Annotated[
        int,
        typer.Option(
            help="Most victim queries the extraction may spend (a hard limit).",
            rich_help_panel=STEAL_PANEL,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The surrogate checkpoint to write (.pt); steal.json and report.html go "
            "beside it.",
            rich_help_panel=opt.OUTPUT_PANEL,
        ),
    ],
    arch: Annotated[
        str,
        typer.Option(
            help=f"Surrogate {opt.ARCH_HELP[0].lower()}{opt.ARCH_HELP[1:]}",
            rich_help_panel=STEAL_PANEL,
        ),
    ] = "small-cnn",
    method: Annotated[
        str,
        typer.Option(
            help="knockoff (query natural images) or jacobian (grow a seed set along the "
            "surrogate's gradients).",
            rich_help_panel=STEAL_PANEL,
        ),
    ] = "knockoff",
    rounds: Annotated[
        str | None,
        typer.Option(
            help="Query counts after which the surrogate is trained and measured, e.g. "
            "1000,5000 (the budget is always the last; default: budget/16 doubling).",
            rich_help_panel=STEAL_PANEL,
        ),
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Training passes per round.", rich_help_panel=STEAL_PANEL)
    ] = 10,
    lr: Annotated[
        float, typer.Option(help="Adam learning rate.", rich_help_panel=STEAL_PANEL)
    ] = 1e-3,
    sampling: Annotated[
        str,
        typer.Option(
            help="knockoff: random (the paper's baseline) or uncertain (half of each later "
            "round from the images the surrogate is least sure of).",
            rich_help_panel=STEAL_PANEL,
        ),
    ] = "random",
    held_out: Annotated[
        str | None,
        typer.Option(
            help="Images with true labels to measure agreement and accuracy on (default: "
            "a held-out share of --query-data, never queried for extraction).",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ] = None,
    held_out_fraction: Annotated[
        float,
        typer.Option(
            help="Share of --query-data held out when --held-out is not given.",
            rich_help_panel=opt.DATA_PANEL,
        ),
    ] = 0.2,
    transfer: Annotated[
        bool,
        typer.Option(
            "--transfer/--no-transfer",
            help="Also run pgd and sparse-pgd on the surrogate, submit them to the victim, and "
            "warm-start sparse-rs on the victim from them.",
            rich_help_panel=TRANSFER_PANEL,
        ),
    ] = True,
    transfer_images: Annotated[
        int,
        typer.Option(
            help="Held-out images the transfer attacks run on.", rich_help_panel=TRANSFER_PANEL
        ),
    ] = 100,
    eps: Annotated[
        float, typer.Option(help="pgd's Linf radius.", rich_help_panel=TRANSFER_PANEL)
    ] = 0.2,
    pixels: Annotated[
        int,
        typer.Option(
            "--pixels",
            "-k",
            help="Pixels sparse-pgd and sparse-rs may change.",
            rich_help_panel=TRANSFER_PANEL,
        ),
    ] = 10,
    sparse_rs_budget: Annotated[
        int,
        typer.Option(
            help="Victim queries per image for sparse-rs (cold and warm alike).",
            rich_help_panel=TRANSFER_PANEL,
        ),
    ] = 1000,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted extraction from its checkpoint beside --out, "
            "without asking the victim again about what it already answered.",
            rich_help_panel=opt.RUN_PANEL,
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of sampling, training and the split.")] = 0,
    json_output: opt.JsonOutput = False,
    quiet: opt.Quiet = False,
    model_options: opt.ModelOptions,
    data_options: opt.DataOptions,
) -> None:
    """Steal a model by queries within a budget; report agreement and transfer attacks."""
    from pixelguard.attacks.base import create_attack
    from pixelguard.leakage.extraction import create_extraction
    from pixelguard.workflows.stealing import checkpoint_path, steal, write_steal

    if budget < 1:
        raise ConfigError(f"--budget must be at least 1 query, got {budget}")
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a folder; --out names the surrogate file (e.g. {out}/surrogate.pt)"
        )
    if transfer_images < 1:
        raise ConfigError(f"--transfer-images must be at least 1, got {transfer_images}")
    settings = {"budget": budget, "arch": arch, "epochs": epochs, "lr": lr, "seed": seed}
    if rounds is not None:
        settings["rounds"] = tuple(opt.parse_ints(rounds, "--rounds"))
    if method == "knockoff":
        settings["sampling"] = sampling
    elif sampling != "random":
        raise ConfigError(f"--sampling applies to the knockoff method, not {method}")
    extraction = create_extraction(method, **settings)
    attacks = []
    warm = None
    if transfer:
        attacks = [
            create_attack("pgd", eps=eps, steps=40, seed=seed),
            create_attack("sparse-pgd", pixels=pixels, seed=seed),
        ]
        warm = create_attack("sparse-rs", pixels=pixels, budget=sparse_rs_budget, seed=seed)
    checkpoint = checkpoint_path(out)
    if checkpoint.exists() and not resume:
        raise ConfigError(
            f"{checkpoint} holds the answers of an earlier extraction; rerun with --resume "
            "to continue it, or delete it"
        )
    dataset = _load_query_data(data_options, query_data)
    holdout_data = None if held_out is None else data_options.load(held_out, split="test")
    victim, _ = opt.load_classifier(model, model_options, dataset)
    with (
        bars.resume_hint(checkpoint, "queries"),
        bars.progress_bar("queries", quiet=quiet, unit="query") as bar,
    ):
        report = steal(
            victim,
            dataset,
            extraction,
            held_out=holdout_data,
            holdout_fraction=held_out_fraction,
            attacks=attacks,
            warm_start=warm,  # type: ignore[arg-type]
            transfer_images=transfer_images,
            checkpoint=checkpoint,
            progress=bars.images_progress(bar),
            seed=seed,
        )
    extra = {
        "model": opt.model_info(model, victim, model_options),
        "data": opt.data_info(query_data, dataset, data_options),
    }
    paths = write_steal(report, out, class_names=dataset.class_names, extra=extra)
    checkpoint.unlink(missing_ok=True)
    if json_output:
        typer.echo(
            json.dumps({**report.to_dict(), **extra, "files": [str(p) for p in paths]}, indent=2)
        )
        return
    _echo_steal(report)
    typer.echo(files_line(paths))


def _load_query_data(options: opt.DataOptions, spec: str) -> Dataset:
    """The query images; with ``--split all`` on data that has only a test split (the
    official MNIST test files alone), that split."""
    try:
        return options.load(spec)
    except DataError:
        if options.split != "all":
            raise
        dataset = options.load(spec, split="test")
        typer.echo(f"query data: {spec} has no train split; using its test split")
        return dataset


def _echo_steal(report: StealReport) -> None:
    """The curve, then the transfer figures, each line saying where it came from."""
    ex = report.extraction
    replayed = f", {ex.replayed:,} from the checkpoint" if ex.replayed else ""
    typer.echo(
        f"stole a {ex.arch} surrogate by {ex.method} in {seconds(ex.seconds)}: "
        f"{ex.queries:,} victim queries{replayed}"
    )
    typer.echo(f"  held out: {report.holdout.x.shape[0]:,} images of {report.holdout_source}")
    for point in ex.curve:
        agreement = "-" if point.agreement is None else percent(point.agreement)
        accuracy = "-" if point.accuracy is None else percent(point.accuracy)
        typer.echo(f"  {point.queries:>9,} queries: agreement {agreement}, accuracy {accuracy}")
    for t in report.transfers:
        rate = t.transfer_rate
        typer.echo(
            f"  transfer {t.attack} (surrogate -> victim): "
            f"{'-' if rate is None else percent(rate)} of {int(t.victim_correct.sum()):,} images"
        )
    if report.warm_start is not None:
        w = report.warm_start.to_dict()
        saved = w["queries_saved_fraction"]
        typer.echo(
            f"  sparse-rs on the victim: cold {w['cold_queries_total']:,} queries "
            f"({percent(w['cold_success_rate'] or 0)} fooled), warm from the surrogate "
            f"{w['warm_queries_total']:,} ({percent(w['warm_success_rate'] or 0)} fooled)"
            + ("" if saved is None else f", {percent(saved)} fewer")
        )
