"""Attack the correctly classified images of a dataset, chunk by chunk, resumably.

:func:`attack_dataset` predicts the whole dataset, picks the images the model gets
right, and attacks them in chunks (one vectorised :meth:`Attack.run` per chunk).
After every chunk it can write a checkpoint, so a killed run resumes after its last
finished chunk instead of starting over.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixelguard.attacks.base import Attack, AttackResult, ProgressCallback
from pixelguard.checks import check_labels
from pixelguard.data.base import Dataset
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.evaluate.checkpoint import (
    Checkpoint,
    open_checkpoint,
    result_from_arrays,
    result_to_arrays,
    run_identity,
)
from pixelguard.evaluate.merge import merge_results
from pixelguard.models.base import Classifier, OutputKind, probabilities

logger = logging.getLogger(__name__)

PREDICT_CHUNK = 4096
"""Images per clean-prediction call (the adapter splits further by its batch size)."""


@dataclass(frozen=True)
class AttackRun:
    """One attack over a dataset: which images were attacked and what happened.

    Attributes:
        result: the merged result over every attacked image, in ``indices`` order.
        indices: the dataset index of each attacked image.
        clean_accuracy: the model's accuracy on the whole dataset.
        n_images: the number of images in the dataset.
        class_names: the dataset's class names, when known.
        target: the target class of a targeted run, else None.

    Shape:
        indices: (M,) int64, M = ``result.n_images``.
    """

    result: AttackResult
    indices: torch.Tensor
    clean_accuracy: float
    n_images: int
    class_names: list[str] | None
    target: int | None = None

    @property
    def n_attacked(self) -> int:
        """How many images were attacked (all correctly classified)."""
        return self.result.n_images

    @property
    def n_success(self) -> int:
        """How many attacked images the attack fooled."""
        return int(self.result.success.sum())

    @property
    def success_rate(self) -> float:
        """Share of the attacked images fooled (0.0 when none was attacked)."""
        return self.result.success_rate

    def _median_over_successes(self, values: torch.Tensor) -> float | None:
        chosen = values[self.result.success].tolist()
        return float(statistics.median(chosen)) if chosen else None

    @property
    def median_queries(self) -> float | None:
        """Median queries spent on a fooled image (None when none was fooled)."""
        return self._median_over_successes(self.result.queries)

    @property
    def median_pixels_changed(self) -> float | None:
        """Median pixels changed in a fooled image (None when none was fooled)."""
        return self._median_over_successes(self.result.l0_pixels)

    def class_name(self, label: int) -> str:
        """The name of class ``label`` (its number when names are unknown)."""
        if self.class_names is not None and 0 <= label < len(self.class_names):
            return self.class_names[label]
        return str(label)

    def summary(self) -> dict[str, Any]:
        """The run's headline numbers as plain data.

        Medians are over fooled images only; ``success_rate`` is over attacked images.
        """
        return {
            "attack": self.result.attack,
            "params": self.result.params,
            "target": self.target,
            "n_images": self.n_images,
            "clean_accuracy": round(self.clean_accuracy, 6),
            "n_attacked": self.n_attacked,
            "n_success": self.n_success,
            "success_rate": round(self.success_rate, 6),
            "median_queries": self.median_queries,
            "median_pixels_changed": self.median_pixels_changed,
            "pixels_changed_histogram": self.pixels_histogram(),
            "wall_time": round(self.result.wall_time, 4),
        }

    def pixels_histogram(self) -> dict[str, int]:
        """How many fooled images changed each number of pixels, e.g. ``{"1": 4, "3": 9}``."""
        counts = torch.bincount(self.result.l0_pixels[self.result.success].cpu())
        return {str(k): int(c) for k, c in enumerate(counts.tolist()) if c}

    def images(self) -> list[dict[str, Any]]:
        """One plain record per attacked image, starting with its dataset ``index``."""
        return [
            {"index": int(index), **row}
            for index, row in zip(self.indices.tolist(), self.result.per_image(), strict=True)
        ]


def attack_dataset(
    model: Classifier,
    dataset: Dataset,
    attack: Attack,
    *,
    target: int | None = None,
    limit: int | None = None,
    chunk_size: int = 100,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: ProgressCallback | None = None,
) -> AttackRun:
    """Attack the first ``limit`` correctly classified images of ``dataset``.

    Args:
        model: the classifier to fool.
        dataset: the images and labels (all are predicted for the clean accuracy).
        attack: the configured attack; a ``seed`` of None is drawn once per run, so
            every chunk (and a resumed run) uses the same seed.
        target: attack towards this class; images of this class are skipped.
        limit: attack at most this many images (None: every eligible image).
        chunk_size: images per :meth:`Attack.run` call and per checkpoint.
        checkpoint_dir: write a checkpoint here after every chunk (None: none).
        resume: continue the checkpoint in ``checkpoint_dir`` after its last
            finished chunk; without one there, start from the first chunk.
        progress: called as ``progress(images_finished, images_to_attack)``.

    Returns:
        The :class:`AttackRun`; its result lists the attacked images in dataset order.

    Shape:
        dataset.x: (N, C, H, W) float32 in [0, 1] with (C, H, W) = model.input_shape.

    Raises:
        ShapeError: the images do not fit the model.
        RangeError: labels the model cannot output.
        ConfigError: a bad target, limit or chunk size, ``resume`` without a
            ``checkpoint_dir``, or a checkpoint of a different run.
        DataError: a damaged checkpoint.

    Example:
        >>> run = attack_dataset(model, load_data("digits"), PixelDE(pixels=3), limit=20)  # doctest: +SKIP
        >>> run.summary()["success_rate"]  # doctest: +SKIP
        0.95
    """
    _check_arguments(model, dataset, target, limit)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1 image, got {chunk_size}")
    _check_resume(resume, checkpoint_dir)
    pred, conf = _predict(model, dataset.x)
    correct = pred == dataset.y
    eligible = correct if target is None else correct & (dataset.y != target)
    indices = eligible.nonzero().flatten()[:limit]
    clean_accuracy = float(correct.float().mean())
    logger.info(
        "clean accuracy %.4f on %d images; attacking %d", clean_accuracy, len(dataset), len(indices)
    )

    settings = {
        "attack": {"name": attack.name, **attack.to_dict()},
        "target": target,
        "limit": limit,
        "chunk_size": chunk_size,
    }
    identity = run_identity(model, dataset, settings)
    store = Checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    seed, stored = open_checkpoint(store, identity, pred, conf, attack.seed, resume)
    configured = dataclasses.replace(attack, seed=seed)
    results = {number: result_from_arrays(a, configured, seed) for number, a in stored.items()}

    chunks = indices.split(chunk_size)
    total = int(indices.numel())
    finished = sum(r.n_images for r in results.values())
    for number, chunk in enumerate(chunks):
        if number in results:
            continue
        result = configured.run(
            model,
            dataset.x[chunk],
            dataset.y[chunk],
            target=target,
            progress=_shifted(progress, finished, total),
        )
        if store is not None:
            store.save_chunk(number, result_to_arrays(result))
        results[number] = result
        finished += result.n_images
        logger.info(
            "chunk %d/%d: %d/%d fooled",
            number + 1,
            len(chunks),
            int(result.success.sum()),
            len(chunk),
        )
        if progress is not None:
            progress(finished, total)

    done = [results[number] for number in sorted(results)]
    if not done:
        done.append(configured.run(model, dataset.x[:0], dataset.y[:0], target=target))
    return AttackRun(
        result=merge_results(done),
        indices=indices,
        clean_accuracy=clean_accuracy,
        n_images=len(dataset),
        class_names=dataset.class_names,
        target=target,
    )


def _shifted(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    """A chunk's progress callback reporting images finished over the whole run."""
    if progress is None:
        return None
    report = progress

    def shifted(done: int, _chunk_total: int) -> None:
        report(offset + done, total)

    return shifted


def _check_resume(resume: bool, checkpoint_dir: str | Path | None) -> None:
    if resume and checkpoint_dir is None:
        raise ConfigError("resume needs a checkpoint folder (checkpoint_dir)")


def _check_arguments(
    model: Classifier, dataset: Dataset, target: int | None, limit: int | None
) -> None:
    if dataset.image_shape != tuple(model.input_shape):
        raise ShapeError(
            f"the images of {dataset.source} have shape {dataset.image_shape} but the model "
            f"expects {tuple(model.input_shape)}"
        )
    check_labels(dataset.y, len(dataset), model.num_classes, name=f"labels of {dataset.source}")
    k = model.num_classes
    if target is not None and not 0 <= target < k:
        raise ConfigError(
            f"target class {target} is out of range: the model has {k} classes (0..{k - 1})"
        )
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 image, got {limit}")


def _predict(model: Classifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean predictions and their confidences, in chunks of :data:`PREDICT_CHUNK`."""
    output = OutputKind(model.capabilities.output)
    preds, confs = [], []
    for chunk in x.split(PREDICT_CHUNK):
        conf, pred = probabilities(model.predict(chunk), output).max(dim=1)
        preds.append(pred.cpu())
        confs.append(conf.cpu())
    return torch.cat(preds), torch.cat(confs)
