"""Defenses on MNIST, each re-evaluated adaptively: preprocessing, hardening, detection, certification.

The MNIST model of ``bench_evaluate.py`` (a small CNN trained with ``pixelguard train``
on MNIST test images 0-7,999) is evaluated on images from 8,000 on:

- **plain**: the full pixel suite (sparse-pgd, then sparse-rs, at every k);
- **each preprocessing defense**, *non-adaptive* (the plain model's worst-case
  adversarial images fed to the defended model, the evaluation a defense paper
  without an adaptive attack would report) and *adaptive* (the whole suite run
  against the defended model: sparse-pgd through straight-through gradients (BPDA),
  with expectation over the randomness for random defenses, and black-box sparse-rs
  on the defended model's own outputs);
- **hardened**: the model after ``pixels:K`` adversarial training (sparse-pgd
  examples), then the same suite; plus the median fewest pixels (``min-pixels``) of
  plain and hardened models;
- **detectors**: AUROC against sparse-rs adversarial images, and the adaptive attack
  on model plus detector;
- **randomized ablation**: median certified radius of the smoothed classifier.

Every figure is measured in this run and written to ``results.json`` and
``results.md``. Parts can run in separate processes (one per core) and be merged:

Example:
    python benchmarks/bench_defenses.py --quick
    python benchmarks/bench_defenses.py --n-images 1000
    python benchmarks/bench_defenses.py --parts plain,preprocessing --out bench-out/def-a &
    python benchmarks/bench_defenses.py --parts hardened,detectors,certify --out bench-out/def-b
    python benchmarks/bench_defenses.py --merge bench-out/def-a bench-out/def-b --out bench-out/def
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, load_average, set_threads, write_results  # noqa: E402
from bench_evaluate import prepare_data, train_model  # noqa: E402
from bench_pixel import SHARED_DATASETS  # noqa: E402
from pixelguard.attacks import create_attack  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.data.base import Dataset  # noqa: E402
from pixelguard.defenses.certify import RandomizedAblation  # noqa: E402
from pixelguard.defenses.detect import create_detector  # noqa: E402
from pixelguard.defenses.harden import harden  # noqa: E402
from pixelguard.defenses.spec import parse_defense  # noqa: E402
from pixelguard.evaluate.runner import Evaluation, evaluate  # noqa: E402
from pixelguard.evaluate.suite import build_suite  # noqa: E402
from pixelguard.models.base import Classifier  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.models.zoo import load_checkpoint, save_checkpoint  # noqa: E402
from pixelguard.workflows.certification import certify_dataset, train_ablation_base  # noqa: E402
from pixelguard.workflows.detection import evaluate_detector  # noqa: E402

logger = logging.getLogger("benchmarks.defenses")

DEFENSES = ("median:3", "outlier-removal", "bit-depth:3", "jpeg:75")
DETECTORS = ("feature-squeezing", "isolated-pixel")
ABLATION_KEEP = 45
"""Pixels kept per ablation: Levine and Feizi's MNIST setting."""


def plain_model(out: Path, train_path: Path, epochs: int) -> Path:
    """``bench_evaluate.py``'s MNIST CNN (``pixelguard train``), trained once; its checkpoint."""
    path = out / f"mnist-small-cnn-e{epochs}.pt"
    if not path.exists():
        train_model(train_path, epochs, path)
    return path


def hardened_model(plain_path: Path, train: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    """The plain model adversarially trained as ``args`` say, trained once and cached.

    Returns ``module`` (eval mode) and the training's ``params``, ``history`` and
    ``train_seconds``; the checkpoint lies beside the plain one, named by the settings.
    """
    beta = "" if args.harden_trades_beta is None else f"-trades{args.harden_trades_beta:g}"
    name = f"{args.harden_against.replace(':', '')}-e{args.harden_epochs}-f{args.harden_fraction:g}"
    path = plain_path.with_name(f"{plain_path.stem}-hardened-{name}{beta}.pt")
    if path.exists():
        module, meta = load_checkpoint(path)
        return {"module": module.eval(), **meta["metrics"]}
    module, meta = load_checkpoint(plain_path)
    hardening = harden(
        module,
        train,
        args.harden_against,
        epochs=args.harden_epochs,
        adversarial_fraction=args.harden_fraction,
        trades_beta=args.harden_trades_beta,
        seed=0,
    )
    metrics = {
        "params": hardening.params,
        "history": hardening.history,
        "train_seconds": round(hardening.seconds, 1),
    }
    save_checkpoint(
        path,
        hardening.module,
        arch=meta["arch"],
        arch_params=meta["arch_params"],
        input_shape=meta["input_shape"],
        class_names=meta["class_names"],
        spec=meta["spec"],
        metrics=metrics,
    )
    return {"module": hardening.module.eval(), **metrics}


def budget_strength(model: Classifier, data: Dataset, pixels: int, budgets: Sequence[int]) -> dict:
    """Robust accuracy under sparse-rs alone at each query budget, on the same images.

    Shows whether a robust accuracy is a property of the model or of a small budget:
    it should level off as the budget grows.
    """
    clean = torch.cat([model.predict(x).argmax(dim=1).cpu() for x in data.x.split(256)]) == data.y
    robust = {}
    for budget in budgets:
        attack = create_attack("sparse-rs", pixels=pixels, budget=budget, seed=0)
        result = attack.run(model, data.x[clean], data.y[clean])
        robust[budget] = round(float((~result.success).sum()) / len(data), 4)
    return {"pixels": pixels, "n_images": len(data), "robust_accuracy": robust}


def robust_summary(evaluation: Evaluation) -> dict[str, Any]:
    """Clean and robust accuracy per budget, and the run's wall time."""
    return {
        "clean_accuracy": round(evaluation.clean_accuracy, 4),
        "robust_accuracy": {k: round(v, 4) for k, v in evaluation.robust_accuracy().items()},
        "wall_seconds": round(evaluation.wall_time, 1),
        "flags": [f.code for f in evaluation.flags],
    }


def transfer_summary(defended: Classifier, plain: Evaluation) -> dict[str, Any]:
    """The non-adaptive evaluation: the plain model's worst-case images, defended.

    An image is robust at a budget when the defended model classifies both the clean
    image and the plain model's worst-case image (the clean one where the plain
    model was not broken) correctly.
    """
    y = plain.y

    def correct(x: torch.Tensor) -> torch.Tensor:
        preds = [defended.predict(chunk).argmax(dim=1) for chunk in x.split(256)]
        return torch.cat(preds).cpu() == y

    clean = correct(plain.x)
    robust = {
        b.label: round(float((clean & correct(b.x_adv)).float().mean()), 4) for b in plain.budgets
    }
    return {"clean_accuracy": round(float(clean.float().mean()), 4), "robust_accuracy": robust}


def median_min_pixels(model: Classifier, data: Dataset, budget: int, max_pixels: int) -> dict:
    """Median fewest pixels over the images; None when fewer than half were fooled.

    An image ``min-pixels`` could not fool (within ``max_pixels`` and the budget)
    counts as needing more than any fooled one, so the median is that of the fooled
    images' counts and the unfooled ones whenever at least half were fooled.
    """
    attack = create_attack("min-pixels", budget=budget, max_pixels=max_pixels, seed=0)
    result = attack.run(model, data.x, data.y)
    above = max_pixels + 1
    pixels = torch.where(result.success, result.l0_pixels, torch.full_like(result.l0_pixels, above))
    median = float(statistics.median(pixels.tolist()))
    return {
        "median_pixels": None if median >= above else median,
        "max_pixels": max_pixels,
        "budget": budget,
        "fooled": int(result.success.sum()),
        "n_images": len(data),
        "seconds": round(result.wall_time, 1),
    }


def _median_text(entry: dict[str, Any]) -> str:
    if entry["median_pixels"] is None:
        return f"n/a, fewer than half fooled ({entry['fooled']}/{entry['n_images']})"
    return f"{entry['median_pixels']:g} ({entry['fooled']}/{entry['n_images']} fooled)"


def render_markdown(results: dict[str, Any]) -> str:
    """The results tables of BENCHMARKS.md."""
    budgets = list(results["plain"]["robust_accuracy"])
    head = "| model | evaluation | clean | " + " | ".join(budgets) + " |"
    lines = [head, "|" + "---|" * (3 + len(budgets))]

    def row(name: str, how: str, s: dict[str, Any]) -> None:
        accs = " | ".join(f"{100 * s['robust_accuracy'][b]:.1f}%" for b in budgets)
        lines.append(f"| {name} | {how} | {100 * s['clean_accuracy']:.1f}% | {accs} |")

    row("plain", "full pixel suite", results["plain"])
    for name, d in results.get("preprocessing", {}).items():
        row(name, "non-adaptive (plain model's adversarials)", d["non_adaptive"])
        row(name, "adaptive (BPDA/EOT + black-box)", d["adaptive"])
    if "hardened" in results:
        row(f"hardened ({results['hardened']['against']})", "full pixel suite", results["hardened"])
    lines.append("")
    if "min_pixels" in results:
        mp = results["min_pixels"]
        lines.append(
            f"Median fewest pixels (min-pixels, budget {mp['plain']['budget']:,} queries): "
            f"plain {_median_text(mp['plain'])}, hardened {_median_text(mp['hardened'])}"
        )
        lines.append("")
    if "strength" in results:
        strength = results["strength"]
        first = next(iter(strength.values()))
        budgets_run = list(first["robust_accuracy"])
        lines += [
            f"Sparse-rs alone at k = {first['pixels']} on the first {first['n_images']} images, "
            "by query budget (does robust accuracy level off?):",
            "",
            "| model | " + " | ".join(f"{int(b):,} queries" for b in budgets_run) + " |",
            "|---|" + "---|" * len(budgets_run),
        ]
        for name, entry in strength.items():
            accs = " | ".join(f"{100 * entry['robust_accuracy'][b]:.1f}%" for b in budgets_run)
            lines.append(f"| {name} | {accs} |")
        lines.append("")
    if results.get("detectors"):
        lines += ["| detector | AUROC | detection at 1% FPR | at 5% FPR | adaptive evasion |"]
        lines += ["|---|---|---|---|---|"]
        for name, d in results["detectors"].items():
            points = {p["target_fpr"]: p for p in d["operating_points"]}
            rate = [
                f"{100 * points[f]['detection_rate']:.1f}%" if f in points else "-"
                for f in (0.01, 0.05)
            ]
            evasion = [
                f"{100 * p['adaptive']['evasion_rate']:.1f}% @{p['target_fpr']:g}"
                for p in d["operating_points"]
                if p.get("adaptive")
            ]
            auroc = "-" if d["auroc"] is None else f"{d['auroc']:.3f}"
            lines.append(f"| {name} | {auroc} | {rate[0]} | {rate[1]} | {', '.join(evasion)} |")
        lines.append("")
    if "certification" in results:
        c = results["certification"]
        lines.append(
            f"Randomized ablation (keep {c['keep']}, {c['samples']:,} samples, alpha "
            f"{c['alpha']}, base trained {c['base_metrics']['epochs']} epochs): clean accuracy "
            f"{100 * c['clean_accuracy']:.1f}%, abstained {c['abstained']}/{c['n_images']}; median "
            f"certified radius {c['median_radius_all']:g} pixels over all images (a wrong or "
            f"abstained prediction counts as no certificate) and {c['median_radius']:g} over "
            "the images certified correct"
        )
    return "\n".join(lines) + "\n"


def merge_results(folders: Sequence[Path]) -> dict[str, Any]:
    """The results of runs of separate parts, as one: later folders add to earlier ones."""
    merged: dict[str, Any] = {"commands": [], "preprocessing": {}}
    for folder in folders:
        path = folder / "results.json"
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
        part = json.loads(path.read_text())
        merged["commands"].append(part.pop("command"))
        merged["preprocessing"].update(part.pop("preprocessing", {}))
        merged.update(part)
    return merged


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-images", type=int, default=1000)
    parser.add_argument("--pixels", default="1,3,10")
    parser.add_argument("--budget", type=int, default=500, help="queries per image and attack")
    parser.add_argument("--epochs", type=int, default=10, help="plain model's epochs")
    parser.add_argument("--harden-against", default="pixels:3")
    parser.add_argument("--harden-epochs", type=int, default=5)
    parser.add_argument("--harden-fraction", type=float, default=0.5, help="adversarial share")
    parser.add_argument("--harden-trades-beta", type=float, default=None)
    parser.add_argument("--min-pixels-images", type=int, default=100)
    parser.add_argument("--min-pixels-budget", type=int, default=10_000)
    parser.add_argument("--strength-images", type=int, default=200)
    parser.add_argument("--strength-budgets", default="300,3000,10000", help="sparse-rs budgets")
    parser.add_argument("--certify-samples", type=int, default=1000)
    parser.add_argument("--ablation-epochs", type=int, default=10)
    parser.add_argument("--parts", default="plain,preprocessing,hardened,detectors,certify")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--out", type=Path, default=Path("bench-out/defenses"))
    parser.add_argument(
        "--model-dir", type=Path, default=Path("bench-out/evaluate"), help="bench_evaluate's --out"
    )
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="combine these runs' results into --out; run nothing"
    )
    parser.add_argument("--quick", action="store_true", help="40 images, small budgets")
    args = parser.parse_args(argv)
    if args.merge:
        merged = merge_results(args.merge)
        write_results(args.out, merged, render_markdown(merged))
        return merged
    if args.quick:
        args.n_images, args.budget, args.harden_epochs = 40, 100, 1
        args.min_pixels_images, args.certify_samples, args.ablation_epochs = 20, 100, 1
        args.min_pixels_budget, args.strength_budgets = 2000, "100,1000"
    parts = set(args.parts.split(","))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    train_path, eval_path = prepare_data(args.data_dir, args.model_dir / "data")
    train = load_data(str(train_path), split="all")
    test = load_data(str(eval_path), split="all").subset(slice(0, args.n_images))
    plain_path = plain_model(args.model_dir, train_path, args.epochs)
    plain = TorchClassifier(
        load_checkpoint(plain_path)[0].eval(), train.image_shape, output="logits"
    )
    pixels = [int(k) for k in args.pixels.split(",")]
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_defenses.py", *(argv or sys.argv[1:])]),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
        "n_images": len(test),
        "budget": args.budget,
    }
    suite = build_suite("pixel", pixels=pixels, budget=args.budget, gradients=True, seed=0)

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=1))

    if parts & {"plain", "preprocessing"}:
        logger.info("plain model: pixel suite on %d images", len(test))
        plain_eval = evaluate(plain, test, suite)
        results["plain"] = robust_summary(plain_eval)
        save()
    if "preprocessing" in parts:
        results["preprocessing"] = {}
        for spec in DEFENSES:
            wrap, description = parse_defense(spec)
            defended = wrap(plain)
            logger.info("%s: adaptive pixel suite", spec)
            adaptive = evaluate(defended, test, suite, defense=description)
            results["preprocessing"][spec] = {
                "defense": description,
                "non_adaptive": transfer_summary(defended, plain_eval),
                "adaptive": robust_summary(adaptive),
            }
            save()
    if parts & {"hardened", "strength"}:
        hardened = hardened_model(plain_path, train, args)
        hardened_classifier = TorchClassifier(
            hardened["module"], train.image_shape, output="logits"
        )
    if "hardened" in parts:
        results["hardened"] = {
            "against": args.harden_against,
            "epochs": args.harden_epochs,
            "adversarial_fraction": args.harden_fraction,
            "trades_beta": args.harden_trades_beta,
            "train_seconds": hardened["train_seconds"],
            **robust_summary(evaluate(hardened_classifier, test, suite)),
        }
        save()
        subset = test.subset(slice(0, args.min_pixels_images))
        results["min_pixels"] = {
            name: median_min_pixels(model, subset, args.min_pixels_budget, max_pixels=64)
            for name, model in (("plain", plain), ("hardened", hardened_classifier))
        }
        save()
    if "strength" in parts:
        subset = test.subset(slice(0, args.strength_images))
        budgets = [int(b) for b in args.strength_budgets.split(",")]
        median_filtered = parse_defense("median:3")[0](plain)
        results["strength"] = {
            name: budget_strength(model, subset, max(pixels), budgets)
            for name, model in (
                ("plain", plain),
                ("median:3", median_filtered),
                ("hardened", hardened_classifier),
            )
        }
        save()
    if "detectors" in parts:
        results["detectors"] = {}
        attack = create_attack("sparse-rs", pixels=10, budget=args.budget, seed=0)
        for name in DETECTORS:
            logger.info("detector %s", name)
            detection = evaluate_detector(plain, test, create_detector(name, plain), attack)
            results["detectors"][name] = detection.to_dict()
            save()
    if "certify" in parts:
        logger.info("randomized ablation: training the base classifier (keep %d)", ABLATION_KEEP)
        base = train_ablation_base(train, ABLATION_KEEP, epochs=args.ablation_epochs, seed=0)
        certifier = RandomizedAblation(
            base.module, train.image_shape, ABLATION_KEEP, samples=args.certify_samples
        )
        certification = certify_dataset(certifier, test)
        summary = certification.to_dict()
        radius = torch.where(certification.certified_correct, certification.radius, -1)
        results["certification"] = {
            "keep": ABLATION_KEEP,
            "samples": args.certify_samples,
            "alpha": certifier.alpha,
            "base_metrics": base.metrics,
            **{k: summary[k] for k in ("n_images", "clean_accuracy", "abstained")},
            "median_radius": summary["median_radius"],
            "median_radius_all": float(statistics.median(radius.tolist())),
            "certified_accuracy": summary["certified_accuracy"],
            "wall_seconds": summary["wall_time"],
        }
        save()
    results["load_average_end"] = load_average()
    save()
    if "plain" in results:
        write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
