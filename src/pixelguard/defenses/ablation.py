"""Randomized ablation: keep ``k`` random pixels, blank the rest, and train on that.

The encoding doubles the channels so the classifier can tell an ablated pixel from a
black one: a kept pixel carries ``x`` in the first C channels and ``1 - x`` in the
last C; an ablated pixel is 0 in both (no kept pixel is 0 in both, since
``x + (1 - x) = 1``). A base classifier for :class:`~pixelguard.defenses.certify.RandomizedAblation`
is trained on such encodings, with the ablation drawn afresh for every batch.

References:
    Levine, Feizi. "Robustness certificates for sparse adversarial attacks by
    randomized ablation." AAAI 2020. arXiv:1911.09272.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pixelguard.checks import check_images, check_labels
from pixelguard.errors import ConfigError, ModelError
from pixelguard.models.base import InputSpec
from pixelguard.models.zoo import build_model, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)


def check_keep(keep: int, image_size: tuple[int, int]) -> None:
    """Raise :class:`ConfigError` unless ``1 <= keep <= H * W``."""
    pixels = image_size[0] * image_size[1]
    if not 1 <= keep <= pixels:
        raise ConfigError(f"keep must lie in 1..{pixels} (pixels per image), got {keep}")


def ablation_masks(
    n: int, image_size: tuple[int, int], keep: int, generator: torch.Generator
) -> torch.Tensor:
    """``n`` independent masks, each keeping ``keep`` pixels chosen uniformly without replacement.

    Drawn on the CPU (so CPU and GPU runs agree); move them to the images' device.

    Shape:
        -> (n, 1, H, W) bool, each mask with exactly ``keep`` True.

    Raises:
        ConfigError: ``keep`` outside ``1..H*W``.
    """
    check_keep(keep, image_size)
    height, width = image_size
    pixels = height * width
    kept = torch.rand((n, pixels), generator=generator).topk(keep, dim=1).indices
    mask = torch.zeros((n, pixels), dtype=torch.bool).scatter_(1, kept, True)
    return mask.view(n, 1, height, width)


def encode_ablated(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The 2C-channel ablation encoding: ``[x * m, (1 - x) * m]`` along the channels.

    Broadcasts: ``x`` (..., C, H, W) with ``mask`` (..., 1, H, W).

    Shape:
        x: (N, C, H, W), mask: (N, 1, H, W) bool -> (N, 2C, H, W) float32 in [0, 1].

    Example:
        >>> x = torch.tensor([[[[0.0, 1.0]]]])
        >>> encode_ablated(x, torch.tensor([[[[True, False]]]])).flatten().tolist()
        [0.0, 0.0, 1.0, 0.0]
    """
    m = mask.to(x.dtype)
    values, complements = x * m, (1.0 - x) * m
    return torch.cat([values, complements], dim=-3)


def ablate(x: torch.Tensor, keep: int, generator: torch.Generator) -> torch.Tensor:
    """Ablate every image independently, keeping ``keep`` random pixels, and encode it.

    Shape:
        x: (N, C, H, W) float32 in [0, 1] -> (N, 2C, H, W) float32 in [0, 1].
    """
    mask = ablation_masks(x.shape[0], (x.shape[2], x.shape[3]), keep, generator)
    return encode_ablated(x, mask.to(x.device))


def train_ablation_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    keep: int,
    *,
    arch: str = "small-cnn",
    epochs: int = 30,
    lr: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a zoo network on ablated images, with a fresh ablation for every batch.

    Seeded and quiet like :func:`~pixelguard.models.training.train_classifier`:
    initialisation runs under a forked torch RNG, batches and ablations come from a
    private generator.

    Args:
        x: clean training images.
        y: their labels.
        keep: pixels kept per ablation (the certifier must use the same value).
        arch: a registered architecture; it is built for 2C input channels.
        epochs: passes over the images.
        lr: Adam learning rate.
        batch_size: images per step.
        seed: seeds initialisation, shuffling and ablation.
        num_classes: number of classes; default ``max(y) + 1``.
        device: where to train; default CPU. The module is returned on the CPU.

    Returns:
        The module in eval mode (taking ``(N, 2C, H, W)`` encodings), and metrics:
        ``train_accuracy`` (on one fresh ablation of the training images),
        ``train_loss`` (mean of the last epoch), ``epochs``, ``keep``, ``seconds``.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64.

    Raises:
        ShapeError, RangeError: invalid images or labels.
        ConfigError: invalid hyper-parameters.

    References:
        Levine, Feizi. AAAI 2020. arXiv:1911.09272.
    """
    check_images(x)
    y = check_labels(y, x.shape[0], num_classes)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ConfigError(
            f"epochs and batch_size must be at least 1 and lr positive, got {epochs}, {batch_size}, {lr}"
        )
    if x.shape[0] == 0:
        raise ConfigError("no training images")
    n, c, h, w = x.shape
    check_keep(keep, (h, w))
    k = num_classes if num_classes is not None else int(y.max()) + 1
    dev = torch.device(device) if device is not None else torch.device("cpu")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = build_model(arch, 2 * c, k, (h, w))
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    mean_loss = float("nan")
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for batch in torch.split(torch.randperm(n, generator=generator), batch_size):
            inputs = ablate(x[batch], keep, generator).to(dev)
            loss = F.cross_entropy(model(inputs), y[batch].to(dev))
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        mean_loss = total / n
        logger.debug("ablation epoch %d/%d: train loss %.4f", epoch + 1, epochs, mean_loss)
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [
                model(ablate(xb, keep, generator).to(dev)).argmax(1).cpu()
                for xb in torch.split(x, 1024)
            ]
        )
    metrics: dict[str, Any] = {
        "train_accuracy": float((pred == y.cpu()).double().mean()),
        "train_loss": mean_loss,
        "epochs": epochs,
        "keep": keep,
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "trained %s on %d-pixel ablations for %d epochs in %.1fs: ablated train accuracy %.4f",
        arch,
        keep,
        epochs,
        metrics["seconds"],
        metrics["train_accuracy"],
    )
    return model.cpu(), metrics


KEEP_METRIC = "ablation_keep"
"""The checkpoint metric that marks an ablation base classifier and records its ``keep``."""


@dataclass(frozen=True)
class AblationBase:
    """A base classifier for randomized ablation, with what its checkpoint records.

    Attributes:
        module: the network on 2C-channel ablation encodings (eval mode, CPU).
        arch: its zoo architecture name.
        image_shape: ``(C, H, W)`` of the images it certifies (the module takes 2C channels).
        keep: pixels kept per ablation in training; certify with the same value.
        num_classes: the number of classes.
        class_names: one name per class, when known.
        metrics: training metrics.
    """

    module: nn.Module
    arch: str
    image_shape: tuple[int, int, int]
    keep: int
    num_classes: int
    class_names: list[str] | None
    metrics: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write a pixelguard checkpoint (read back by :func:`load_ablation_base`).

        Its input shape is the encodings' ``(2C, H, W)``, so loading it as a plain
        model cannot silently classify raw images.
        """
        c, h, w = self.image_shape
        return save_checkpoint(
            path,
            self.module,
            arch=self.arch,
            arch_params={
                "in_channels": 2 * c,
                "num_classes": self.num_classes,
                "image_size": [h, w],
            },
            input_shape=(2 * c, h, w),
            class_names=self.class_names,
            spec=InputSpec(),
            metrics={**self.metrics, KEEP_METRIC: self.keep},
        )


def load_ablation_base(path: str | Path) -> AblationBase:
    """Read an ablation base classifier saved by :meth:`AblationBase.save`.

    Raises:
        ModelError: not a pixelguard checkpoint, or not one of an ablation base.
    """
    module, meta = load_checkpoint(path)
    metrics = dict(meta["metrics"])
    keep = metrics.pop(KEEP_METRIC, None)
    channels, h, w = meta["input_shape"]
    if not isinstance(keep, int) or channels % 2:
        raise ModelError(
            f"{path} is not a randomized-ablation base classifier; train one with "
            "pixelguard certify --train-base PATH"
        )
    return AblationBase(
        module=module,
        arch=meta["arch"],
        image_shape=(channels // 2, h, w),
        keep=keep,
        num_classes=int(meta["arch_params"]["num_classes"]),
        class_names=meta["class_names"],
        metrics=metrics,
    )
