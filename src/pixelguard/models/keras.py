"""Adapter for Keras 3 models (``.keras``, ``.h5``), differentiable on the torch backend.

Keras runs on the **torch backend** here when nobody chose another: if keras is not
imported yet and ``KERAS_BACKEND`` is unset, it is set to ``torch`` before the import,
so a Keras model is a differentiable classifier and every attack, white-box ones
included, runs on it without TensorFlow. A backend chosen by the user
(``KERAS_BACKEND``, or keras already imported with it) is never changed: with
TensorFlow or JAX the model is a black-box classifier (scores only).

Keras models are NHWC and usually end in a softmax. Both are read from the model
(its input shape and last layer) and reported in ``detected``; the user's options
override them. keras and TensorFlow are imported only when a model is loaded.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from pixelguard.errors import (
    ConfigError,
    ModelError,
    UnsafeLoadError,
    first_line,
    missing_dependency,
)
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    ArrayClassifier,
    Capabilities,
    OutputKind,
    differentiable_scores,
    log_probabilities,
    one_tensor,
)
from pixelguard.models.image_input import ImageInput, describe_detected, input_spec

logger = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
"""Model files loaded with ``keras.saving.load_model``."""


def import_keras() -> ModuleType:
    """Import keras, on the torch backend unless the user chose a backend.

    ``KERAS_BACKEND`` is set to ``torch`` only when it is unset and keras is not
    imported yet; an explicit ``KERAS_BACKEND`` or an imported keras is left alone.

    Raises:
        MissingDependencyError: keras is not installed.
        ConfigError: keras cannot import the backend the user chose.
    """
    if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ:
        os.environ["KERAS_BACKEND"] = "torch"
        logger.debug("KERAS_BACKEND was unset; using the torch backend")
    try:
        return importlib.import_module("keras")
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "keras":
            raise missing_dependency("keras", "keras", "Keras models") from exc
        backend = os.environ.get("KERAS_BACKEND", "the default")
        raise ConfigError(
            f"keras cannot load its backend (KERAS_BACKEND={backend}): {exc}; install that "
            "backend or set KERAS_BACKEND=torch before keras is imported"
        ) from exc


def _device_scope(keras: ModuleType, device: str | None) -> contextlib.AbstractContextManager[Any]:
    """Keras's device scope for the torch device ``device``, or no scope (other backends)."""
    if device is None or keras.backend.backend() != "torch":
        return contextlib.nullcontext()
    return keras.device(device)


def load_keras_file(
    path: str | Path, *, trust_pickle: bool = False, device: str | None = None
) -> Any:
    """Load a ``.keras`` or ``.h5`` model file with Keras's safe mode on.

    Args:
        path: the model file.
        trust_pickle: turn Keras's safe mode off, allowing ``Lambda`` layers and other
            Python code stored in the file to be loaded (and so run).
        device: torch device for the weights, e.g. ``"cuda:0"`` (torch backend only;
            default: Keras's, the GPU when there is one).

    Returns:
        The uncompiled Keras model.

    Raises:
        MissingDependencyError: keras is not installed.
        UnsafeLoadError: the file stores Python code and ``trust_pickle`` is False.
        ModelError: the file is missing or not a loadable Keras model.
    """
    path = Path(path)
    keras = import_keras()
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras 3 .keras file (not a zip archive)")
    try:
        with _device_scope(keras, device):
            return keras.saving.load_model(path, compile=False, safe_mode=not trust_pickle)
    except Exception as exc:  # deserialising layers can raise anything
        if "safe_mode" in str(exc):
            raise UnsafeLoadError(
                f"{path} stores Python code (a Lambda layer or function); loading it runs "
                "code from the file. Pass --trust-pickle if you trust its source"
            ) from None
        raise ModelError(f"cannot load Keras model {path}: {first_line(exc)}") from exc


class KerasClassifier(ArrayClassifier):
    """A Keras 3 model as a :class:`Classifier`; differentiable on the torch backend.

    The layout and image shape are read from the model's input shape: ``(None, H, W, C)``
    is NHWC, ``(None, C, H, W)`` NCHW (ambiguous shapes follow Keras's
    ``image_data_format``); ``(None, H, W)`` takes grey images without a channel axis
    and ``(None, F)`` flattened images (square grey when ``input_shape`` is not given).
    A last layer with a softmax activation (or a ``Softmax`` layer) makes the output
    probabilities, and then :meth:`logits` returns the exact pre-softmax values of
    that layer; otherwise the output kind is detected from a probe batch. What was
    found is in ``detected`` (and logged); every argument given overrides it.

    On the torch backend the model runs on Keras's device (``device`` when given) and
    gradients flow to the input. On another backend it is called on numpy batches
    with ``predict_on_batch`` and offers scores only.

    Args:
        model: a Keras 3 model (``keras.Model``, ``keras.Sequential``).
        input_shape: ``(C, H, W)``; needed when the model leaves its image size open.
        layout: ``"nhwc"`` or ``"nchw"``; default: detected.
        scale, mean, std: the pixel scaling the model wants (see :class:`InputSpec`).
        output: ``"logits"``, ``"probabilities"`` or ``"labels"``; default: detected.
        batch_size: most images per model call.
        device: torch device to run on (torch backend), e.g. ``"cuda:0"``.
        open_shape: the ``(C, H, W)`` to use where the model leaves its image size open
            and ``input_shape`` is not given (the loader passes the data's).

    Attributes:
        detected: ``{"layout": ..., "output": ...}``, what was found and from what.
        backend: the Keras backend the model runs on.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) float32 on x's device.
        logits: x (N, C, H, W) -> (N, K) float32 under autograd (torch backend).

    Raises:
        ModelError: the model has several inputs or an input of unsupported rank, or
            its input shape disagrees with ``input_shape``.
        ConfigError: the model leaves its image size open and ``input_shape`` is not given.

    Example:
        >>> clf = KerasClassifier(keras.saving.load_model("model.keras"))  # doctest: +SKIP
        >>> clf.detected["layout"]  # doctest: +SKIP
        'nhwc (from the model's input shape (None, 28, 28, 1))'
    """

    def __init__(
        self,
        model: Any,
        input_shape: tuple[int, int, int] | None = None,
        layout: str | None = None,
        scale: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        output: OutputKind | str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | None = None,
        open_shape: tuple[int, int, int] | None = None,
    ) -> None:
        keras = import_keras()
        self.backend = str(keras.backend.backend())
        self._keras = keras
        self.device = device
        dims = _keras_input_dims(model)
        image = ImageInput.detect(
            dims, input_shape, layout, keras.config.image_data_format(), open_shape
        )
        super().__init__(
            input_shape=image.shape,
            spec=input_spec(image.layout, scale, mean, std),
            output=output,
            batch_size=batch_size,
            gradients=self.backend == "torch",
        )
        self.model = model
        self._feed_shape = image.feed_shape
        self.detected = {"layout": image.reason}
        self._pre_softmax: Any = None
        if output is not None:
            self.detected["output"] = f"{OutputKind(output).value} (as given)"
        elif self._ends_in_softmax():
            self.output = OutputKind.PROBABILITIES
            self.detected["output"] = "probabilities (last layer's softmax)"
            if self.backend == "torch":
                self._pre_softmax = self._pre_softmax_model()
                if self._pre_softmax is None:
                    self.detected["output"] += (
                        "; gradients follow log-probabilities (the softmax's input is "
                        "not reachable in this model)"
                    )
        else:
            self._probe()
            self.detected["output"] = (
                f"{OutputKind(self.output).value} (from the scores of a probe batch)"
            )
        if self.backend != "torch":
            logger.warning(
                "keras runs on the %s backend: the model offers scores only (no gradients); "
                "white-box attacks need KERAS_BACKEND=torch set before keras is imported",
                self.backend,
            )
        logger.info("Keras model: %s", describe_detected(self.detected))

    @property
    def capabilities(self) -> Capabilities:
        """Gradients on the torch backend, unless the model returns labels."""
        caps = super().capabilities
        if caps.output is OutputKind.LABELS:
            return Capabilities(output=caps.output, gradients=False)
        return caps

    def _call(self, net: Any, x: torch.Tensor) -> torch.Tensor:
        inputs = self.spec.to_model(x)
        if self._feed_shape is not None:
            inputs = inputs.reshape(inputs.shape[0], *self._feed_shape)
        try:
            with _device_scope(self._keras, self.device):
                out = net(inputs, training=False)
        except Exception as exc:  # a Keras layer can raise anything on a bad input
            raise ModelError(
                f"the Keras model failed on input of shape {tuple(inputs.shape)} "
                f"(layout {self.spec.layout}): {first_line(exc)}; check input_shape and layout"
            ) from exc
        return one_tensor(out, "the Keras model")

    def _forward(self, x: torch.Tensor) -> torch.Tensor | np.ndarray:
        if self.backend == "torch":
            return self._call(self.model, x)
        inputs = self.spec.to_model_numpy(x)
        if self._feed_shape is not None:
            inputs = inputs.reshape(inputs.shape[0], *self._feed_shape)
        try:
            return np.asarray(self.model.predict_on_batch(inputs))
        except Exception as exc:  # a Keras layer can raise anything on a bad input
            raise ModelError(
                f"the Keras model failed on input of shape {inputs.shape}: {first_line(exc)}"
            ) from exc

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a canonical batch, under autograd, computed in chunks.

        For a model ending in a softmax layer these are that layer's pre-softmax
        values; for other probability outputs, ``log(probabilities)`` (floored at
        1e-12), which differs from logits by a per-row constant.

        Shape:
            x: (N, C, H, W) float32 -> (N, K) float32 on x's device.

        Raises:
            ModelError: wrong image shape, non-finite or non-(N, K) scores, or a
                backend other than torch (no gradients).
        """
        if self.backend != "torch":
            raise ModelError(
                f"Keras on the {self.backend} backend offers no gradients; "
                "set KERAS_BACKEND=torch before keras is imported"
            )
        output = self.capabilities.output
        pre_softmax = self._pre_softmax if output is OutputKind.PROBABILITIES else None
        network = self.model if pre_softmax is None else pre_softmax
        scores = differentiable_scores(
            x,
            self.input_shape,
            self.batch_size,
            lambda chunk: self._call(network, chunk),
            "the Keras model",
        )
        if output is OutputKind.PROBABILITIES and pre_softmax is None:
            return log_probabilities(scores, output)
        return scores

    def _ends_in_softmax(self) -> bool:
        """True when the model's last layer is a softmax or has a softmax activation."""
        layers = getattr(self.model, "layers", None)
        head = layers[-1] if layers else None
        activation = getattr(head, "activation", None)
        return isinstance(head, self._keras.layers.Softmax) or (
            getattr(activation, "__name__", "") == "softmax"
        )

    def _pre_softmax_model(self) -> Any:
        """A Keras model for the last layer's pre-softmax values, or None where the
        model has no graph to cut (a subclassed model) or the cut does not reproduce
        the model's output on a probe batch."""
        keras = self._keras
        head = self.model.layers[-1]
        try:
            with _device_scope(keras, self.device):
                if isinstance(head, (keras.layers.Softmax, keras.layers.Activation)):
                    pre = head.input
                else:
                    twin = type(head).from_config({**head.get_config(), "activation": "linear"})
                    pre = twin(head.input)
                    twin.set_weights(head.get_weights())
                pre_softmax = keras.Model(self.model.inputs[0], pre)
        except (AttributeError, ValueError, TypeError):  # no functional graph to cut
            return None
        probe = torch.rand((4, *self.input_shape), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = self._call(self.model, probe).cpu()
            got = torch.softmax(self._call(pre_softmax, probe).cpu().float(), dim=-1)
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4):
            return None
        return pre_softmax


def _keras_input_dims(model: Any) -> tuple[int | None, ...] | None:
    """The model's input shape (batch first), or None when it is not built."""
    try:
        dims = model.input_shape
    except (AttributeError, ValueError):  # a subclassed model that was never called
        return None
    if isinstance(dims, list):
        raise ModelError(
            f"the Keras model has {len(dims)} inputs; pixelguard needs one image input"
        )
    return tuple(dims)
