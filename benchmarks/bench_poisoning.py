"""Backdoor poisoning and STRIP on MNIST, pixelguard and ART 1.20 side by side in one run.

The official MNIST test set (10,000 images; ``--dataset cifar10``: CIFAR-10's) is split with a seed into a training
part (``--n-train``) and a held-out part. Two parts, each on identical data for
both libraries:

- **backdoor**: at each poisoning rate, the same images (a seeded draw of those not
  of the target class) are stamped and relabelled by pixelguard
  (:func:`~pixelguard.poisoning.backdoor.poison_dataset`, trigger ``checker:3``) and
  by ART (``PoisoningAttackBackdoor`` with ``add_pattern_bd``, its 4-pixel pattern 2
  pixels from the corner). The same small CNN (same seed, epochs, optimiser) is
  trained on each poisoned set; clean accuracy and attack success rate (ASR: held-out
  images not of the target class, stamped with the same library's trigger, sent to
  the target) are measured on the held-out images, plus the clean model's ASR.
- **STRIP** on the pixelguard model poisoned at ``--strip-rate``: pixelguard's
  detector (``blend=add``, the paper's superimposition, and ``blend=average``, ART's)
  is fitted on a seeded half of the held-out clean images (a quarter as the images
  it blends with, a quarter to calibrate on) and scored on the other half and on
  their triggered copies sent to the target (AUROC; detection rate and measured FPR at
  the thresholds for 1% and 5% FPR); ART's ``STRIP`` transformer is given the same
  clean half (``mitigate``) and the same test images at ``false_acceptance_rate``
  1% and 5%: it exposes no scores, only its abstentions, so only its detection rate
  and FPR are compared.

Example:
    python benchmarks/bench_poisoning.py --out bench-out/poisoning
    python benchmarks/bench_poisoning.py --dataset cifar10 --epochs 10 --out bench-out/poisoning-cifar10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, package_versions, set_threads, write_results  # noqa: E402
from bench_pixel import SHARED_DATASETS  # noqa: E402
from pixelguard.attacks import create_attack  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.data.base import Dataset  # noqa: E402
from pixelguard.defenses.detect import StripDetector  # noqa: E402
from pixelguard.defenses.detection_metrics import detection_metrics, roc_auc  # noqa: E402
from pixelguard.defenses.detector_aware import DetectorAwareClassifier  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.models.training import train_classifier  # noqa: E402
from pixelguard.poisoning.backdoor import (  # noqa: E402
    backdoor_metrics,
    choose_poisoned,
    poison_dataset,
)
from pixelguard.poisoning.triggers import parse_trigger  # noqa: E402

logger = logging.getLogger("benchmarks.poisoning")

TRIGGER = "checker:3@bottom-right"
TARGET = 0
FPRS = (0.01, 0.05)
ADAPTIVE_IMAGES = 50
"""Triggered inputs the adaptive attacker works on (the first, in the shuffled order)."""


def split_test_set(
    data_dir: Path, dataset: str, n_train: int, seed: int
) -> tuple[Dataset, Dataset]:
    """The MNIST (or CIFAR-10) test set split with ``seed`` into training and held-out parts."""
    path = data_dir / ("mnist" if dataset == "mnist" else "cifar10-jpg.tar.gz")
    images = load_data(path, split="test")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    return images.subset(order[:n_train].sort().values), images.subset(
        order[n_train:].sort().values
    )


def train(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> TorchClassifier:
    module, _ = train_classifier(x, y, epochs=epochs, lr=1e-3, batch_size=128, seed=seed)
    return TorchClassifier(module, tuple(x.shape[1:]), batch_size=1024)


def art_trigger(x: np.ndarray) -> np.ndarray:
    """ART's ``add_pattern_bd`` on NCHW float images (its default distance and value)."""
    from art.attacks.poisoning.perturbations import add_pattern_bd

    return add_pattern_bd(x, channels_first=True)


def art_poison(train_set: Dataset, chosen: torch.Tensor) -> tuple[Dataset, float]:
    """ART's PoisoningAttackBackdoor on the chosen images; the set and the seconds taken."""
    from art.attacks.poisoning import PoisoningAttackBackdoor

    start = time.perf_counter()
    attack = PoisoningAttackBackdoor(art_trigger)
    x = train_set.x.numpy().copy()
    y = np.eye(10, dtype=np.float32)[train_set.y.numpy()]
    target = np.eye(10, dtype=np.float32)[TARGET]
    x_p, y_p = attack.poison(x[chosen.numpy()], target, broadcast=True)
    x[chosen.numpy()], y[chosen.numpy()] = x_p, y_p
    seconds = time.perf_counter() - start
    return Dataset(torch.from_numpy(x), torch.from_numpy(y.argmax(1)), None, "art"), seconds


def art_asr(model: TorchClassifier, test: Dataset) -> float:
    keep = test.y != TARGET
    stamped = torch.from_numpy(art_trigger(test.x[keep].numpy()))
    return float((model.predict(stamped).argmax(1) == TARGET).float().mean())


def backdoor_part(
    train_set: Dataset, test: Dataset, rates: list[float], epochs: int, seed: int
) -> list[dict[str, Any]]:
    trigger = parse_trigger(TRIGGER, train_set.image_shape)
    clean = train(train_set.x, train_set.y, epochs, seed)
    clean_metrics = backdoor_metrics(clean, test, trigger, target=TARGET)
    rows: list[dict[str, Any]] = [
        {
            "rate": 0.0,
            "pixelguard": {**clean_metrics.to_dict(), "art_trigger_asr": art_asr(clean, test)},
        }
    ]
    for rate in rates:
        chosen = choose_poisoned(train_set, rate=rate, target=TARGET, seed=seed)
        start = time.perf_counter()
        ours = poison_dataset(train_set, trigger, rate=rate, target=TARGET, seed=seed)
        ours_seconds = time.perf_counter() - start
        assert torch.equal(ours.mask.nonzero().flatten(), chosen)
        theirs, theirs_seconds = art_poison(train_set, chosen)
        ours_model = train(ours.dataset.x, ours.dataset.y, epochs, seed)
        theirs_model = train(theirs.x, theirs.y, epochs, seed)
        ours_metrics = backdoor_metrics(ours_model, test, trigger, target=TARGET).to_dict()
        theirs_clean = float((theirs_model.predict(test.x).argmax(1) == test.y).float().mean())
        rows.append(
            {
                "rate": rate,
                "n_poisoned": ours.n_poisoned,
                "pixelguard": {**ours_metrics, "poison_seconds": ours_seconds},
                "art": {
                    "clean_accuracy": theirs_clean,
                    "attack_success_rate": art_asr(theirs_model, test),
                    "poison_seconds": theirs_seconds,
                },
            }
        )
        logger.info("rate %g: %s", rate, rows[-1])
    return rows


def strip_part(
    train_set: Dataset, test: Dataset, rate: float, epochs: int, samples: int, seed: int
) -> dict[str, Any]:
    trigger = parse_trigger(TRIGGER, train_set.image_shape)
    poisoned = poison_dataset(train_set, trigger, rate=rate, target=TARGET, seed=seed)
    model = train(poisoned.dataset.x, poisoned.dataset.y, epochs, seed)
    half = len(test) // 2
    # A seeded shuffle: the MNIST test file is ordered (its first half is the cleaner
    # writers), so its first and second halves are not exchangeable.
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 1))
    x, y = test.x[order], test.y[order]
    fit_x, clean_x, clean_y = x[:half], x[half:], y[half:]
    stamped = trigger.apply(clean_x[clean_y != TARGET])
    hit = model.predict(stamped).argmax(1) == TARGET
    positives, positive_labels = stamped[hit], clean_y[clean_y != TARGET][hit]
    out: dict[str, Any] = {
        "rate": rate,
        "n_fit": half,
        "n_clean": int(clean_x.shape[0]),
        "n_triggered": int(positives.shape[0]),
        "samples": samples,
    }
    for blend in ("add", "average"):
        start = time.perf_counter()
        # The fit images are its overlays; calibration on other clean images.
        detector = StripDetector(model, samples=samples, blend=blend, seed=seed)
        detector.fit(fit_x[: half // 2], calibration=fit_x[half // 2 :])
        clean_scores, adv_scores = detector.score(clean_x), detector.score(positives)
        points = {}
        for fpr in FPRS:
            threshold = detector.threshold_for_fpr(fpr)
            metrics = detection_metrics(clean_scores, adv_scores, threshold)
            points[str(fpr)] = {
                "detection_rate": metrics.recall,
                "fpr": metrics.fpr,
                "adaptive_detection_rate": adaptive_detection(
                    model,
                    detector,
                    threshold,
                    positives[:ADAPTIVE_IMAGES],
                    positive_labels[:ADAPTIVE_IMAGES],
                    seed,
                ),
            }
        out[f"pixelguard_{blend}"] = {
            "auroc": roc_auc(clean_scores, adv_scores),
            "points": points,
            "seconds": time.perf_counter() - start,
        }
    out["art"] = art_strip(model, fit_x, clean_x, positives, samples)
    return out


def adaptive_detection(
    model: TorchClassifier,
    detector: StripDetector,
    threshold: float,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
) -> float:
    """The share of triggered inputs still flagged after sparse-rs (3 more pixels, 200
    queries) pushes them to the target through model plus detector."""
    combined = DetectorAwareClassifier(model, detector, threshold=threshold)
    attack = create_attack("sparse-rs", pixels=3, budget=200, seed=seed)
    result = attack.run(combined, x, y, target=TARGET)
    reached = combined.predict(result.x_adv).argmax(1) == TARGET
    return 1.0 - float(reached.float().mean())


def art_strip(
    model: TorchClassifier,
    fit_x: torch.Tensor,
    clean_x: torch.Tensor,
    positives: torch.Tensor,
    samples: int,
) -> dict[str, Any]:
    """ART's STRIP at each false-acceptance rate: its abstentions on clean and triggered images."""
    from art.estimators.classification import PyTorchClassifier
    from art.estimators.poison_mitigation.strip.strip import STRIPMixin

    np.random.seed(0)
    classifier = PyTorchClassifier(
        # ART's STRIP takes the entropy of what predict returns: it needs probabilities.
        model=torch.nn.Sequential(model.module, torch.nn.Softmax(dim=1)),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(clean_x.shape[1:]),
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )
    points = {}
    start = time.perf_counter()
    for fpr in FPRS:
        # ART's STRIP transformer cannot wrap a PyTorchClassifier (its mixin class has no
        # consistent MRO in 1.20.1); the mixin it would add is used on its own instead.
        defended = STRIPMixin(
            predict_fn=classifier.predict, num_samples=samples, false_acceptance_rate=fpr
        )
        defended._nb_classes = 10
        defended.mitigate(fit_x.numpy())
        abstained_clean = ~defended.predict(clean_x.numpy()).any(axis=1)
        abstained_adv = ~defended.predict(positives.numpy()).any(axis=1)
        points[str(fpr)] = {
            "detection_rate": float(abstained_adv.mean()),
            "fpr": float(abstained_clean.mean()),
        }
    return {"auroc": None, "points": points, "seconds": time.perf_counter() - start}


def table(results: dict[str, Any]) -> str:
    lines = [
        "### Backdoor (BadNets, all-to-one to class 0)",
        "",
        "| poisoning rate | images | pixelguard clean acc | pixelguard ASR | ART clean acc | ART ASR |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["backdoor"]:
        ours = row["pixelguard"]
        theirs = row.get("art")
        art_cells = (
            f"{100 * theirs['clean_accuracy']:.1f}% | {100 * theirs['attack_success_rate']:.1f}%"
            if theirs
            else f"(clean model) | {100 * ours['art_trigger_asr']:.1f}%"
        )
        lines.append(
            f"| {100 * row['rate']:g}% | {row.get('n_poisoned', 0):,} | "
            f"{100 * ours['clean_accuracy']:.1f}% | {100 * ours['attack_success_rate']:.1f}% | "
            f"{art_cells} |"
        )
    strip = results["strip"]
    lines += [
        "",
        f"### STRIP ({strip['samples']} blends, model poisoned at {100 * strip['rate']:g}%; "
        f"{strip['n_clean']:,} clean and {strip['n_triggered']:,} triggered test images)",
        "",
        "| detector | AUROC | detection @1% FPR (measured FPR) | detection @5% FPR (measured FPR) "
        "| adaptive detection @1% / @5% | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in (
        ("pixelguard_add", "pixelguard, blend=add"),
        ("pixelguard_average", "pixelguard, blend=average"),
        ("art", "ART STRIP"),
    ):
        entry = strip[key]
        cells = [
            f"{100 * p['detection_rate']:.1f}% ({100 * p['fpr']:.1f}%)"
            for p in entry["points"].values()
        ]
        auroc = "-" if entry["auroc"] is None else f"{entry['auroc']:.3f}"
        adaptive = " / ".join(
            f"{100 * p['adaptive_detection_rate']:.1f}%"
            for p in entry["points"].values()
            if "adaptive_detection_rate" in p
        )
        lines.append(
            f"| {name} | {auroc} | {' | '.join(cells)} | {adaptive or '-'} | {entry['seconds']:.1f} |"
        )
    return "\n".join(lines)


def cached(path: Path, compute: Any) -> Any:
    """The part saved at ``path`` by an earlier run with the same command, else computed and saved."""
    key = " ".join(sys.argv[1:])
    if path.exists():
        saved = json.loads(path.read_text())
        if saved["command"] == key:
            logger.info("reusing %s", path)
            return saved["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": key, "result": result}))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--n-train", type=int, default=7000)
    parser.add_argument("--rates", default="0.01,0.05,0.1")
    parser.add_argument("--strip-rate", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench-out/poisoning"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    set_threads(args.threads)
    train_set, test = split_test_set(args.data_dir, args.dataset, args.n_train, args.seed)
    rates = [float(r) for r in args.rates.split(",")]
    results = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "packages": package_versions(["torch", "adversarial-robustness-toolbox"]),
        "command": " ".join(sys.argv),
        "dataset": args.dataset,
        "n_train": len(train_set),
        "n_test": len(test),
        "trigger": {"pixelguard": TRIGGER, "art": "add_pattern_bd (distance 2, value 1)"},
        "backdoor": cached(
            args.out / "backdoor.json",
            lambda: backdoor_part(train_set, test, rates, args.epochs, args.seed),
        ),
        "strip": strip_part(train_set, test, args.strip_rate, args.epochs, args.samples, args.seed),
    }
    write_results(args.out, results, table(results))


if __name__ == "__main__":
    main()
