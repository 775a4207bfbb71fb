"""Train a small zoo network on canonical images: seeded, quiet, reproducible."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pixelguard.checks import check_images, check_labels
from pixelguard.errors import ConfigError
from pixelguard.models.zoo import build_model

logger = logging.getLogger(__name__)

TrainProgress = Callable[[int, int, float], None]
"""Called as ``progress(epoch_done, epochs, mean_train_loss)`` after every epoch."""


def train_classifier(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    arch: str = "small-cnn",
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.0,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
    progress: TrainProgress | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a zoo network with Adam and cross-entropy.

    The run depends only on ``seed``: weights are initialised under a forked torch
    RNG and batches are shuffled with a private generator, so the caller's global
    random state is left as it was.

    Args:
        x: training images.
        y: their labels.
        arch: a registered architecture (see :func:`pixelguard.models.zoo.list_archs`).
        epochs: passes over the training split.
        lr: Adam learning rate.
        batch_size: images per optimisation step.
        seed: seeds initialisation, the validation split and shuffling.
        val_fraction: share of the images held out for validation, in [0, 1).
        num_classes: number of classes; default ``max(y) + 1``.
        device: where to train; default CPU. The module is returned on the CPU.
        progress: optional callback after each epoch.

    Returns:
        The trained module in eval mode (on the CPU), and metrics: ``train_accuracy``,
        ``val_accuracy`` (None without a validation split), ``train_loss`` (mean of the
        last epoch), ``epochs``, ``train_size``, ``val_size``, ``seconds``.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64 in [0, K).

    Raises:
        ShapeError, RangeError: invalid images or labels.
        ConfigError: invalid hyper-parameters or an unknown architecture.

    Example:
        >>> x, y = torch.rand(64, 1, 8, 8), torch.arange(64) % 2
        >>> model, metrics = train_classifier(x, y, epochs=1)
        >>> metrics["epochs"]
        1
    """
    check_images(x)
    y = check_labels(y, x.shape[0], num_classes)
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = x.shape[0]
    if n == 0:
        raise ConfigError("no training images")
    k = num_classes if num_classes is not None else int(y.max()) + 1
    start = time.perf_counter()
    dev = torch.device(device) if device is not None else torch.device("cpu")

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = int(round(n * val_fraction))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if train_idx.numel() == 0:
        raise ConfigError(f"no training images left after holding out {n_val} for validation")

    # Seed only the CPU generator (initialisation happens on the CPU) inside a fork, so
    # neither the caller's CPU nor CUDA random state changes.
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        model = build_model(arch, x.shape[1], k, (x.shape[2], x.shape[3]))
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_train, y_train = x[train_idx], y[train_idx]
    mean_loss = float("nan")
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(x_train.shape[0], generator=generator)
        total = 0.0
        for batch in torch.split(perm, batch_size):
            xb, yb = x_train[batch].to(dev), y_train[batch].to(dev)
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        mean_loss = total / x_train.shape[0]
        logger.debug("epoch %d/%d: train loss %.4f", epoch + 1, epochs, mean_loss)
        if progress is not None:
            progress(epoch + 1, epochs, mean_loss)

    model.eval()
    metrics: dict[str, Any] = {
        "train_accuracy": _accuracy(model, x_train, y_train, dev),
        "val_accuracy": _accuracy(model, x[val_idx], y[val_idx], dev) if n_val else None,
        "train_loss": mean_loss,
        "epochs": epochs,
        "train_size": int(train_idx.numel()),
        "val_size": n_val,
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        "trained %s for %d epochs in %.1fs: train accuracy %.4f",
        arch,
        epochs,
        metrics["seconds"],
        metrics["train_accuracy"],
    )
    return model.cpu(), metrics


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``x``, in batches of 1024."""
    correct = 0
    with torch.no_grad():
        for xb, yb in zip(torch.split(x, 1024), torch.split(y, 1024), strict=True):
            correct += int((model(xb.to(device)).argmax(dim=1).cpu() == yb).sum())
    return correct / max(x.shape[0], 1)
