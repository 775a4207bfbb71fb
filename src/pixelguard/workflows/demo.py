"""The demo's model: a small CNN trained on the embedded digits, cached between runs."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelguard.data.base import Dataset
from pixelguard.errors import ModelError
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.zoo import load_checkpoint
from pixelguard.workflows.training import train_on_dataset

logger = logging.getLogger(__name__)

CACHE_ENV = "PIXELGUARD_CACHE"
"""Environment variable naming the cache folder (default ``~/.cache/pixelguard``)."""
BATCH_SIZE = 4096
"""Images per forward pass of the demo model: large batches keep the CPU busy."""


def cache_dir() -> Path:
    """The cache folder: ``$PIXELGUARD_CACHE`` or ``~/.cache/pixelguard``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "pixelguard"


@dataclass(frozen=True)
class DemoModel:
    """A trained demo classifier and where it came from.

    Attributes:
        model: the classifier (logits, canonical input).
        arch: its zoo architecture.
        path: the cached checkpoint.
        cached: True when it was read from the cache rather than trained now.
        metrics: the training metrics stored with the checkpoint.
    """

    model: TorchClassifier
    arch: str
    path: Path
    cached: bool
    metrics: dict[str, Any]


def _data_version(*datasets: Dataset) -> str:
    """A short digest of images and labels: other data, another cache entry."""
    digest = hashlib.sha256()
    for dataset in datasets:
        digest.update(dataset.x.cpu().numpy().tobytes())
        digest.update(dataset.y.cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def demo_model(
    train: Dataset,
    test: Dataset,
    *,
    arch: str = "small-cnn",
    seed: int = 0,
    epochs: int = 20,
    cache: Path | None = None,
) -> DemoModel:
    """Load the demo classifier from the cache, or train and cache it.

    The cache file is keyed by architecture, seed, epochs and a digest of the data.
    A cache file that cannot be read is logged and replaced by a freshly trained one.

    Args:
        train: the training images.
        test: the images the stored ``test_accuracy`` is measured on.
        arch: a zoo architecture.
        seed: the training seed.
        epochs: training epochs.
        cache: the cache folder (default :func:`cache_dir`).

    Returns:
        The classifier and its provenance.

    Raises:
        ConfigError: an unknown architecture or bad training settings.
    """
    folder = (cache if cache is not None else cache_dir()) / "models"
    path = folder / f"digits-{arch}-seed{seed}-epochs{epochs}-{_data_version(train, test)}.pt"
    if path.is_file():
        try:
            module, meta = load_checkpoint(path)
        except ModelError as exc:
            logger.warning("the cached demo model is unreadable (%s); training a new one", exc)
        else:
            model = TorchClassifier(
                module, meta["input_shape"], output="logits", batch_size=BATCH_SIZE
            )
            return DemoModel(model, arch, path, cached=True, metrics=dict(meta["metrics"]))
    logger.info("training the demo model (%s, %d epochs) into %s", arch, epochs, path)
    trained = train_on_dataset(train, arch=arch, epochs=epochs, seed=seed, test=test)
    trained.save(path)
    return DemoModel(
        trained.classifier(BATCH_SIZE), arch, path, cached=False, metrics=trained.metrics
    )
