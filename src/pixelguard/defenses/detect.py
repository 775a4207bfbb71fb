"""Detectors: score how suspicious each image is, and flag the ones above a threshold.

A detector is fitted on clean images only. Its threshold is set on clean images it
did not learn from (a seeded split of ``fit``'s images, or an explicit calibration
set) as a split-conformal quantile, so the false-positive rate on new clean images
is at most the requested one. Scores are "higher = more suspicious".

References:
    Xu, Evans, Qi. "Feature squeezing: detecting adversarial examples in deep neural
    networks." NDSS 2018. arXiv:1704.01155.
    Gao et al. "STRIP: a defence against trojan attacks on deep neural networks."
    ACSAC 2019. arXiv:1902.06531.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from pixelguard.checks import check_images
from pixelguard.defenses.detection_metrics import conformal_threshold
from pixelguard.defenses.filters import Squeezer, median_deviation, parse_squeezer
from pixelguard.errors import ConfigError, NotFittedError
from pixelguard.models.base import DEFAULT_BATCH_SIZE, Classifier, OutputKind, probabilities
from pixelguard.registry import Registry

logger = logging.getLogger(__name__)


class Detector(ABC):
    """Base detector: ``fit(clean)``, ``score(x)``, thresholds for a target false-positive rate.

    Subclasses implement :meth:`score`; one that learns from clean images sets
    ``trainable = True`` and implements :meth:`_fit`. ``fit`` then holds out a
    seeded ``calibration_fraction`` of its images for the threshold. A detector that
    learns nothing (both shipped here) calibrates on all of them: nothing it computes
    depends on them, so they are held out by construction.

    Args:
        fpr: the false-positive rate :attr:`threshold` and :meth:`flag` aim at.
        calibration_fraction: share of ``fit``'s images held out for calibration
            (trainable detectors only), in (0, 1).
        seed: seed of that split.
        batch_size: most images scored at once.

    Shape:
        score: x (N, C, H, W) float32 in [0, 1] -> (N,) float32.
        flag: x (N, C, H, W) -> (N,) bool.
    """

    name: ClassVar[str] = "detector"
    trainable: ClassVar[bool] = False

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        calibration_fraction: float = 0.5,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if not 0.0 <= fpr <= 1.0:
            raise ConfigError(f"{self.name}: fpr must lie in [0, 1], got {fpr}")
        if not 0.0 < calibration_fraction < 1.0:
            raise ConfigError(
                f"{self.name}: calibration_fraction must lie in (0, 1), got {calibration_fraction}"
            )
        if batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be at least 1, got {batch_size}")
        self.fpr = fpr
        self.calibration_fraction = calibration_fraction
        self.seed = seed
        self.batch_size = batch_size
        self.calibration_scores: torch.Tensor | None = None

    def fit(self, clean: torch.Tensor, *, calibration: torch.Tensor | None = None) -> Detector:
        """Learn from clean images (trainable detectors) and calibrate the threshold.

        Args:
            clean: clean images.
            calibration: clean images held out for the threshold; default: a seeded
                split of ``clean`` for trainable detectors, all of ``clean`` otherwise.

        Returns:
            The detector itself.

        Shape:
            clean, calibration: (N, C, H, W) float32 in [0, 1].
        """
        check_images(clean, name="clean")
        if calibration is not None:
            check_images(calibration, name="calibration")
            train = clean
        elif self.trainable:
            order = torch.randperm(
                clean.shape[0], generator=torch.Generator().manual_seed(self.seed)
            )
            n_cal = max(1, round(clean.shape[0] * self.calibration_fraction))
            calibration, train = (
                clean[order[:n_cal].to(clean.device)],
                clean[order[n_cal:].to(clean.device)],
            )
        else:
            calibration, train = clean, clean[:0]
        if self.trainable:
            self._fit(train)
        self.calibration_scores = self.score(calibration).detach().cpu()
        logger.info(
            "%s: calibrated on %d clean images; threshold at fpr %g: %g",
            self.name,
            calibration.shape[0],
            self.fpr,
            self.threshold,
        )
        return self

    def _fit(self, clean: torch.Tensor) -> None:
        """Learn from clean images; only called when ``trainable`` is True."""
        raise ConfigError(f"{self.name} declares trainable=True but does not implement _fit")

    @abstractmethod
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """How suspicious each image is (higher = more).

        Shape:
            x: (N, C, H, W) float32 in [0, 1] -> (N,) float32 on x's device.
        """

    def threshold_for_fpr(self, fpr: float) -> float:
        """The score above which at most ``fpr`` of new clean images are flagged.

        The split-conformal ``(1 - fpr)`` quantile of the held-out calibration scores
        (:func:`~pixelguard.defenses.detection_metrics.conformal_threshold`).

        Raises:
            NotFittedError: :meth:`fit` has not run.
        """
        if self.calibration_scores is None:
            raise NotFittedError(
                f"{self.name}: call fit(clean_images) before asking for a threshold"
            )
        return conformal_threshold(self.calibration_scores, fpr)

    @property
    def threshold(self) -> float:
        """The threshold for this detector's ``fpr``."""
        return self.threshold_for_fpr(self.fpr)

    def flag(self, x: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Which images score above ``threshold`` (default: :attr:`threshold`).

        Shape:
            x: (N, C, H, W) -> (N,) bool.
        """
        limit = self.threshold if threshold is None else threshold
        return self.score(x) > limit

    def params(self) -> dict[str, Any]:
        """The configuration as plain data, for reports."""
        return {"detector": self.name, "fpr": self.fpr, "seed": self.seed}


class FeatureSqueezingDetector(Detector):
    """Flag images whose prediction moves when the image is squeezed.

    The score is the largest, over the squeezers, L1 distance between the model's
    probability vectors on ``x`` and on ``squeeze(x)`` (Xu et al.): in [0, 2]. Clean
    images barely move; few-pixel adversarial images often fall back to their class
    once a median filter removes the changed pixels.

    Choose squeezers that leave clean predictions alone: one that changes many clean
    predictions raises the clean scores and hides the adversarial ones. Measured on
    a small CNN for 8x8 digits, where a 3x3 median costs 23 points of accuracy: the
    default pair reaches an AUROC of about 0.72 against 3-pixel attacks, ``("bits4",)``
    about 0.94.

    Args:
        model: the classifier to protect (scores of any output kind).
        squeezers: short names, see :func:`~pixelguard.defenses.filters.parse_squeezer`:
            ``"median3"``, ``"bits4"``, ``"jpeg75"``, ...
        fpr, calibration_fraction, seed, batch_size: see :class:`Detector`.

    References:
        Xu, Evans, Qi. "Feature squeezing: detecting adversarial examples in deep
        neural networks." NDSS 2018. arXiv:1704.01155.
    """

    name = "feature-squeezing"

    def __init__(
        self,
        model: Classifier,
        squeezers: Sequence[str] | str = ("median3", "bits4"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(squeezers, str):
            squeezers = [name.strip() for name in squeezers.split(",") if name.strip()]
        if not squeezers:
            raise ConfigError(
                f"{self.name}: squeezers must be a non-empty list of names, got {squeezers!r}"
            )
        self.model = model
        self.squeezers = tuple(squeezers)
        self._squeeze: list[Squeezer] = [parse_squeezer(s) for s in self.squeezers]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        output = self.model.capabilities.output
        scores = []
        with torch.no_grad():
            for chunk in torch.split(x, self.batch_size):
                base = probabilities(self.model.predict(chunk), output)
                distance = torch.stack(
                    [
                        (probabilities(self.model.predict(squeeze(chunk)), output) - base)
                        .abs()
                        .sum(dim=1)
                        for squeeze in self._squeeze
                    ]
                )
                scores.append(distance.amax(dim=0))
        return torch.cat(scores) if scores else x.new_zeros(0)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "squeezers": list(self.squeezers)}


class IsolatedPixelDetector(Detector):
    """Flag images with pixels far from their neighbourhood median: model-free.

    The score is the sum of the ``top`` largest deviations of a pixel from the median
    of its ``size x size`` neighbourhood (worst channel), in [0, ``top``]. Few-pixel
    attacks push pixels to the corners of the colour cube, where they stand out from
    their neighbours; natural images rarely have such isolated pixels.

    The default ``top=3`` is measured, not guessed: on MNIST, 1.6% of clean digits
    have one pixel that deviates fully (a stroke end), so the single-worst-pixel score
    (``top=1``) ties clean and adversarial images at its maximum and cannot reach a 1%
    false-positive rate; summing three deviations detects 89% of 10-pixel sparse-rs
    adversarials at 1% FPR (BENCHMARKS.md).

    Args:
        size: median window side, at least 2.
        top: how many of the largest deviations are summed (1: the single worst pixel).
        fpr, calibration_fraction, seed, batch_size: see :class:`Detector`.
    """

    name = "isolated-pixel"

    def __init__(self, size: int = 3, top: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if size < 2:
            raise ConfigError(f"{self.name}: size must be at least 2, got {size}")
        if top < 1:
            raise ConfigError(f"{self.name}: top must be at least 1, got {top}")
        self.size = size
        self.top = top

    def score(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        scores = []
        for chunk in torch.split(x, self.batch_size):
            deviation = median_deviation(chunk.detach(), self.size).flatten(1)
            k = min(self.top, deviation.shape[1])
            scores.append(deviation.topk(k, dim=1).values.sum(dim=1))
        return torch.cat(scores) if scores else x.new_zeros(0)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "size": self.size, "top": self.top}


class StripDetector(Detector):
    """Flag inputs whose prediction survives being blended with clean images: STRIP.

    A backdoor trigger dominates whatever it is stamped on, so an input carrying one
    keeps its (target) prediction when it is superimposed with random clean images,
    and the predictions stay certain; a clean input blended with another image
    becomes ambiguous. The score is minus the mean Shannon entropy (bits) of the
    model's predictions on ``samples`` superimpositions of the input with clean
    images (Gao et al.): higher = more suspicious. For a model that returns only
    labels, the entropy is that of the labels' histogram over the blends.

    ``blend="add"`` superimposes as the paper does, ``min(x + clean, 1)``, which keeps
    a bright trigger at full strength; ``blend="average"`` is ART's ``(x + clean) / 2``,
    which halves it. Which works better depends on the images (BENCHMARKS.md): on MNIST
    (white trigger, black background) ``add`` detects 98.8% of triggered inputs at 1%
    FPR and ``average`` 53.7%; on CIFAR-10 photographs, which the sum washes out,
    ``average`` detects 81.8% and ``add`` 64.5%.

    :meth:`fit` draws the ``samples`` clean images to blend with from its training part
    (with ``seed``), so the threshold is calibrated on other clean images. Every input is
    blended with the same ones, so its score does not depend on what else is in the
    batch (an attack's verification pass scores it as the attack did), and its blends
    go to the model in one batch.

    Args:
        model: the (possibly backdoored) classifier to protect.
        samples: blends per input (the paper uses 100 at test time; 32 by default).
        blend: ``"add"`` (the paper's saturating sum) or ``"average"``.
        fpr, calibration_fraction, seed, batch_size: see :class:`Detector`.

    References:
        Gao, Xu, Wang, Chen, Ranasinghe, Nepal. "STRIP: a defence against trojan
        attacks on deep neural networks." ACSAC 2019. arXiv:1902.06531.
    """

    name = "strip"
    trainable = True

    blends: ClassVar[tuple[str, ...]] = ("add", "average")

    def __init__(
        self, model: Classifier, samples: int = 32, blend: str = "add", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ConfigError(f"{self.name}: samples must be a whole number >= 1, got {samples!r}")
        if blend not in self.blends:
            raise ConfigError(
                f"{self.name}: blend must be one of {', '.join(self.blends)}, got {blend!r}"
            )
        self.model = model
        self.samples = samples
        self.blend = blend
        self.overlays: torch.Tensor | None = None

    def _fit(self, clean: torch.Tensor) -> None:
        if clean.shape[0] == 0:
            raise ConfigError(f"{self.name}: needs clean images to blend inputs with")
        generator = torch.Generator().manual_seed(self.seed)
        n = clean.shape[0]
        picks = (
            torch.randperm(n, generator=generator)[: self.samples]
            if n >= self.samples
            else torch.randint(n, (self.samples,), generator=generator)
        )
        self.overlays = clean[picks.to(clean.device)].detach().cpu()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        if self.overlays is None:
            raise NotFittedError(f"{self.name}: call fit(clean_images) before scoring")
        per_call = max(1, self.batch_size // self.samples)
        overlays = self.overlays.to(x.device).unsqueeze(0)
        scores = []
        with torch.no_grad():
            for chunk in torch.split(x, per_call):
                blends = chunk.unsqueeze(1) + overlays
                blends = blends.clamp_max(1.0) if self.blend == "add" else blends / 2
                predicted = self.model.predict(blends.flatten(0, 1))
                scores.append(-self._mean_entropy(predicted.view(chunk.shape[0], self.samples, -1)))
        return torch.cat(scores) if scores else x.new_zeros(0)

    def _mean_entropy(self, scores: torch.Tensor) -> torch.Tensor:
        """Each input's mean prediction entropy in bits over its blends (label models:
        the entropy of its blends' label histogram).

        Shape:
            scores: (N, samples, K) -> (N,).
        """
        output = self.model.capabilities.output
        if output is OutputKind.LABELS:
            counts = torch.nn.functional.one_hot(scores.argmax(dim=2), scores.shape[2]).sum(dim=1)
            share = counts.float() / self.samples
            return -(share * torch.log2(share.clamp_min(1e-12))).sum(dim=1)
        p = probabilities(scores.flatten(0, 1), output).clamp_min(1e-12)
        return -(p * torch.log2(p)).sum(dim=1).view(scores.shape[:2]).mean(dim=1)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "samples": self.samples, "blend": self.blend}


detectors: Registry[Detector] = Registry("detector")
"""Detector factories ``factory(model, **params)``; model-free detectors ignore the model."""
detectors.register(FeatureSqueezingDetector.name)(FeatureSqueezingDetector)
detectors.register(IsolatedPixelDetector.name)(
    lambda model, **params: IsolatedPixelDetector(**params)
)
detectors.alias("isolated-pixels", IsolatedPixelDetector.name)
detectors.register(StripDetector.name)(StripDetector)


def create_detector(name: str, model: Classifier, **params: Any) -> Detector:
    """Build a registered detector for ``model``, e.g. ``create_detector("isolated-pixel", m)``.

    Raises:
        ConfigError: an unknown name or invalid parameters.
    """
    factory = detectors.get(name)
    try:
        return factory(model, **params)
    except TypeError as error:
        raise ConfigError(
            f"{name}: invalid detector parameters {sorted(params)} ({error})"
        ) from None


def list_detectors() -> list[str]:
    """Names of the registered detectors."""
    return detectors.names()
