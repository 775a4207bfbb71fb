"""Training-set screening side by side: pixelguard vs ART 1.20, same model, same data.

One process. The official MNIST test set (10k, gz IDX) is split seeded into 5,000
training and 5,000 test images; the training half is poisoned all-to-one with
``pixelguard.poisoning.poison_dataset`` (a 3x3 white square at the bottom-right, target
class 0) at each rate; one small CNN is trained on it. Then, on that model and data:

- pixelguard ``SpectralSignatures()`` and ``ActivationClustering()`` (defaults), on
  the penultimate-layer features, and ``ActivationClustering(min_silhouette=None,
  removal_factor=1)`` (the paper's rule: the small cluster under 35%, exactly);
- ART ``SpectralSignatureDefense`` (``eps_multiplier=1.5``, ``expected_pp_poison`` =
  the true poisoning rate) and ``ActivationDefence`` (``nb_clusters=2``,
  ``nb_dims=10``, ``reduce="PCA"``; ``cluster_analysis`` ART's default ``"smaller"``
  and the paper's ``"relative-size"``), each with a ``PyTorchClassifier`` wrapping the
  same module twice: as is (ART then reads its last layer, the logits) and without
  the final ``nn.Linear`` (ART then reads the same penultimate features as pixelguard).

Precision, recall and F1 of the flags against the true mask for every detector; then a
fresh small CNN is retrained (same seed and epochs) on what each selected detector
keeps, and its clean accuracy and attack success rate (ASR: triggered test images not
of the target class classified as the target) are measured on the clean test half.

Example:
    python benchmarks/bench_screening.py                  # 5% poisoning
    python benchmarks/bench_screening.py --rates 0.01,0.05,0.1 --retrain best
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import begin_run, describe_machine, load_average, package_versions, write_results  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.data.base import Dataset  # noqa: E402
from pixelguard.poisoning.activation_clustering import ActivationClustering  # noqa: E402
from pixelguard.poisoning.backdoor import PoisonedData, backdoor_metrics, poison_dataset  # noqa: E402
from pixelguard.poisoning.features import penultimate_features  # noqa: E402
from pixelguard.poisoning.screening import screening_metrics  # noqa: E402
from pixelguard.poisoning.spectral import SpectralSignatures  # noqa: E402
from pixelguard.workflows.training import TrainedModel, train_on_dataset  # noqa: E402

logger = logging.getLogger("benchmarks.screening")

TRIGGER = "square:3@bottom-right"
TARGET = 0


def split_mnist(data_dir: Path, n_train: int, seed: int) -> tuple[Dataset, Dataset]:
    """A seeded split of the 10k MNIST test set into training and test halves."""
    mnist = load_data(str(data_dir))
    order = torch.randperm(len(mnist), generator=torch.Generator().manual_seed(seed))
    return mnist.subset(order[:n_train]), mnist.subset(order[n_train:])


def art_classifier(module: torch.nn.Module, num_classes: int) -> Any:
    """An ART PyTorchClassifier around ``module`` for canonical [0, 1] NCHW MNIST."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=num_classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def art_detectors(
    trained: TrainedModel, poisoned: PoisonedData
) -> dict[str, Callable[[], np.ndarray]]:
    """ART detectors by name, each returning its flag mask (is_clean == 0)."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    x = poisoned.dataset.x.numpy()
    k = trained.num_classes
    y = np.eye(k, dtype=np.float32)[poisoned.dataset.y.numpy()]
    wrappers = {
        "logits": art_classifier(trained.module, k),
        "penultimate": art_classifier(trained.module[:-1], k),  # type: ignore[index]
    }

    def spectral(layer: str) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            defence = SpectralSignatureDefense(
                wrappers[layer],
                x,
                y,
                batch_size=128,
                eps_multiplier=1.5,
                expected_pp_poison=poisoned.rate,
            )
            _, is_clean = defence.detect_poison()
            return np.asarray(is_clean) == 0

        return run

    labels = poisoned.dataset.y.numpy()

    def activation(layer: str, analysis: str) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            np.random.seed(0)  # ART's KMeans takes no random_state: seed the global RNG
            defence = ActivationDefence(wrappers[layer], x, y)
            if analysis != "relative-size":
                _, is_clean = defence.detect_poison(
                    nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis=analysis
                )
                return np.asarray(is_clean) == 0
            # ART 1.20's analyze_by_relative_size raises "truth value of an empty array is
            # ambiguous" whenever a class has no small cluster (`cluster_id in
            # poison_clusters` on a tuple of arrays). Use ART's own clustering and apply
            # its documented rule here: a cluster under 35% of its class (rounded to 2
            # decimals, as ART does) is poison.
            defence.set_params(nb_clusters=2, nb_dims=10, reduce="PCA")
            clusters_by_class, _ = defence.cluster_activations()
            flags = np.zeros(len(labels), dtype=bool)
            for label, clusters in enumerate(clusters_by_class):
                index = np.flatnonzero(labels == label)
                if len(index) == 0:
                    continue
                clusters = np.asarray(clusters)
                shares = np.round(np.bincount(clusters) / len(clusters), 2)
                flags[index] = shares[clusters] < 0.35
            return flags

        return run

    return {
        "art-spectral/logits": spectral("logits"),
        "art-spectral/penultimate": spectral("penultimate"),
        "art-ac-smaller/logits": activation("logits", "smaller"),
        "art-ac-smaller/penultimate": activation("penultimate", "smaller"),
        "art-ac-relative-size/logits": activation("logits", "relative-size"),
        "art-ac-relative-size/penultimate": activation("penultimate", "relative-size"),
    }


def run_rate(
    train: Dataset, test: Dataset, rate: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Poison, train, screen with every detector, retrain on what the chosen ones keep."""
    poisoned = poison_dataset(train, TRIGGER, rate=rate, target=TARGET, seed=args.seed)
    start = time.perf_counter()
    trained = train_on_dataset(poisoned.dataset, epochs=args.epochs, seed=args.seed)
    train_seconds = time.perf_counter() - start
    base = backdoor_metrics(
        trained.classifier(), test, poisoned.trigger, target=TARGET, mode="all-to-one"
    )
    logger.info("rate %.3f: trained in %.0fs, %s", rate, train_seconds, base.to_dict())
    mask = poisoned.mask

    start = time.perf_counter()
    features = penultimate_features(trained.classifier(), poisoned.dataset.x)
    feature_seconds = time.perf_counter() - start
    detectors: dict[str, Callable[[], np.ndarray | torch.Tensor]] = {
        "pixelguard-spectral": lambda: (
            SpectralSignatures().scan(features, poisoned.dataset.y).flagged
        ),
        "pixelguard-ac": lambda: (
            ActivationClustering(seed=args.seed).scan(features, poisoned.dataset.y).flagged
        ),
        "pixelguard-ac/paper": lambda: (
            ActivationClustering(seed=args.seed, min_silhouette=None, removal_factor=1.0)
            .scan(features, poisoned.dataset.y)
            .flagged
        ),
        **art_detectors(trained, poisoned),
    }
    rows = []
    for name, detect in detectors.items():
        start = time.perf_counter()
        flags = torch.as_tensor(np.asarray(detect())).bool()
        seconds = time.perf_counter() - start
        if name.startswith("pixelguard"):
            seconds += feature_seconds
        m = screening_metrics(flags, mask)
        row: dict[str, Any] = {
            "detector": name,
            "n_flagged": int(flags.sum()),
            "precision": round(m.precision, 4),
            "recall": round(m.recall, 4),
            "f1": round(m.f1, 4),
            "true_positives": m.true_positives,
            "false_positives": m.false_positives,
            "scan_seconds": round(seconds, 2),
            "retrain": None,
            "_flags": flags,
        }
        logger.info("rate %.3f %s: P %.3f R %.3f F1 %.3f", rate, name, m.precision, m.recall, m.f1)
        rows.append(row)
    for row in _to_retrain(rows, args.retrain):
        keep = torch.nonzero(~row["_flags"]).flatten()
        start = time.perf_counter()
        model = train_on_dataset(poisoned.dataset.subset(keep), epochs=args.epochs, seed=args.seed)
        after = backdoor_metrics(
            model.classifier(), test, poisoned.trigger, target=TARGET, mode="all-to-one"
        )
        row["retrain"] = {
            "n_kept": int(keep.numel()),
            "poison_left": int(mask[keep].sum()),
            "clean_accuracy": round(after.clean_accuracy, 4),
            "attack_success_rate": round(after.attack_success_rate, 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        logger.info("rate %.3f %s retrained: %s", rate, row["detector"], row["retrain"])
    for row in rows:
        del row["_flags"]
    return {
        "rate": rate,
        "n_train": len(train),
        "n_test": len(test),
        "n_poisoned": int(mask.sum()),
        "poison_share_of_target_class": round(
            float(mask.sum()) / int((poisoned.dataset.y == TARGET).sum()), 4
        ),
        "trigger": TRIGGER,
        "target": TARGET,
        "train_seconds": round(train_seconds, 1),
        "before": {
            "clean_accuracy": round(base.clean_accuracy, 4),
            "attack_success_rate": round(base.attack_success_rate, 4),
        },
        "detectors": rows,
    }


def _to_retrain(rows: list[dict[str, Any]], which: str) -> list[dict[str, Any]]:
    """``all``: every detector; ``best``: pixelguard's three and ART's best-F1
    spectral and activation-clustering configurations."""
    if which == "none":
        return []
    if which == "all":
        return rows
    chosen = [r for r in rows if r["detector"].startswith("pixelguard")]  # all three
    for prefix in ("art-spectral", "art-ac"):
        peers = [r for r in rows if r["detector"].startswith(prefix)]
        chosen.append(max(peers, key=lambda r: (r["f1"], r["recall"])))
    return chosen


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        f"Training-set screening on MNIST ({results['n_train']:,} train / "
        f"{results['n_test']:,} test, trigger {TRIGGER}, target {TARGET}, small-cnn "
        f"{results['epochs']} epochs, {results['threads']} thread(s))",
        "",
    ]
    for run in results["runs"]:
        before = run["before"]
        lines += [
            f"### {run['rate']:.0%} poisoning ({run['n_poisoned']} images, "
            f"{run['poison_share_of_target_class']:.0%} of the target class); "
            f"before screening: clean accuracy {before['clean_accuracy']:.2%}, "
            f"ASR {before['attack_success_rate']:.2%}",
            "",
            "| detector | flagged | precision | recall | F1 | scan s | retrained: poison left | clean acc | ASR |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in run["detectors"]:
            re = r["retrain"]
            tail = (
                f"{re['poison_left']} | {re['clean_accuracy']:.2%} | {re['attack_success_rate']:.2%}"
                if re
                else "- | - | -"
            )
            lines.append(
                f"| {r['detector']} | {r['n_flagged']} | {r['precision']:.3f} | {r['recall']:.3f} "
                f"| {r['f1']:.3f} | {r['scan_seconds']:.2f} | {tail} |"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0.05", help="comma-separated poisoning rates")
    parser.add_argument("--epochs", type=int, default=8, help="training (and retraining) epochs")
    parser.add_argument("--n-train", type=int, default=5000, help="training half of the 10k")
    parser.add_argument(
        "--retrain",
        choices=["none", "best", "all"],
        default="best",
        help="which detectors to retrain after",
    )
    parser.add_argument("--data-dir", type=Path, default=Path("/work/shared/datasets/mnist"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-out/screening"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; write results.json and results.md; print the tables."""
    args = parse_args(argv)
    run = begin_run("benchmarks/bench_screening.py", argv, args.threads)
    threads, started = run.threads, run.started
    train, test = split_mnist(args.data_dir, args.n_train, args.seed)
    results: dict[str, Any] = {
        "command": run.command,
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "load_average_start": load_average(),
        "versions": package_versions(
            ["pixelguard", "torch", "numpy", "scikit-learn", "adversarial-robustness-toolbox"]
        ),
        "threads": threads,
        "n_train": len(train),
        "n_test": len(test),
        "epochs": args.epochs,
        "seed": args.seed,
        "runs": [],
    }
    for rate in (float(r) for r in args.rates.split(",")):
        results["runs"].append(run_rate(train, test, rate, args))
        write_results(args.out, results, render_markdown(results))  # partial, after each rate
    results["finished_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["load_average_end"] = load_average()
    results["wall_seconds"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1)
    write_results(args.out, results, render_markdown(results))
    return results


if __name__ == "__main__":
    main()
