"""Harden a pixelguard checkpoint, save it, and compare its robustness before and after.

The comparison runs the same suite as ``pixelguard evaluate`` at the hardening
budget (:func:`threat_suite`) on both models, with the same images and seeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelguard.attacks.base import ProgressCallback, ThreatModel, create_attack
from pixelguard.data.base import Dataset
from pixelguard.defenses.harden import HardenedModel, harden
from pixelguard.errors import ConfigError, ModelError
from pixelguard.evaluate.runner import Evaluation, evaluate
from pixelguard.evaluate.suite import Suite, SuiteEntry, budget_label, build_suite
from pixelguard.models.base import Classifier, InputSpec
from pixelguard.models.zoo import load_checkpoint
from pixelguard.workflows.training import TrainedModel


def threat_suite(
    threat: ThreatModel, *, gradients: bool, budget: int | None = None, seed: int = 0
) -> Suite:
    """The evaluation suite at one threat model's budget.

    ``pixels:K``: the pixel suite at K (sparse-pgd with gradients, then sparse-rs);
    ``linf:EPS``: the dense suite at EPS (Linf PGD); ``l2:EPS``: L2 PGD at EPS.

    Raises:
        ConfigError: a dense budget for a model without gradients.
    """
    if threat.kind == "l0":
        return build_suite(
            "pixel", pixels=[int(threat.size)], budget=budget, gradients=gradients, seed=seed
        )
    if threat.kind == "linf":
        return build_suite(
            "dense", eps=[threat.size], budget=budget, gradients=gradients, seed=seed
        )
    if not gradients:
        raise ConfigError("l2 robustness is measured with L2 PGD, which needs gradients")
    attack = create_attack("pgd", norm="l2", eps=threat.size, budget=budget, seed=seed)
    return Suite("l2", [SuiteEntry(budget_label("l2", threat.size), attack)])


def load_trainable_checkpoint(path: str | Path) -> TrainedModel:
    """A pixelguard checkpoint whose network takes canonical images, ready to retrain.

    Raises:
        ModelError: not a pixelguard checkpoint (e.g. TorchScript or ONNX).
        ConfigError: a network that wants other inputs than [0, 1] NCHW batches.
    """
    try:
        module, meta = load_checkpoint(path)
    except ModelError as exc:
        raise ModelError(
            f"{exc}; hardening retrains a pixelguard checkpoint (from pixelguard train)"
        ) from exc
    if meta["spec"] != InputSpec():
        raise ConfigError(
            f"{path} wants inputs converted by {meta['spec']}; hardening retrains networks "
            "that take [0, 1] NCHW images (as pixelguard train saves them)"
        )
    return TrainedModel(
        module,
        meta["arch"],
        meta["input_shape"],
        meta["class_names"],
        int(meta["arch_params"]["num_classes"]),
        dict(meta["metrics"]),
    )


def hardening_state_path(out: str | Path) -> Path:
    """Where hardening into ``out`` keeps its resumable training state: ``M.harden-state.pt``."""
    return Path(out).with_suffix(".harden-state.pt")


def harden_checkpoint(
    model: TrainedModel,
    train: Dataset,
    against: str | ThreatModel,
    out: str | Path,
    **settings: Any,
) -> tuple[TrainedModel, HardenedModel]:
    """Adversarially train ``model`` and save it as a pixelguard checkpoint at ``out``.

    The training state is kept in :func:`hardening_state_path` while training runs
    (pass ``resume=True`` to continue an interrupted run) and removed once ``out``
    is written. The checkpoint's metrics record the hardening under ``hardening``
    and the original training under ``trained``.

    Args:
        model: the network to harden (see :func:`load_trainable_checkpoint`).
        train: the training images.
        against: the threat model, e.g. ``"pixels:3"``.
        out: the checkpoint to write.
        settings: keyword arguments of :func:`~pixelguard.defenses.harden.harden`
            (epochs, lr, batch_size, adversarial_fraction, trades_beta, seed,
            resume, progress, ...).

    Returns:
        The saved model and the training record.
    """
    state = hardening_state_path(out)
    hardened = harden(model.module, train, against, checkpoint_path=state, **settings)
    metrics = {
        "hardening": {**hardened.params, "history": hardened.history, "train_size": len(train)},
        "trained": model.metrics,
    }
    saved = TrainedModel(
        hardened.module,
        model.arch,
        model.input_shape,
        model.class_names,
        model.num_classes,
        metrics,
    )
    saved.save(out)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    return saved, hardened


@dataclass(frozen=True)
class RobustnessComparison:
    """Two models evaluated by the same suite on the same images."""

    threat: ThreatModel
    before: Evaluation
    after: Evaluation

    @property
    def budget(self) -> str:
        """The budget label both were evaluated at, e.g. ``"pixels=3"``."""
        return self.before.budgets[0].label

    def to_dict(self) -> dict[str, Any]:
        """Clean and robust accuracy of both models, as plain data."""

        def summary(evaluation: Evaluation) -> dict[str, Any]:
            return {
                "clean_accuracy": round(evaluation.clean_accuracy, 6),
                "robust_accuracy": round(evaluation.robust_accuracy()[self.budget], 6),
            }

        return {
            "against": self.threat.spec,
            "budget": self.budget,
            "suite": self.before.suite,
            "n_images": self.before.n_images,
            "before": summary(self.before),
            "after": summary(self.after),
        }


def compare_robustness(
    before: Classifier,
    after: Classifier,
    dataset: Dataset,
    threat: ThreatModel,
    *,
    limit: int | None = None,
    budget: int | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> RobustnessComparison:
    """Evaluate both models with :func:`threat_suite` on the first ``limit`` images.

    Args:
        before, after: the models to compare.
        dataset: the images to evaluate on.
        threat: the budget to evaluate at.
        limit: evaluate only the first ``limit`` images (None: all).
        budget: most queries per image and attack (None: each attack's own limit).
        seed: the seed of every attack.
        progress: called as ``progress(images_done, images_total)`` over both
            evaluations (each image counts once per model).

    Raises:
        ConfigError, CapabilityError, ShapeError: as :func:`~pixelguard.evaluate.runner.evaluate`.
    """
    evaluations = []
    for number, model in enumerate((before, after)):
        suite = threat_suite(
            threat, gradients=model.capabilities.gradients, budget=budget, seed=seed
        )
        report = None if progress is None else _offset_progress(progress, number, 2)
        evaluations.append(evaluate(model, dataset, suite, limit=limit, progress=report))
    return RobustnessComparison(threat, evaluations[0], evaluations[1])


def _offset_progress(progress: ProgressCallback, number: int, count: int) -> Callable[..., None]:
    """An evaluation's progress reported as part ``number`` of ``count`` equal parts."""

    def report(done: int, total: int, *_: Any) -> None:
        progress(number * total + done, count * total)

    return report
