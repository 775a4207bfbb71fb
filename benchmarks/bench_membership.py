"""Membership inference side by side: pixelguard loss-threshold and shadow models vs ART.

One process, the same target models and the same images for every attack. From the
official MNIST test set (10,000 images; or with ``--dataset cifar10`` the CIFAR-10 test split, 10,000
JPEG images) a seeded permutation takes:

- 1,500 *members*, the target's whole training set;
- 1,500 *non-members*, never trained on;
- 3,000 *shadow data*, the attacker's own images (pixelguard's shadow models train on
  seeded halves of it: 1,500 each, like the target).

Of members and non-members, the first 500 of each are the *attack-training* part: what
ART's ``MembershipInferenceBlackBox`` (which learns from known target members and
non-members) is fitted on. Every attack is scored on the other 1,000 members and
1,000 non-members, the *evaluation* part, with the same metric code
(:class:`pixelguard.leakage.membership.MembershipResult`, whose AUC is cross-checked
against scikit-learn's ``roc_auc_score``): ROC AUC and the TPR at 1% and 0.1% FPR,
the threshold set on the evaluated non-members for every method alike.

Two targets per architecture, the same 1,500 members:

- *overfitted*: trained long (``--overfit-epochs``), 100% train accuracy;
- *regularised*: early-stopped (``--regular-epochs``), the only regulariser
  ``train_classifier`` offers; weight decay or dropout would need another trainer.

pixelguard's loss-threshold runs raw (no knowledge beyond the model's scores) and
class-calibrated, its scores standardised per class on the shadow data (the same
attacker knowledge as the shadow attack). The shadow attack gets Shokri et al.'s
standard assumption: the attacker knows the architecture and the training recipe
(epochs, Adam, batch 128). ART's attacks know 500 real members of the target
instead, a stronger position.

Example:
    python benchmarks/bench_membership.py                    # mlp and small-cnn
    python benchmarks/bench_membership.py --archs mlp --shadow-models 8
    python benchmarks/bench_membership.py --dataset cifar10 --archs mlp \
        --out bench-out/membership-cifar10                  # the CIFAR-10 test split
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

from _common import (  # noqa: E402
    describe_machine,
    load_average,
    package_versions,
    set_threads,
    source_revision,
    write_results,
)
from pixelguard.data import load_data  # noqa: E402
from pixelguard.leakage.loss_threshold import LossThresholdAttack  # noqa: E402
from pixelguard.leakage.membership import MembershipResult  # noqa: E402
from pixelguard.leakage.shadow import ShadowModelAttack  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.models.training import train_classifier  # noqa: E402

logger = logging.getLogger("benchmarks.membership")

SHARED_DATASETS = Path("/work/shared/datasets")
REPO = Path(__file__).resolve().parents[1]


def partition(n: int, seed: int, sizes: Sequence[int]) -> list[torch.Tensor]:
    """Disjoint seeded index sets of the given sizes."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = np.cumsum([0, *sizes])
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def measure(
    name: str, family: str, run: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> dict[str, Any]:
    """Time ``run`` (returning member and non-member scores) and measure it."""
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    members, non = run()
    seconds = time.perf_counter() - start
    result = MembershipResult.from_scores(name, {}, torch.as_tensor(members), torch.as_tensor(non))
    truth = np.r_[np.ones(len(members)), np.zeros(len(non))]
    sk_auc = float(roc_auc_score(truth, np.r_[members, non]))
    assert abs(sk_auc - result.auc) < 1e-9, (name, sk_auc, result.auc)
    row = {
        "method": name,
        "library": family,
        "auc": round(result.auc, 4),
        "advantage": round(result.advantage, 4),
        "seconds": round(seconds, 2),
    }
    for point in result.points:
        data = point.to_dict()
        key = f"tpr_at_{point.target_fpr:g}"
        row[key] = data["tpr"]
        row[f"{key}_ci"] = data["tpr_ci"]
        row[f"{key}_measurable"] = data["measurable"]
    logger.info("%s: AUC %.3f, TPR@1%% %.3f", name, result.auc, row["tpr_at_0.01"])
    return row


def art_classifier(module: torch.nn.Module, shape: tuple[int, int, int]) -> Any:
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=shape,
        nb_classes=10,
        clip_values=(0.0, 1.0),
    )


def run_target(
    arch: str,
    regime: str,
    epochs: int,
    sets: dict[str, tuple[torch.Tensor, torch.Tensor]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Train one target and run every attack on it."""
    x_in, y_in = sets["members"]
    start = time.perf_counter()
    module, metrics = train_classifier(x_in, y_in, arch=arch, epochs=epochs, seed=args.seed)
    train_seconds = time.perf_counter() - start
    shape = tuple(x_in.shape[1:])
    target = TorchClassifier(module, shape, output="logits")  # type: ignore[arg-type]
    x_out, y_out = sets["non_members"]
    test_acc = float((target.predict(x_out).argmax(1) == y_out).float().mean())
    logger.info(
        "%s %s: train acc %.3f, test acc %.3f (%.0fs)",
        arch,
        regime,
        metrics["train_accuracy"],
        test_acc,
        train_seconds,
    )
    n_fit = args.art_train
    fit_in, fit_out = (x_in[:n_fit], y_in[:n_fit]), (x_out[:n_fit], y_out[:n_fit])
    ev_in, ev_out = (x_in[n_fit:], y_in[n_fit:]), (x_out[n_fit:], y_out[n_fit:])
    rows = []

    for kind in ("loss", "margin"):
        attack = LossThresholdAttack(signal=kind)
        rows.append(
            measure(
                f"pixelguard loss-threshold ({kind})",
                "pixelguard",
                lambda a=attack: (
                    a.score(target, ev_in).numpy(),
                    a.score(target, ev_out).numpy(),
                ),
            )
        )
    for kind in ("loss", "margin"):
        attack = LossThresholdAttack(signal=kind, calibration="class")
        rows.append(
            measure(
                f"pixelguard loss-threshold ({kind}, class-calibrated on the shadow data)",
                "pixelguard",
                lambda a=attack: (
                    a.score(target, ev_in, sets["shadow"]).numpy(),
                    a.score(target, ev_out, sets["shadow"]).numpy(),
                ),
            )
        )
    shadow = ShadowModelAttack(
        n_shadows=args.shadow_models, arch=arch, epochs=epochs, seed=args.seed
    )
    folder = args.out / f"checkpoint-{arch}-{regime}"
    shadow_details: dict[str, Any] = {}

    def run_shadow() -> tuple[np.ndarray, np.ndarray]:
        result = shadow.run(
            target,
            ev_in,
            ev_out,
            shadow_data=sets["shadow"],
            checkpoint=folder,
            resume=args.resume,
        )
        shadow_details.update(result.details)
        return result.member_scores.numpy(), result.non_member_scores.numpy()

    row = measure(f"pixelguard shadow ({args.shadow_models} models, gbm)", "pixelguard", run_shadow)
    row["details"] = shadow_details
    rows.append(row)

    from art.attacks.inference.membership_inference import (
        MembershipInferenceBlackBox,
        MembershipInferenceBlackBoxRuleBased,
    )

    art_model = art_classifier(module, shape)  # type: ignore[arg-type]
    np_fit_in = (fit_in[0].numpy(), fit_in[1].numpy())
    np_fit_out = (fit_out[0].numpy(), fit_out[1].numpy())
    np_ev_in = (ev_in[0].numpy(), ev_in[1].numpy())
    np_ev_out = (ev_out[0].numpy(), ev_out[1].numpy())
    softmax_model = art_classifier(
        torch.nn.Sequential(module, torch.nn.Softmax(dim=1)),
        shape,  # type: ignore[arg-type]
    )
    variants = (
        ("prediction", "nn", art_model, "logits"),
        ("prediction", "rf", art_model, "logits"),
        ("prediction", "nn", softmax_model, "softmax"),
        ("prediction", "rf", softmax_model, "softmax"),
        ("loss", "rf", art_model, "logits"),
    )
    for input_type, model_type, estimator, outputs in variants:

        def run_art(
            input_type: str = input_type, model_type: str = model_type, estimator: Any = estimator
        ) -> tuple[np.ndarray, np.ndarray]:
            # ART seeds nothing itself: its nn and rf draw from the global generators
            torch.manual_seed(args.seed)
            np.random.seed(args.seed)
            attack = MembershipInferenceBlackBox(
                estimator, input_type=input_type, attack_model_type=model_type
            )
            attack.fit(np_fit_in[0], np_fit_in[1], np_fit_out[0], np_fit_out[1])
            scores = [
                np.asarray(attack.infer(x, y, probabilities=True), dtype=np.float64)
                for x, y in (np_ev_in, np_ev_out)
            ]
            # the membership probability column (ART returns (N, 1) or (N, 2))
            members, non = (s[:, -1] if s.ndim == 2 else s for s in scores)
            return members, non

        what = input_type if input_type == "loss" else f"prediction = {outputs}"
        rows.append(
            measure(
                f"ART BlackBox ({what}, {model_type}; fit on {n_fit}+{n_fit} target)",
                "art",
                run_art,
            )
        )

    def run_rule() -> tuple[np.ndarray, np.ndarray]:
        attack = MembershipInferenceBlackBoxRuleBased(art_model)
        return tuple(  # type: ignore[return-value]
            np.asarray(attack.infer(x, y), dtype=np.float64).ravel()
            for x, y in (np_ev_in, np_ev_out)
        )

    rows.append(measure("ART RuleBased (correct = member)", "art", run_rule))
    return {
        "arch": arch,
        "regime": regime,
        "epochs": epochs,
        "train_accuracy": round(metrics["train_accuracy"], 4),
        "test_accuracy": round(test_acc, 4),
        "train_seconds": round(train_seconds, 1),
        "n_eval_members": len(ev_in[1]),
        "n_eval_non_members": len(ev_out[1]),
        "rows": rows,
    }


def render(results: dict[str, Any]) -> str:
    """The markdown table of every target and method."""
    lines = [
        f"Membership inference on {results['dataset']} ({results['date']}, {results['machine']['cpu']}, "
        f"{results['machine']['torch_threads']} thread(s)); evaluation on "
        f"{results['targets'][0]['n_eval_members']} members + "
        f"{results['targets'][0]['n_eval_non_members']} non-members per target.",
        "",
        "| target | train/test acc | method | AUC | TPR@1% FPR (95% CI) | TPR@0.1% FPR | time |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for t in results["targets"]:
        label = f"{t['arch']} {t['regime']} ({t['epochs']} ep)"
        acc = f"{100 * t['train_accuracy']:.1f}% / {100 * t['test_accuracy']:.1f}%"
        for r in t["rows"]:
            low, high = r["tpr_at_0.01_ci"]
            lines.append(
                f"| {label} | {acc} | {r['method']} | {r['auc']:.3f} | "
                f"{100 * r['tpr_at_0.01']:.1f}% ({100 * low:.1f}-{100 * high:.1f}) | "
                f"{100 * r['tpr_at_0.001']:.1f}% | {r['seconds']:.1f} s |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATASETS)
    parser.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--archs", default="mlp,small-cnn")
    parser.add_argument("--members", type=int, default=1500)
    parser.add_argument("--art-train", type=int, default=500, help="ART's known members")
    parser.add_argument("--shadow-models", type=int, default=4)
    parser.add_argument("--cnn-shadow-models", type=int, default=2, help="for small-cnn")
    parser.add_argument("--overfit-epochs", default="mlp=100,small-cnn=30")
    parser.add_argument("--regular-epochs", default="mlp=5,small-cnn=3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--resume", action="store_true", help="reuse finished shadow models (times then lie)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-out/membership"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    set_threads(args.threads)
    overfit = dict(item.split("=") for item in args.overfit_epochs.split(","))
    regular = dict(item.split("=") for item in args.regular_epochs.split(","))
    data = (
        load_data(args.data_dir / "mnist")
        if args.dataset == "mnist"
        else load_data(args.data_dir / "cifar10-jpg.tar.gz", split="test")
    )
    n = args.members
    index = partition(len(data), args.seed, [n, n, 2 * n])
    sets = {
        name: (data.x[i], data.y[i])
        for name, i in zip(("members", "non_members", "shadow"), index, strict=True)
    }
    targets = []
    shadow_models = args.shadow_models
    for arch in args.archs.split(","):
        args.shadow_models = args.cnn_shadow_models if arch == "small-cnn" else shadow_models
        for regime, epochs in (("overfitted", overfit[arch]), ("regularised", regular[arch])):
            targets.append(run_target(arch, regime, int(epochs), sets, args))
    args.shadow_models = shadow_models
    results = {
        "benchmark": "membership",
        "dataset": data.source,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(),
        "load_average": load_average(),
        "packages": package_versions(["torch", "adversarial-robustness-toolbox", "scikit-learn"]),
        "source": source_revision(REPO),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": targets,
    }
    write_results(args.out, results, render(results))
    return results


if __name__ == "__main__":
    main()
