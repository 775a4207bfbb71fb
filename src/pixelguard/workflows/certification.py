"""Certify a dataset by randomized ablation, and train the base classifier it needs.

The certified radius of an image is the number of pixels that provably cannot change
the smoothed prediction (with probability at least ``1 - alpha``); certified accuracy
at radius ``r`` is the share of images whose prediction is correct *and* certified
for at least ``r`` pixels.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from pixelguard.attacks.base import ProgressCallback
from pixelguard.data.base import Dataset
from pixelguard.defenses.ablation import AblationBase, train_ablation_classifier
from pixelguard.defenses.certify import RandomizedAblation, certified_accuracy
from pixelguard.errors import ConfigError, ShapeError

CERTIFICATION_SCHEMA = "certification-1.0"
"""Version of :meth:`Certification.to_dict`'s layout."""

CHUNK_SIZE = 100
"""Images per certification call (one progress step)."""


@dataclass(frozen=True)
class Certification:
    """The smoothed classifier's prediction and certified radius for every image.

    Attributes:
        params: the certifier's configuration.
        pixels: pixel positions per image (d).
        y: the true labels.
        pred: the smoothed predictions.
        radius: certified radius per image; -1 where the certifier abstained.
        wall_time: seconds.

    Shape:
        y, pred, radius: (N,) int64, on the CPU.
    """

    params: dict[str, Any]
    pixels: int
    y: torch.Tensor
    pred: torch.Tensor
    radius: torch.Tensor
    wall_time: float

    @property
    def n_images(self) -> int:
        return int(self.y.numel())

    @property
    def certified_correct(self) -> torch.Tensor:
        """Images predicted correctly with a certificate (radius >= 0): (N,) bool."""
        return (self.pred == self.y) & (self.radius >= 0)

    @property
    def median_radius(self) -> float | None:
        """Median radius over the images certified correct (None: there are none)."""
        radii = self.radius[self.certified_correct].tolist()
        return float(statistics.median(radii)) if radii else None

    def curve(self) -> list[tuple[int, float]]:
        """Certified accuracy at every radius from 0 to the largest one certified."""
        largest = int(self.radius.max()) if self.n_images else 0
        radii = list(range(max(largest, 0) + 1))
        return list(zip(radii, certified_accuracy(self.pred, self.radius, self.y, radii)))

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable data (schema ``certification-1.0``).

        Per image, ``radius`` is None where the certifier abstained.
        """
        return {
            "schema_version": CERTIFICATION_SCHEMA,
            "certifier": self.params,
            "pixels": self.pixels,
            "n_images": self.n_images,
            "clean_accuracy": round(float((self.pred == self.y).double().mean()), 6)
            if self.n_images
            else 0.0,
            "abstained": int((self.radius < 0).sum()),
            "median_radius": self.median_radius,
            "certified_accuracy": [
                {"radius": r, "certified_accuracy": round(acc, 6)} for r, acc in self.curve()
            ],
            "images": [
                {
                    "index": i,
                    "label": int(self.y[i]),
                    "pred": int(self.pred[i]),
                    "radius": int(self.radius[i]) if int(self.radius[i]) >= 0 else None,
                    "certified_correct": bool(self.certified_correct[i]),
                }
                for i in range(self.n_images)
            ],
            "wall_time": round(self.wall_time, 4),
        }


def certify_dataset(
    certifier: RandomizedAblation,
    dataset: Dataset,
    *,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
) -> Certification:
    """Certify the first ``limit`` images of ``dataset``.

    Args:
        certifier: the smoothed classifier.
        dataset: images of the certifier's input shape.
        limit: certify only the first ``limit`` images (None: all).
        progress: called as ``progress(images_done, images_total)`` after each chunk.

    Raises:
        ShapeError: images of another shape.
        ConfigError: a limit below 1.
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    if dataset.image_shape != certifier.input_shape:
        raise ShapeError(
            f"the base classifier certifies images of shape {certifier.input_shape}, "
            f"the data has {dataset.image_shape}"
        )
    start = time.perf_counter()
    x, y = dataset.x[:limit], dataset.y[:limit]
    preds, radii = [], []
    for lo in range(0, len(y), CHUNK_SIZE):
        pred, radius = certifier.certify(x[lo : lo + CHUNK_SIZE])
        preds.append(pred)
        radii.append(radius)
        if progress is not None:
            progress(lo + pred.numel(), len(y))
    empty = torch.zeros(0, dtype=torch.int64)
    return Certification(
        params=certifier.params(),
        pixels=certifier.pixels,
        y=y.cpu(),
        pred=torch.cat(preds) if preds else empty,
        radius=torch.cat(radii) if radii else empty,
        wall_time=time.perf_counter() - start,
    )


def train_ablation_base(
    train: Dataset,
    keep: int,
    *,
    arch: str = "small-cnn",
    epochs: int = 30,
    lr: float = 2e-3,
    seed: int = 0,
) -> AblationBase:
    """Train a base classifier for randomized ablation on ``train``.

    See :func:`~pixelguard.defenses.ablation.train_ablation_classifier`.
    """
    module, metrics = train_ablation_classifier(
        train.x,
        train.y,
        keep,
        arch=arch,
        epochs=epochs,
        lr=lr,
        seed=seed,
        num_classes=train.num_classes,
    )
    return AblationBase(
        module=module,
        arch=arch,
        image_shape=train.image_shape,
        keep=keep,
        num_classes=train.num_classes,
        class_names=train.class_names,
        metrics=metrics,
    )
