"""Adapter for fitted scikit-learn classifiers (anything with ``predict_proba``)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from pixelguard.errors import ModelError
from pixelguard.models.base import ArrayClassifier, InputSpec, OutputKind


class SklearnClassifier(ArrayClassifier):
    """A fitted scikit-learn classifier (or pipeline) as a black-box :class:`Classifier`.

    Images are flattened (in ``spec.layout`` order) into rows of ``C*H*W`` features
    and scored with ``predict_proba``; the scores are probabilities. The estimator
    must have been fitted on integer labels ``0..K-1`` so that column ``k`` of
    ``predict_proba`` is class ``k``.

    Args:
        estimator: a fitted estimator with ``predict_proba`` and ``classes_``.
        input_shape: ``(C, H, W)`` of the canonical images.
        spec: how the estimator wants its features; flattening is always applied.
            Default: ``InputSpec(flatten=True)`` (features in [0, 1], NCHW order).
        batch_size: most images per ``predict_proba`` call.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) float32 probabilities.

    Raises:
        ModelError: no ``predict_proba``, not fitted, labels not ``0..K-1``, or the
            estimator was fitted on a different number of features.

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> est = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
        >>> SklearnClassifier(est, (1, 2, 2)).num_classes
        2
    """

    def __init__(
        self,
        estimator: object,
        input_shape: tuple[int, int, int],
        spec: InputSpec | None = None,
        batch_size: int = 4096,
    ) -> None:
        name = type(estimator).__name__
        if not callable(getattr(estimator, "predict_proba", None)):
            raise ModelError(
                f"{name} has no predict_proba; pixelguard needs class scores: use a classifier "
                "that gives probabilities, or wrap it in sklearn.calibration.CalibratedClassifierCV"
            )
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ModelError(f"{name} is not fitted (it has no classes_); fit it first")
        classes = np.asarray(classes)
        if classes.ndim != 1 or not np.array_equal(classes, np.arange(classes.shape[0])):
            shown = ", ".join(map(str, classes.ravel()[:6])) + (", ..." if classes.size > 6 else "")
            raise ModelError(
                f"{name} was fitted on labels [{shown}]; pixelguard needs labels 0..K-1 so that "
                "score column k is class k: refit with integer labels "
                "(e.g. sklearn.preprocessing.LabelEncoder)"
            )
        spec = InputSpec(flatten=True) if spec is None else dataclasses.replace(spec, flatten=True)
        super().__init__(
            input_shape=input_shape,
            spec=spec,
            output=OutputKind.PROBABILITIES,
            batch_size=batch_size,
            gradients=False,
        )
        self._num_classes = int(classes.shape[0])
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is not None and int(n_features) != math.prod(self.input_shape):
            raise ModelError(
                f"{name} was fitted on {n_features} features but images of shape "
                f"{self.input_shape} have {math.prod(self.input_shape)}"
            )
        self.estimator = estimator

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        features = self.spec.to_model_numpy(x)
        try:
            return np.asarray(self.estimator.predict_proba(features))  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ModelError(
                f"{type(self.estimator).__name__}.predict_proba failed on "
                f"{features.shape[1]} features: {exc}"
            ) from exc
