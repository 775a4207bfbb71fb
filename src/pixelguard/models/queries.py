"""Query accounting, done once: a wrapper that counts images sent per original image."""

from __future__ import annotations

import torch

from pixelguard.errors import CapabilityError, QueryBudgetExceeded, ShapeError
from pixelguard.models.base import Classifier, ClassifierWrapper, Differentiable


class QueryCounter(ClassifierWrapper):
    """A Classifier wrapper that counts queries per image and enforces a hard budget.

    Every row sent to the model is one query charged to the image it belongs to.
    Attacks pass ``index`` (which original image each row perturbs); the counter
    refuses a call that would take any image past ``budget``.

    Args:
        model: the classifier to query.
        n_images: how many original images the attack works on.
        budget: the most queries any one image may spend, or None for no limit.
    """

    def __init__(self, model: Classifier, n_images: int, budget: int | None = None) -> None:
        super().__init__(model)
        self.budget = budget
        self.per_image = torch.zeros(n_images, dtype=torch.int64)

    @property
    def total(self) -> int:
        """All queries spent so far."""
        return int(self.per_image.sum())

    def remaining(self) -> torch.Tensor:
        """Queries each image may still spend (a large number when unlimited)."""
        if self.budget is None:
            return torch.full_like(self.per_image, torch.iinfo(torch.int64).max // 2)
        return self.budget - self.per_image

    def _charge(self, rows: int, index: torch.Tensor | None) -> torch.Tensor:
        """Queries per image for a call of ``rows`` rows; refuses calls over budget."""
        n_images = self.per_image.shape[0]
        if index is None:
            if rows != n_images:
                raise ShapeError(
                    f"without an index, a query batch needs one row per image ({n_images}), "
                    f"got {rows}"
                )
            index = torch.arange(n_images)
        index = index.to(device="cpu", dtype=torch.int64)
        if index.shape[0] != rows:
            raise ShapeError(f"index has {index.shape[0]} entries for {rows} rows")
        charge = torch.bincount(index, minlength=n_images)
        if self.budget is not None:
            after = self.per_image + charge
            if bool((after > self.budget).any()):
                worst = int(after.argmax())
                raise QueryBudgetExceeded(
                    f"image {worst} would spend {int(after[worst])} queries, "
                    f"over its budget of {self.budget}"
                )
        return charge

    def predict(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Score ``x``, charging row ``i`` to image ``index[i]``.

        Shape:
            x: (M, C, H, W); index: (M,) int64 in [0, n_images). Without ``index``,
            x must hold exactly one row per image, in order.

        Raises:
            QueryBudgetExceeded: the call would take an image past its budget.
        """
        charge = self._charge(x.shape[0], index)
        scores = self.model.predict(x)
        self.per_image += charge
        return scores

    def logits(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable logits of ``x``, charging row ``i`` to image ``index[i]``.

        One forward pass (and the backward pass through it) is one query per row,
        exactly as :meth:`predict` counts.

        Shape:
            x: (M, C, H, W), may require grad; index: (M,) int64 in [0, n_images).
            Without ``index``, x must hold exactly one row per image, in order.
            -> (M, K) logits under autograd.

        Raises:
            CapabilityError: the wrapped model has no differentiable ``logits``.
            QueryBudgetExceeded: the call would take an image past its budget.
        """
        if not isinstance(self.model, Differentiable) or not self.model.capabilities.gradients:
            raise CapabilityError(
                f"{type(self.model).__name__} offers no gradients (no differentiable logits)"
            )
        charge = self._charge(x.shape[0], index)
        out = self.model.logits(x)
        self.per_image += charge
        return out
