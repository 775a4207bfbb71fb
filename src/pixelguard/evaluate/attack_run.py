"""Attack the correctly classified images of a dataset, chunk by chunk, resumably.

:func:`attack_dataset` predicts the whole dataset, picks the images the model gets
right, and attacks them in chunks (one vectorised :meth:`Attack.run` per chunk).
After every chunk it can write a checkpoint, so a killed run resumes after its last
finished chunk instead of starting over. A model behind an HTTP endpoint also has its
wire statistics (requests sent, retries, 429 answers, cache hits, what was charged)
recorded per chunk, so a resumed run reports what the whole run sent.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
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
from pixelguard.models.base import (
    Classifier,
    ClassifierWrapper,
    OutputKind,
    model_device,
    probabilities,
)

logger = logging.getLogger(__name__)

PREDICT_CHUNK = 4096
"""Images per clean-prediction call (the adapter splits further by its batch size)."""
CHANCE_MIN_IMAGES = 20
"""Fewest images on which a clean accuracy near chance is taken as a warning sign."""
CHANCE_MARGIN = 0.1
"""A clean accuracy within this share of the way from chance to 100% is "near chance"."""
WIRE_PREFIX = "wire."
"""Prefix of the chunk-checkpoint arrays holding the wire counters that chunk spent."""


@runtime_checkable
class WireCounted(Protocol):
    """A model that counts what it sends over the wire (the HTTP adapter).

    ``stats`` gives counters such as ``requests_sent``, ``retries``, ``rate_limited``,
    ``cache_hits``, ``requests_charged``; ``report()`` gives the endpoint's settings,
    among them its wire budget ``max_requests`` and ``max_images``.
    """

    @property
    def stats(self) -> dict[str, int]: ...

    def report(self) -> dict[str, Any]: ...


def find_endpoint(model: Classifier) -> WireCounted | None:
    """The wire-counting model inside ``model``, looking through wrappers, or None.

    Defenses, :class:`~pixelguard.models.resize.ResizeInput`, query counters and every
    other :class:`~pixelguard.models.base.ClassifierWrapper` are looked through.
    """
    inner: object = model
    while not isinstance(inner, WireCounted):
        if not isinstance(inner, ClassifierWrapper):
            return None
        inner = inner.model
    return inner


@dataclass(frozen=True)
class WireStats:
    """What a run sent to an HTTP endpoint, over every session of a resumed run.

    Attributes:
        counts: the endpoint's counters spent by the run, by name (see
            ``HttpClassifier.stats``): ``requests_sent`` (every attempt),
            ``requests_failed``, ``retries``, ``rate_limited`` (429 answers),
            ``cache_hits``, ``images_sent``, ``requests_charged``, ``images_charged``.
        max_requests: the endpoint's budget of charged requests (None: unlimited).
        max_images: its budget of charged images (None: unlimited).
    """

    counts: dict[str, int]
    max_requests: int | None = None
    max_images: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        """The counters and the budget as one flat, JSON-serialisable dict."""
        return {**self.counts, "max_requests": self.max_requests, "max_images": self.max_images}


class _WireMeter:
    """The counters an endpoint spent since the previous :meth:`take` (or since creation)."""

    def __init__(self, endpoint: WireCounted | None) -> None:
        self.endpoint = endpoint
        self._mark = dict(endpoint.stats) if endpoint is not None else {}

    def take(self) -> dict[str, int]:
        """The counters spent since the last call, by name ({} without an endpoint)."""
        if self.endpoint is None:
            return {}
        now = dict(self.endpoint.stats)
        spent = {name: value - self._mark.get(name, 0) for name, value in now.items()}
        self._mark = now
        return spent

    def stats(self, spent: list[dict[str, int]]) -> WireStats | None:
        """The run's :class:`WireStats`: the chunks' ``spent`` counters plus what is untaken."""
        if self.endpoint is None:
            return None
        total: dict[str, int] = {}
        for counts in [*spent, self.take()]:
            for name, value in counts.items():
                total[name] = total.get(name, 0) + value
        settings = self.endpoint.report()
        return WireStats(total, settings.get("max_requests"), settings.get("max_images"))


@dataclass(frozen=True)
class AttackRun:
    """One attack over a dataset: which images were attacked and what happened.

    Attributes:
        result: the merged result over every attacked image, in ``indices`` order; its
            ``attack``, ``params``, ``budget`` and ``seed`` say exactly what ran.
        indices: the dataset index of each attacked image.
        clean_accuracy: the model's accuracy on the whole dataset.
        n_images: the number of images in the dataset.
        n_correct: how many of them the model classified correctly.
        class_names: the dataset's class names, when known.
        target: the target class of a targeted run, else None.
        n_already_target: correctly classified images not attacked because they
            already are of the target class.
        warnings: signs that the run measured something else than intended (a clean
            accuracy near chance), each one sentence.
        wire: what went over the wire when the model is an HTTP endpoint, else None.
        source: where the images came from.

    Shape:
        indices: (M,) int64, M = ``result.n_images``.
    """

    result: AttackResult
    indices: torch.Tensor
    clean_accuracy: float
    n_images: int
    n_correct: int
    class_names: list[str] | None
    target: int | None = None
    n_already_target: int = 0
    warnings: tuple[str, ...] = ()
    wire: WireStats | None = None
    source: str | None = None

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

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the attacked images."""
        c, h, w = self.result.x_adv.shape[1:]
        return int(c), int(h), int(w)

    def idle_reason(self) -> str | None:
        """Why no image was attacked, e.g. ``"40 correctly classified, all already of the
        target class 5"`` (None when some were)."""
        if self.n_attacked:
            return None
        if self.n_correct and self.target is not None:
            return (
                f"{self.n_correct:,} correctly classified, all already of the target class "
                f"{self.class_name(self.target)}"
            )
        return f"the model classified none of the {self.n_images:,} images correctly"

    def summary(self) -> dict[str, Any]:
        """The run's headline numbers as plain data.

        ``attack``, ``params``, ``budget`` (queries per image, None: the attack's own
        limit) and ``seed`` repeat the run. Medians are over fooled images only;
        ``success_rate`` is over attacked images. ``wire`` is :meth:`WireStats.to_dict`
        for an HTTP endpoint, else None.
        """
        return {
            "attack": self.result.attack,
            "params": self.result.params,
            "budget": self.result.budget,
            "seed": self.result.seed,
            "target": self.target,
            "n_images": self.n_images,
            "clean_accuracy": round(self.clean_accuracy, 6),
            "n_correct": self.n_correct,
            "n_already_target": self.n_already_target,
            "n_attacked": self.n_attacked,
            "n_success": self.n_success,
            "success_rate": round(self.success_rate, 6),
            "median_queries": self.median_queries,
            "median_pixels_changed": self.median_pixels_changed,
            "pixels_changed_histogram": self.pixels_histogram(),
            "wall_time": round(self.result.wall_time, 4),
            "warnings": list(self.warnings),
            "wire": self.wire.to_dict() if self.wire is not None else None,
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
        progress: called as ``progress(images_finished, images_to_attack)``, also
            while a chunk runs, as its attack reports images finished.

    Returns:
        The :class:`AttackRun`; its result lists the attacked images in dataset order.
        When the model is (or wraps) an HTTP endpoint, its ``wire`` statistics are
        what the run sent: the clean predictions and every chunk, those of earlier
        sessions of a resumed run included (not those of a chunk that was in flight
        when a session was killed). A clean accuracy near chance is logged as a
        warning and listed in ``warnings``.

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
    meter = _WireMeter(find_endpoint(model))
    _check_arguments(model, dataset, target, limit)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1 image, got {chunk_size}")
    _check_resume(resume, checkpoint_dir)
    pred, conf = _predict(model, dataset.x)
    correct = pred == dataset.y
    already_target = (
        correct & (dataset.y == target) if target is not None else torch.zeros_like(correct)
    )
    indices = (correct & ~already_target).nonzero().flatten()[:limit]
    clean_accuracy = float(correct.float().mean()) if len(dataset) else 0.0
    logger.info(
        "clean accuracy %.4f on %d images; attacking %d", clean_accuracy, len(dataset), len(indices)
    )
    warnings = _chance_warnings(clean_accuracy, dataset.y)
    for warning in warnings:
        logger.warning(warning)

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
    results: dict[int, AttackResult] = {}
    spent: list[dict[str, int]] = []
    for number, arrays in stored.items():
        result_arrays, wire = _split_chunk(arrays)
        results[number] = result_from_arrays(result_arrays, configured, seed)
        spent.append(wire)

    device = model_device(model)  # every tensor the attack keeps lives where the model runs
    chunks = indices.split(chunk_size)
    total = int(indices.numel())
    finished = sum(r.n_images for r in results.values())
    for number, chunk in enumerate(chunks):
        if number in results:
            continue
        result = configured.run(
            model,
            dataset.x[chunk].to(device),
            dataset.y[chunk].to(device),
            target=target,
            progress=_shifted(progress, finished, total),
        ).cpu()
        spent.append(meter.take())
        if store is not None:
            store.save_chunk(number, _chunk_arrays(result, spent[-1]))
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
    run = AttackRun(
        result=merge_results(done),
        indices=indices,
        clean_accuracy=clean_accuracy,
        n_images=len(dataset),
        n_correct=int(correct.sum()),
        class_names=dataset.class_names,
        target=target,
        n_already_target=int(already_target.sum()),
        warnings=tuple(warnings),
        wire=meter.stats(spent),
        source=dataset.source,
    )
    reason = run.idle_reason()
    if reason is not None:
        logger.warning("no image was attacked: %s", reason)
    return run


def _shifted(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    """A chunk's progress callback reporting images finished over the whole run."""
    if progress is None:
        return None
    report = progress

    def shifted(done: int, _chunk_total: int) -> None:
        report(offset + done, total)

    return shifted


def _chunk_arrays(result: AttackResult, wire: dict[str, int]) -> dict[str, np.ndarray]:
    """A finished chunk as its checkpoint stores it: the result and the wire counters spent."""
    counters = {
        WIRE_PREFIX + name: np.asarray(value, dtype=np.int64) for name, value in wire.items()
    }
    return {**result_to_arrays(result), **counters}


def _split_chunk(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The arrays of :func:`_chunk_arrays` back as result arrays and wire counters."""
    wire = {k: v for k, v in arrays.items() if k.startswith(WIRE_PREFIX)}
    rest = {k: v for k, v in arrays.items() if k not in wire}
    return rest, {k.removeprefix(WIRE_PREFIX): int(v) for k, v in wire.items()}


def _chance_warnings(accuracy: float, y: torch.Tensor) -> list[str]:
    """A warning when the clean accuracy is near chance on enough images, else none.

    Chance is what always answering the most common label scores; "near" is within
    :data:`CHANCE_MARGIN` of the way from there to 100% (19% for ten balanced
    classes), on at least :data:`CHANCE_MIN_IMAGES` images. A model that sees its
    input as it was trained does far better; one fed the wrong preprocessing does not.
    """
    n = len(y)
    if n < CHANCE_MIN_IMAGES:
        return []
    chance = int(torch.bincount(y).max()) / n
    if accuracy > chance + CHANCE_MARGIN * (1 - chance):
        return []
    return [
        f"clean accuracy {accuracy:.1%} on {n:,} images is at or near chance ({chance:.1%}, "
        "always answering the most common class): the model probably does not see the "
        "images as it was trained to. Check its input preprocessing: mean and std "
        "(--mean, --std), the value scale (0..1 or 0..255: --scale 255), the layout "
        "(NCHW or NHWC: --layout nhwc), and that class numbers mean the same classes in "
        "the model and the labels (--class-names)"
    ]


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
