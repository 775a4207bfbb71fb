"""Adversarial images as ``.npz`` files, for re-use in other tools and for re-rendering reports."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelguard.errors import ReportError, ShapeError
from pixelguard.evaluate.attack_run import AttackRun
from pixelguard.evaluate.runner import Evaluation
from pixelguard.files import write_npz


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


@dataclass(frozen=True)
class BudgetArrays:
    """The worst case at one budget, storing only the images an attack changed.

    Attributes:
        label: the budget label, e.g. ``"pixels=3"``.
        pred: the worst-case prediction of every image.
        confidence: the model's probability of ``pred`` on the worst-case image.
        changed_index: the dataset positions whose worst-case image differs from the original.
        x_changed: those worst-case (adversarial) images, float32 as the attack made them.

    Shape:
        pred, confidence: (N,); changed_index: (M,); x_changed: (M, C, H, W).
    """

    label: str
    pred: np.ndarray
    confidence: np.ndarray
    changed_index: np.ndarray
    x_changed: np.ndarray

    def worst_case(self, x: np.ndarray) -> np.ndarray:
        """The worst-case image of every position: the adversarial where changed, else ``x``.

        Shape:
            x: (N, C, H, W), the originals -> (N, C, H, W).
        """
        images = x.copy()
        images[self.changed_index] = self.x_changed
        return images

    def image(self, index: int, x: np.ndarray) -> np.ndarray:
        """The worst-case image at dataset position ``index`` (``x``: the originals).

        Shape:
            x: (N, C, H, W) -> (C, H, W).
        """
        position = np.flatnonzero(self.changed_index == index)
        return self.x_changed[position[0]] if position.size else x[index]


@dataclass(frozen=True)
class EvaluationArrays:
    """The images of an evaluation: originals, clean predictions, worst cases per budget.

    Shape:
        x: (N, C, H, W) float32 in [0, 1]; y, clean_pred: (N,) int64;
        clean_confidence: (N,) float32.
    """

    x: np.ndarray
    y: np.ndarray
    clean_pred: np.ndarray
    clean_confidence: np.ndarray
    budgets: list[BudgetArrays]

    @classmethod
    def from_evaluation(cls, evaluation: Evaluation) -> EvaluationArrays:
        """The arrays of ``evaluation``, as CPU numpy arrays."""
        x = evaluation.x.detach().cpu().to(torch.float32)
        budgets = []
        for outcome in evaluation.budgets:
            x_adv = outcome.x_adv.detach().cpu().to(torch.float32)
            changed = (x_adv != x).flatten(1).any(dim=1).nonzero().flatten()
            budgets.append(
                BudgetArrays(
                    label=outcome.label,
                    pred=outcome.pred.cpu().numpy(),
                    confidence=outcome.confidence.cpu().to(torch.float32).numpy(),
                    changed_index=changed.numpy(),
                    x_changed=x_adv[changed].numpy(),
                )
            )
        return cls(
            x=x.numpy(),
            y=evaluation.y.cpu().numpy(),
            clean_pred=evaluation.clean_pred.cpu().numpy(),
            clean_confidence=evaluation.clean_confidence.cpu().to(torch.float32).numpy(),
            budgets=budgets,
        )

    def budget(self, label: str) -> BudgetArrays | None:
        """The arrays of the budget ``label`` (None: not stored)."""
        return next((b for b in self.budgets if b.label == label), None)

    def to_npz_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for :func:`numpy.savez`; budget ``i`` is stored as ``budget{i}_*``."""
        arrays = {
            "x": self.x,
            "y": self.y,
            "clean_pred": self.clean_pred,
            "clean_confidence": self.clean_confidence,
            "budget_labels": np.array([b.label for b in self.budgets], dtype=str),
        }
        for i, budget in enumerate(self.budgets):
            arrays[f"budget{i}_pred"] = budget.pred
            arrays[f"budget{i}_confidence"] = budget.confidence
            arrays[f"budget{i}_changed_index"] = budget.changed_index
            arrays[f"budget{i}_x_changed"] = budget.x_changed
        return arrays

    @classmethod
    def from_npz_arrays(cls, arrays: Mapping[str, np.ndarray]) -> EvaluationArrays:
        """The inverse of :meth:`to_npz_arrays`.

        Raises:
            KeyError: an array is missing.
        """
        budgets = [
            BudgetArrays(
                label=str(label),
                pred=arrays[f"budget{i}_pred"],
                confidence=arrays[f"budget{i}_confidence"],
                changed_index=arrays[f"budget{i}_changed_index"],
                x_changed=arrays[f"budget{i}_x_changed"],
            )
            for i, label in enumerate(arrays["budget_labels"].tolist())
        ]
        return cls(
            x=arrays["x"],
            y=arrays["y"],
            clean_pred=arrays["clean_pred"],
            clean_confidence=arrays["clean_confidence"],
            budgets=budgets,
        )


def write_evaluation_npz(path: str | Path, evaluation: Evaluation) -> Path:
    """Write the images of ``evaluation`` to a compressed ``.npz``, atomically.

    Arrays: ``x`` (originals), ``y``, ``clean_pred``, ``clean_confidence``,
    ``budget_labels`` and, for the budget at position ``i``, ``budget{i}_pred`` and
    ``budget{i}_confidence`` (every image) and ``budget{i}_changed_index`` and
    ``budget{i}_x_changed`` (only the images an attack changed, float32 as made).
    :meth:`BudgetArrays.worst_case` rebuilds the full worst-case batch.

    Returns:
        The path written.
    """
    return write_npz(path, EvaluationArrays.from_evaluation(evaluation).to_npz_arrays())


def read_evaluation_npz(path: str | Path) -> EvaluationArrays:
    """Read a file written by :func:`write_evaluation_npz`.

    Raises:
        ReportError: the file cannot be read or lacks an array.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            return EvaluationArrays.from_npz_arrays({name: npz[name] for name in npz.files})
    except KeyError as exc:
        raise ReportError(
            f"{path} is not an evaluation's adversarial.npz: no array {exc}"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None
