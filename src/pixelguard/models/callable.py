"""Adapter for any Python function that maps a numpy image batch to class scores."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pixelguard.errors import ConfigError, ModelError, PixelguardError
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_MEMORY,
    ArrayClassifier,
    InputSpec,
    OutputKind,
)


class CallableClassifier(ArrayClassifier):
    """A plain function ``fn(images) -> scores`` as a black-box :class:`Classifier`.

    ``fn`` receives numpy arrays already converted to the model's layout, scale,
    normalisation and dtype by ``spec``, in chunks of at most ``batch_size`` images,
    and returns one row of scores per image (numpy, a torch tensor, or nested lists).

    Args:
        fn: the scoring function.
        input_shape: ``(C, H, W)`` of the canonical images.
        spec: how ``fn`` wants its input; default: NCHW float32 in [0, 1].
        output: what ``fn`` returns (``"logits"``, ``"probabilities"``, ``"labels"``),
            or None to detect it from a probe batch.
        batch_size: most images per call.
        max_memory: bytes of input and activations one call may hold.

    Shape:
        fn: (n, C, H, W) or (n, H, W, C) or (n, C*H*W) numpy, per ``spec`` -> (n, K).
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) float32 on x's device.

    Raises:
        ConfigError: ``fn`` is not callable, or a bad shape/batch size.

    Example:
        >>> clf = CallableClassifier(lambda a: a.reshape(len(a), -1)[:, :3], (1, 2, 2))
        >>> clf.predict(torch.zeros(2, 1, 2, 2)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], object],
        input_shape: tuple[int, int, int],
        spec: InputSpec | None = None,
        output: OutputKind | str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_memory: int = DEFAULT_MAX_MEMORY,
    ) -> None:
        if not callable(fn):
            raise ConfigError(f"CallableClassifier needs a callable, got {type(fn).__name__}")
        super().__init__(
            input_shape=input_shape,
            spec=spec if spec is not None else InputSpec(),
            output=output,
            batch_size=batch_size,
            gradients=False,
            max_memory=max_memory,
        )
        self.fn = fn

    def _forward(self, x: torch.Tensor) -> torch.Tensor | np.ndarray:
        inputs = self.spec.to_model_numpy(x)
        try:
            out = self.fn(inputs)
        except PixelguardError:
            raise
        except Exception as exc:
            raise ModelError(
                f"the model function raised {type(exc).__name__} on input of shape "
                f"{inputs.shape} (layout {self.spec.layout}, dtype {self.spec.dtype}): {exc}"
            ) from exc
        if isinstance(out, (torch.Tensor, np.ndarray)):
            return out
        try:
            return np.asarray(out, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise ModelError(
                f"the model function returned {type(out).__name__}, "
                "which is not an (N, K) array of numbers"
            ) from exc
