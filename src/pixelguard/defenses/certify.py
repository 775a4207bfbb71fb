"""Certified pixel robustness by randomized ablation (Levine and Feizi).

The smoothed classifier votes over random ablations that keep ``k`` of the ``d``
pixels. Changing ``rho`` pixels can only alter the votes of ablations that keep at
least one of them, a fraction ``Delta(rho) = 1 - C(d - rho, k) / C(d, k)`` of all
ablations. So if the top class wins at least ``p`` of the votes and
``p - Delta(rho) > 1/2``, no change of ``rho`` pixels (any values, any channels)
changes the smoothed prediction. ``certify`` estimates a lower confidence bound on
``p`` (Clopper-Pearson, level ``1 - alpha``) from ablations independent of those that
chose the class, and returns the largest such ``rho`` as the certified radius.

References:
    Levine, Feizi. "Robustness certificates for sparse adversarial attacks by
    randomized ablation." AAAI 2020. arXiv:1911.09272.
    Cohen, Rosenfeld, Kolter. "Certified adversarial robustness via randomized
    smoothing." ICML 2019. arXiv:1902.02918 (the select-then-estimate procedure).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from pixelguard.checks import check_images, check_labels
from pixelguard.defenses.ablation import ablation_masks, check_keep, encode_ablated
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.metrics.intervals import clopper_pearson_lower
from pixelguard.models.base import Capabilities, OutputKind
from pixelguard.models.torch import TorchClassifier

logger = logging.getLogger(__name__)

_ROUNDING_SLACK = 1e-9
"""How much stricter than ``> 1/2`` the radius condition is evaluated in float64."""


def ablation_delta(rho: torch.Tensor | int, pixels: int, keep: int) -> torch.Tensor:
    """``Delta(rho) = 1 - C(d - rho, k) / C(d, k)``: the share of ablations that keep
    at least one of ``rho`` given pixels, from log-binomials (float64).

    Shape:
        rho: any shape, integers in [0, d] -> same shape, float64 in [0, 1].

    Example:
        >>> round(float(ablation_delta(1, 64, 8)), 6)
        0.125
    """
    rho_t = torch.as_tensor(rho, dtype=torch.float64)
    d, k = float(pixels), float(keep)
    left = d - rho_t
    log_ratio = (
        torch.lgamma(left + 1)
        - torch.lgamma((left - k).clamp_min(0) + 1)
        - torch.lgamma(torch.tensor(d + 1, dtype=torch.float64))
        + torch.lgamma(torch.tensor(d - k + 1, dtype=torch.float64))
    )
    ratio = torch.where(left >= k, log_ratio.exp(), torch.zeros_like(log_ratio))
    return 1.0 - ratio


def certified_radius(p_lower: torch.Tensor, pixels: int, keep: int) -> torch.Tensor:
    """The largest ``rho`` with ``p_lower - Delta(rho) > 1/2``, or -1 (abstain)
    where ``p_lower <= 1/2``.

    The comparison is made ``_ROUNDING_SLACK`` stricter, so floating-point rounding
    in ``Delta`` can only shrink a radius, never grow it.

    Shape:
        p_lower: (N,) in [0, 1] -> (N,) int64 in [-1, d - k].
    """
    deltas = ablation_delta(torch.arange(pixels + 1), pixels, keep)
    holds = p_lower.to(torch.float64).unsqueeze(1) - deltas.unsqueeze(0) > 0.5 + _ROUNDING_SLACK
    # Delta grows with rho, so the radii that hold form a prefix 0..r.
    return holds.sum(dim=1) - 1


class RandomizedAblation:
    """The ablation-smoothed classifier: predict by vote, certify a pixel radius.

    The same ablation masks (drawn from ``seed``) serve every image of a call, so
    ``predict`` is a deterministic function of each image; selection and estimation
    in :meth:`certify` use separate, independent draws.

    Args:
        base_module: a network on 2C-channel ablation encodings (see
            :func:`~pixelguard.defenses.ablation.train_ablation_classifier`).
        input_shape: ``(C, H, W)`` of the images to classify.
        keep: pixels kept per ablation (as in training).
        samples: ablations per image for :meth:`predict` and for estimating the
            vote probability in :meth:`certify` (the paper: 10,000 on MNIST).
        samples_select: ablations per image that choose the class to certify.
        alpha: the certificate fails with probability at most ``alpha`` per image.
        seed: seed of the ablations.
        batch_size: most encodings per forward pass.
        device: where the base module runs; default: where it is.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) vote fractions.
        certify: x (N, C, H, W) -> pred (N,) int64, radius (N,) int64 (-1 = abstain).

    Raises:
        ConfigError: invalid ``keep``, sample counts or ``alpha``.

    References:
        Levine, Feizi. AAAI 2020. arXiv:1911.09272.
    """

    def __init__(
        self,
        base_module: nn.Module,
        input_shape: tuple[int, int, int],
        keep: int,
        *,
        samples: int = 1000,
        samples_select: int = 100,
        alpha: float = 0.05,
        seed: int = 0,
        batch_size: int = 8192,
        device: str | torch.device | None = None,
    ) -> None:
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ConfigError(f"input_shape must be (C, H, W), got {input_shape}")
        c, h, w = (int(v) for v in input_shape)
        check_keep(keep, (h, w))
        if samples < 1 or samples_select < 1:
            raise ConfigError(
                f"samples and samples_select must be positive, got {samples}, {samples_select}"
            )
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"alpha must lie in (0, 1), got {alpha}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.base = TorchClassifier(
            base_module, (2 * c, h, w), output="logits", batch_size=batch_size, device=device
        )
        self.input_shape = (c, h, w)
        self.keep = keep
        self.samples = samples
        self.samples_select = samples_select
        self.alpha = alpha
        self.seed = seed
        self.batch_size = batch_size

    @property
    def num_classes(self) -> int:
        return self.base.num_classes

    @property
    def pixels(self) -> int:
        """d, the number of pixel positions."""
        return self.input_shape[1] * self.input_shape[2]

    @property
    def capabilities(self) -> Capabilities:
        """Vote fractions (probabilities), no gradients, deterministic."""
        return Capabilities(output=OutputKind.PROBABILITIES, gradients=False, deterministic=True)

    def params(self) -> dict[str, object]:
        """The configuration as plain data, for reports."""
        return {
            "certifier": "randomized-ablation",
            "keep": self.keep,
            "samples": self.samples,
            "samples_select": self.samples_select,
            "alpha": self.alpha,
            "seed": self.seed,
        }

    def _check(self, x: torch.Tensor) -> None:
        check_images(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ShapeError(
                f"the model expects images of shape {self.input_shape}, got {tuple(x.shape[1:])}"
            )

    def vote_counts(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """How many of the ablations ``masks`` the base classifier gives each class.

        Shape:
            x: (N, C, H, W); masks: (S, 1, H, W) bool -> (N, K) int64 summing to S per row.
        """
        n, s = x.shape[0], masks.shape[0]
        counts = torch.zeros((n, self.num_classes), dtype=torch.int64)
        per_forward = min(s, self.batch_size)
        images_per_forward = max(1, self.batch_size // per_forward)
        with torch.no_grad():
            for mask_chunk in torch.split(masks.to(x.device), per_forward):
                m = mask_chunk.shape[0]
                for start in range(0, n, images_per_forward):
                    xb = x[start : start + images_per_forward]
                    encoded = encode_ablated(xb.unsqueeze(1), mask_chunk.unsqueeze(0))
                    votes = self.base.predict(encoded.flatten(0, 1)).argmax(dim=1).cpu()
                    counts[start : start + xb.shape[0]] += torch.nn.functional.one_hot(
                        votes.view(xb.shape[0], m), self.num_classes
                    ).sum(dim=1)
        return counts

    def _masks(self, generator: torch.Generator, n: int) -> torch.Tensor:
        return ablation_masks(n, self.input_shape[1:], self.keep, generator)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Vote fractions over ``samples`` ablations (the smoothed classifier's argmax is the prediction)."""
        self._check(x)
        masks = self._masks(torch.Generator().manual_seed(self.seed), self.samples)
        return (self.vote_counts(x, masks).double() / self.samples).to(torch.float32).to(x.device)

    def certify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict and certify each image: the class, and the pixel radius it provably holds.

        The top class of ``samples_select`` ablations is chosen; ``samples``
        independent ablations bound its vote probability from below (Clopper-Pearson
        at ``1 - alpha``); the radius is :func:`certified_radius` of that bound. With
        probability at least ``1 - alpha`` per image, no change of ``radius`` pixels
        changes the smoothed prediction.

        Returns:
            ``pred`` (the selected class, also where abstaining) and ``radius``
            (-1: abstain, the votes are too split to certify even the clean image).

        Shape:
            x: (N, C, H, W) float32 in [0, 1] -> (N,) int64, (N,) int64, on the CPU.
        """
        self._check(x)
        generator = torch.Generator().manual_seed(self.seed)
        pred = self.vote_counts(x, self._masks(generator, self.samples_select)).argmax(dim=1)
        counts = self.vote_counts(x, self._masks(generator, self.samples))
        top = counts.gather(1, pred.view(-1, 1)).squeeze(1)
        p_lower = clopper_pearson_lower(top, self.samples, self.alpha)
        radius = certified_radius(p_lower, self.pixels, self.keep)
        logger.info(
            "randomized ablation (k=%d of %d): certified %d of %d images, median radius %s",
            self.keep,
            self.pixels,
            int((radius >= 0).sum()),
            x.shape[0],
            int(radius.median()) if radius.numel() else "n/a",
        )
        return pred, radius


def certified_accuracy(
    pred: torch.Tensor, radius: torch.Tensor, y: torch.Tensor, radii: Sequence[int]
) -> list[float]:
    """Certified accuracy at each radius: the share of images with ``pred == y`` and
    ``radius >= r``.

    Shape:
        pred, radius, y: (N,) -> one float per entry of ``radii``.

    Example:
        >>> certified_accuracy(torch.tensor([1, 2]), torch.tensor([3, 0]), torch.tensor([1, 2]), [0, 1])
        [1.0, 0.5]
    """
    y = check_labels(y, pred.shape[0])
    if radius.shape != pred.shape:
        raise ShapeError(f"pred has shape {tuple(pred.shape)} but radius {tuple(radius.shape)}")
    if any(r < 0 for r in radii):
        raise ConfigError(f"radii must be non-negative, got {list(radii)}")
    correct = pred.cpu() == y.cpu()
    n = max(pred.shape[0], 1)
    return [float((correct & (radius.cpu() >= r)).sum()) / n for r in radii]
