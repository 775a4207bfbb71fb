"""Plant a backdoor in a training set (training the clean model clean-label needs), and
measure a model trained on poisoned data against the truth the poisoned file records."""

from __future__ import annotations

import logging
from typing import Any

from pixelguard.data.base import Dataset
from pixelguard.models.base import Classifier
from pixelguard.models.training import TrainProgress
from pixelguard.poisoning.backdoor import (
    CLEAN_LABEL_EPS,
    CLEAN_LABEL_STEPS,
    PoisonedData,
    PoisonInfo,
    backdoor_metrics,
    choose_poisoned,
    poison_dataset,
)
from pixelguard.poisoning.triggers import parse_trigger
from pixelguard.workflows.training import train_on_dataset

logger = logging.getLogger(__name__)

CLEAN_MODEL_EPOCHS = 10
"""Epochs of the clean model clean-label poisoning trains when none is given."""


def plant_backdoor(
    dataset: Dataset,
    trigger: str,
    *,
    rate: float,
    target: int | None,
    mode: str = "all-to-one",
    seed: int = 0,
    model: Classifier | None = None,
    eps: float = CLEAN_LABEL_EPS,
    steps: int = CLEAN_LABEL_STEPS,
    arch: str = "small-cnn",
    epochs: int = CLEAN_MODEL_EPOCHS,
    progress: TrainProgress | None = None,
) -> tuple[PoisonedData, dict[str, Any] | None]:
    """Poison ``dataset``; clean-label without ``model`` first trains a clean one on it.

    The trigger is parsed, and the settings checked, before any training starts.

    Returns:
        The poisoned data, and the clean model's training metrics when one was
        trained here (else None).

    Raises:
        ConfigError: see :func:`~pixelguard.poisoning.backdoor.poison_dataset`.
    """
    parsed = parse_trigger(trigger, dataset.image_shape)
    trained: dict[str, Any] | None = None
    if mode == "clean-label" and model is None:
        choose_poisoned(dataset, rate=rate, target=target, mode=mode, seed=seed)  # checks first
        logger.info("clean-label: training a clean %s for %d epochs to perturb with", arch, epochs)
        clean = train_on_dataset(dataset, arch=arch, epochs=epochs, seed=seed, progress=progress)
        model, trained = clean.classifier(), {"arch": arch, **clean.metrics}
    poisoned = poison_dataset(
        dataset,
        parsed,
        rate=rate,
        target=target,
        mode=mode,
        seed=seed,
        model=model,
        eps=eps,
        steps=steps,
    )
    return poisoned, trained


def backdoor_report(model: Classifier, test: Dataset, info: PoisonInfo) -> dict[str, Any]:
    """Clean accuracy and attack success rate on ``test``, with the trigger that was planted."""
    metrics = backdoor_metrics(model, test, info.trigger, target=info.target, mode=info.mode)
    return {
        "trigger": info.metadata["trigger"],
        "mode": info.mode,
        "target": info.target,
        "poison_rate": info.metadata["rate"],
        "test_source": test.source,
        **metrics.to_dict(),
    }
