"""Train a zoo network on a :class:`Dataset` and save it as a pixelguard checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from pixelguard.data.base import Dataset
from pixelguard.errors import ShapeError
from pixelguard.files import replaced_atomically
from pixelguard.models.base import DEFAULT_BATCH_SIZE
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import TrainProgress, train_classifier
from pixelguard.models.zoo import save_zoo_checkpoint


@dataclass(frozen=True)
class TrainedModel:
    """A trained zoo network with what its checkpoint records.

    Attributes:
        module: the network (eval mode, CPU), taking canonical batches, giving logits.
        arch: its zoo architecture name.
        input_shape: ``(C, H, W)`` of the images it classifies.
        class_names: one name per class, when known.
        num_classes: the number of classes.
        metrics: training metrics, plus ``test_accuracy``/``test_size`` when a test
            set was given.
    """

    module: nn.Module
    arch: str
    input_shape: tuple[int, int, int]
    class_names: list[str] | None
    num_classes: int
    metrics: dict[str, Any]

    def classifier(self, batch_size: int = DEFAULT_BATCH_SIZE) -> TorchClassifier:
        """The network as a :class:`TorchClassifier` returning logits."""
        return TorchClassifier(
            self.module, self.input_shape, output="logits", batch_size=batch_size
        )

    def save(self, path: str | Path) -> Path:
        """Write a pixelguard checkpoint atomically (see :func:`~pixelguard.files.replaced_atomically`).

        ``pixelguard attack --model PATH`` then needs no model options.
        """
        with replaced_atomically(path) as tmp:
            save_zoo_checkpoint(
                tmp,
                self.module,
                arch=self.arch,
                input_shape=self.input_shape,
                num_classes=self.num_classes,
                class_names=self.class_names,
                metrics=self.metrics,
            )
        return Path(path)


def train_on_dataset(
    train: Dataset,
    *,
    arch: str = "small-cnn",
    epochs: int = 20,
    lr: float = 1e-3,
    seed: int = 0,
    test: Dataset | None = None,
    val_fraction: float = 0.0,
    progress: TrainProgress | None = None,
) -> TrainedModel:
    """Train a zoo network on ``train`` and measure it on ``test``.

    Args:
        train: the training images.
        arch: a zoo architecture (see :func:`pixelguard.models.zoo.list_archs`).
        epochs: passes over the training images.
        lr: Adam learning rate.
        seed: seeds initialisation and shuffling.
        test: images to report ``test_accuracy`` on, or None.
        val_fraction: share of ``train`` held out for ``val_accuracy``.
        progress: called after every epoch as ``progress(epoch, epochs, loss)``.

    Returns:
        The trained model.

    Shape:
        train.x, test.x: (N, C, H, W) float32 in [0, 1], the same (C, H, W).

    Raises:
        ShapeError: ``test`` images of another shape.
        ConfigError: an unknown architecture or bad hyper-parameters.
    """
    if test is not None and test.image_shape != train.image_shape:
        raise ShapeError(
            f"test images have shape {test.image_shape}, training images {train.image_shape}"
        )
    num_classes = max(train.num_classes, test.num_classes if test is not None else 0)
    module, metrics = train_classifier(
        train.x,
        train.y,
        arch=arch,
        epochs=epochs,
        lr=lr,
        seed=seed,
        val_fraction=val_fraction,
        num_classes=num_classes,
        progress=progress,
    )
    trained = TrainedModel(module, arch, train.image_shape, train.class_names, num_classes, metrics)
    if test is not None:
        pred = trained.classifier().predict(test.x).argmax(dim=1)
        metrics["test_accuracy"] = float((pred == test.y).float().mean())
        metrics["test_size"] = len(test)
    return trained
