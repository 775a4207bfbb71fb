"""The adversarial images of a run as a ``.npz`` for re-use in other tools."""

from __future__ import annotations

from pathlib import Path

import torch

from pixelguard.errors import ShapeError
from pixelguard.evaluate.attack_run import AttackRun
from pixelguard.evaluate.files import write_npz


def attacked_originals(run: AttackRun, x: torch.Tensor) -> torch.Tensor:
    """The clean images ``run`` attacked, picked from the dataset's images ``x``.

    Shape:
        x: (N, C, H, W), the whole dataset the run attacked -> (M, C, H, W).

    Raises:
        ShapeError: ``x`` is not the run's dataset (another number or shape of images).
    """
    if x.dim() != 4 or x.shape[0] != run.n_images or x.shape[1:] != run.result.x_adv.shape[1:]:
        raise ShapeError(
            f"expected the run's {run.n_images} dataset images of shape "
            f"{tuple(run.result.x_adv.shape[1:])}, got a batch of shape {tuple(x.shape)}"
        )
    return x[run.indices.to(x.device)]


def write_adversarial_npz(path: str | Path, run: AttackRun, x: torch.Tensor) -> Path:
    """Write the attacked originals and their adversarial versions to a ``.npz``.

    Arrays: ``x`` (attacked originals), ``x_adv`` (the original where the attack
    failed), ``y`` (labels), ``success`` (bool) and ``index`` (dataset index), in
    the canonical float32 NCHW layout with values in [0, 1]. Written atomically.

    Args:
        path: the file to write.
        run: the attack run.
        x: the images of the run's whole dataset.

    Returns:
        The path written.

    Shape:
        x: (N, C, H, W) -> stored x, x_adv: (M, C, H, W); y, success, index: (M,).
    """
    originals = attacked_originals(run, x)
    arrays = {
        "x": originals.detach().cpu().to(torch.float32).numpy(),
        "x_adv": run.result.x_adv.detach().cpu().to(torch.float32).numpy(),
        "y": run.result.y.cpu().numpy(),
        "success": run.result.success.cpu().numpy(),
        "index": run.indices.cpu().numpy(),
    }
    return write_npz(path, arrays)
