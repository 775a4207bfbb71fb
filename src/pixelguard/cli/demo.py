"""``pixelguard demo``: the whole story offline in a few minutes, on the built-in digits."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pixelguard.cli import bars
from pixelguard.cli import options as opt
from pixelguard.cli.output import number, percent, seconds

if TYPE_CHECKING:
    from pixelguard.evaluate.attack_run import AttackRun

ARCH = "small-cnn"
SEED = 0
EPOCHS = 20
QUICK_EPOCHS = 2
QUICK_STEPS = 50


def demo(
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the reports.")] = Path(
        "pixelguard-demo"
    ),
    limit: Annotated[
        int,
        typer.Option(
            help="Use at most N of the 360 test digits, drawn at random with the demo's seed."
        ),
    ] = 100,
    pixels: Annotated[
        str, typer.Option("--pixels", "-k", help="Pixel budgets to try, comma-separated.")
    ] = "1,3,5",
    quick: Annotated[
        bool, typer.Option("--quick", hidden=True, help="Tiny settings, for tests.")
    ] = False,
    quiet: opt.Quiet = False,
) -> None:
    """Train (or reuse) a small CNN on the built-in digits and fool it with 1, 3 and 5 pixels."""
    from pixelguard.attacks.sparse_bayes import SparseBayes
    from pixelguard.data import load_digits
    from pixelguard.evaluate.attack_run import attack_dataset
    from pixelguard.report import write_run_reports, write_summary_json
    from pixelguard.workflows.demo import demo_model

    budgets = opt.parse_ints(pixels, "--pixels")
    opt.check_output_folder(out)
    train_data, digits_test = load_digits("train"), load_digits("test")
    test = digits_test.sample(limit, SEED)
    typer.echo("pixelguard demo: how few pixels does it take to fool a digits classifier?")
    demo_net = demo_model(
        train_data, digits_test, arch=ARCH, seed=SEED, epochs=QUICK_EPOCHS if quick else EPOCHS
    )
    how = f"reused {demo_net.path}" if demo_net.cached else f"trained, cached in {demo_net.path}"
    typer.echo(
        f"model   {ARCH} on {len(train_data):,} 8x8 digits ({how}); "
        f"clean accuracy {percent(demo_net.metrics['test_accuracy'])} "
        f"on the {len(digits_test)} test digits"
    )
    # The default attack, Bayesian sparse search over corner colours; one pixel is the
    # exact scan of every position at every corner (128 queries for an 8x8 digit).
    search = SparseBayes(seed=SEED, steps=QUICK_STEPS if quick else SparseBayes.steps)
    attacks = [dataclasses.replace(search, pixels=k) for k in budgets]
    typer.echo(
        f"attack  sparse-bayes (one pixel: exact corner scan), up to {search.steps:,} queries "
        f"per image, seed {SEED}, on the correctly classified of {len(test)} test digits\n"
    )
    typer.echo(f"{'pixels':>6}  {'fooled':>9}  {'success':>7}  {'median queries':>14}  {'time':>9}")
    model_info = {"spec": f"demo {ARCH}", "input_shape": list(test.image_shape), "options": {}}
    data_info = {"spec": "digits", "source": test.source, "split": "test", "n_images": len(test)}
    runs: dict[str, AttackRun] = {}
    for attack in attacks:
        k = attack.pixels
        with bars.progress_bar(f"{k} pixel(s)", quiet=quiet) as bar:
            run = attack_dataset(demo_net.model, test, attack, progress=bars.images_progress(bar))
        runs[f"k{k}"] = run
        write_run_reports(out / f"k{k}", run, test.x, model_info=model_info, data_info=data_info)
        typer.echo(
            f"{k:>6}  {f'{run.n_success}/{run.n_attacked}':>9}  {percent(run.success_rate):>7}  "
            f"{number(run.median_queries):>14}  {seconds(run.result.wall_time):>9}"
        )
    summary = write_summary_json(
        out / "summary.json", runs, model_info=model_info, data_info=data_info
    )
    typer.echo(
        f"\nwrote {summary} and, per budget, {out}/k*/results.json, adversarial.npz, examples.png"
    )
