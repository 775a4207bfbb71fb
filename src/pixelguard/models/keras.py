"""Adapters for Keras 3 models (``.keras``, ``.h5``) and TensorFlow SavedModel folders.

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
import dataclasses
import importlib
import logging
import math
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from pixelguard.errors import ConfigError, ModelError, UnsafeLoadError, missing_dependency
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    ArrayClassifier,
    Capabilities,
    InputSpec,
    OutputKind,
    differentiable_scores,
    log_probabilities,
)

logger = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
"""Model files loaded with ``keras.saving.load_model``."""

_CHANNELS = (1, 3, 4)
_TF_DTYPES = ("float32", "float64", "float16", "uint8")


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
        raise ModelError(f"cannot load Keras model {path}: {_first_line(exc)}") from exc


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
    ) -> None:
        keras = import_keras()
        self.backend = str(keras.backend.backend())
        self._keras = keras
        self.device = device
        dims = _keras_input_dims(model)
        image = _ImageInput.detect(dims, input_shape, layout, keras.config.image_data_format())
        super().__init__(
            input_shape=image.shape,
            spec=_spec(image.layout, scale, mean, std),
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
        logger.info("Keras model: %s", _describe(self.detected))

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
                f"(layout {self.spec.layout}): {_first_line(exc)}; check input_shape and layout"
            ) from exc
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"the Keras model returned {type(out).__name__}, expected an (N, K) tensor"
            )
        return out

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
                f"the Keras model failed on input of shape {inputs.shape}: {_first_line(exc)}"
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


class SavedModelClassifier(ArrayClassifier):
    """A TensorFlow SavedModel folder as a black-box :class:`Classifier` (scores only).

    What ``model.export(path)`` (Keras) or ``tf.saved_model.save`` write: a folder with
    ``saved_model.pb``. Its ``serving_default`` signature must take one image input;
    its dtype sets the input dtype, its shape the layout and image shape as for
    :class:`KerasClassifier`. The output kind is detected from a probe batch. Runs in
    TensorFlow, without gradients: use black-box attacks, or load the ``.keras`` file
    for white-box ones.

    Args:
        path: the SavedModel folder.
        input_shape, layout, scale, mean, std, output, batch_size: as for
            :class:`KerasClassifier`.

    Attributes:
        detected: ``{"layout": ..., "output": ...}``, what was found and from what.

    Raises:
        MissingDependencyError: TensorFlow is not installed.
        ModelError: the folder is not a loadable SavedModel, has no
            ``serving_default`` signature, or several inputs.
        ConfigError: the image size is open and ``input_shape`` is not given.
    """

    def __init__(
        self,
        path: str | Path,
        input_shape: tuple[int, int, int] | None = None,
        layout: str | None = None,
        scale: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        output: OutputKind | str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        path = Path(path)
        try:
            tf = importlib.import_module("tensorflow")
        except ImportError as exc:
            raise missing_dependency("tensorflow", "tensorflow", "TensorFlow SavedModels") from exc
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises its own Exception subclasses
            raise ModelError(
                f"cannot load TensorFlow SavedModel {path}: {_first_line(exc)}"
            ) from exc
        signature = loaded.signatures.get("serving_default")
        if signature is None:
            raise ModelError(
                f"{path} has no 'serving_default' signature (it has: "
                f"{', '.join(loaded.signatures) or 'none'})"
            )
        _, inputs = signature.structured_input_signature
        if len(inputs) != 1:
            raise ModelError(
                f"{path} takes {len(inputs)} inputs ({', '.join(inputs)}); "
                "pixelguard needs one image input"
            )
        ((name, tensor_spec),) = inputs.items()
        dtype = tensor_spec.dtype.name
        if dtype not in _TF_DTYPES:
            raise ModelError(
                f"{path}: input {name!r} has type {dtype}; supported: {', '.join(_TF_DTYPES)}"
            )
        shape = tensor_spec.shape
        dims = tuple(shape.as_list()) if shape.rank is not None else None
        image = _ImageInput.detect(dims, input_shape, layout, "channels_last")
        super().__init__(
            input_shape=image.shape,
            spec=dataclasses.replace(_spec(image.layout, scale, mean, std), dtype=dtype),
            output=output,
            batch_size=batch_size,
            gradients=False,
        )
        self.path = path
        self._tf = tf
        self._loaded = loaded  # keeps the signature's variables alive
        self._signature = signature
        self._input_name = name
        self._feed_shape = image.feed_shape
        self.detected = {"layout": image.reason}
        if output is not None:
            self.detected["output"] = f"{OutputKind(output).value} (as given)"
        else:
            self._probe()
            self.detected["output"] = (
                f"{OutputKind(self.output).value} (from the scores of a probe batch)"
            )
        logger.info("TensorFlow SavedModel %s: %s", path, _describe(self.detected))

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        inputs = self.spec.to_model_numpy(x)
        if self._feed_shape is not None:
            inputs = inputs.reshape(inputs.shape[0], *self._feed_shape)
        try:
            outputs = self._signature(**{self._input_name: self._tf.constant(inputs)})
        except Exception as exc:  # TensorFlow raises its own Exception subclasses
            raise ModelError(
                f"the SavedModel {self.path} failed on input of shape {inputs.shape}: "
                f"{_first_line(exc)}"
            ) from exc
        values = [v for v in outputs.values() if len(v.shape) == 2] or list(outputs.values())
        return np.asarray(values[0].numpy())


def is_saved_model(path: Path) -> bool:
    """True for a TensorFlow SavedModel folder (one holding ``saved_model.pb``)."""
    return path.is_dir() and (path / "saved_model.pb").is_file()


class _ImageInput:
    """The canonical image shape and layout for a model input of known dims."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        layout: str,
        feed_shape: tuple[int, ...] | None,
        reason: str,
    ) -> None:
        self.shape = shape
        self.layout = layout
        self.feed_shape = feed_shape
        self.reason = reason

    @classmethod
    def detect(
        cls,
        dims: tuple[int | None, ...] | None,
        input_shape: tuple[int, int, int] | None,
        layout: str | None,
        data_format: str,
    ) -> _ImageInput:
        """Read the layout and image shape from ``dims`` (batch first), under the user's.

        Args:
            dims: the model's input shape, batch first, or None when it is unknown.
            input_shape: the user's ``(C, H, W)``, or None.
            layout: the user's layout, or None.
            data_format: ``"channels_last"`` or ``"channels_first"`` for ambiguous dims.
        """
        given = tuple(input_shape) if input_shape is not None else None
        if dims is None:
            if given is None:
                raise ConfigError(
                    "the model does not record its input size; pass input_shape (C, H, W), "
                    "e.g. --input-shape 1,28,28"
                )
            found = layout or ("nhwc" if data_format == "channels_last" else "nchw")
            how = "as given" if layout else f"Keras's image_data_format {data_format}"
            return cls(given, found, None, f"{found} ({how})")  # type: ignore[arg-type]
        where = f"from the model's input shape {_shape_text(dims)}"
        image = dims[1:]
        if len(image) == 3:
            found, why = _layout_of(image, data_format)
            chosen = layout or found
            c, h, w = (image[2], image[0], image[1]) if chosen == "nhwc" else image
            shape = _settle((c, h, w), given, dims)
            reason = f"{chosen} (as given)" if layout else f"{chosen} ({where}{why})"
            return cls(shape, chosen, None, reason)
        if len(image) == 2:
            shape = _settle((1, image[0], image[1]), given, dims)
            return cls(shape, "nhwc", shape[1:], f"grey images without a channel axis ({where})")
        if len(image) == 1:
            features = image[0]
            if given is None:
                side = math.isqrt(features) if features else 0
                if not side or side * side != features:
                    raise ConfigError(
                        f"the model takes vectors of {features or 'any number of'} values "
                        f"({_shape_text(dims)}); pass input_shape (C, H, W) of the images"
                    )
                given = (1, side, side)
            elif features is not None and features != math.prod(given):
                raise ModelError(
                    f"the model takes {features} values ({_shape_text(dims)}) but images of "
                    f"shape {given} have {math.prod(given)}"
                )
            chosen = layout or "nhwc"
            return cls(given, chosen, (-1,), f"flattened {chosen} images ({where})")  # type: ignore[arg-type]
        raise ModelError(
            f"the model's input shape {_shape_text(dims)} is not an image batch "
            "(N, H, W, C), (N, C, H, W), (N, H, W) or (N, features)"
        )


def _layout_of(image: tuple[int | None, ...], data_format: str) -> tuple[str, str]:
    """``nhwc``/``nchw`` from where the channel axis is, and why when it is ambiguous."""
    first, last = image[0] in _CHANNELS, image[2] in _CHANNELS
    if last and not first:
        return "nhwc", ""
    if first and not last:
        return "nchw", ""
    found = "nhwc" if data_format == "channels_last" else "nchw"
    return found, f"; ambiguous, so Keras's image_data_format {data_format}"


def _settle(
    found: tuple[int | None, ...],
    given: tuple[int, ...] | None,
    dims: tuple[int | None, ...],
) -> tuple[int, int, int]:
    """The user's ``input_shape`` checked against the model's, or the model's."""
    if given is not None:
        if any(f is not None and f != g for f, g in zip(found, given)):
            raise ModelError(
                f"the model takes images of shape {_shape_text(found)} (C, H, W; input "
                f"{_shape_text(dims)}), but input_shape is {given}"
            )
        return given  # type: ignore[return-value]
    if any(f is None for f in found):
        raise ConfigError(
            f"the model leaves its image size open (input {_shape_text(dims)}); "
            "pass input_shape (C, H, W), e.g. --input-shape 3,224,224"
        )
    return found  # type: ignore[return-value]


def _spec(
    layout: str, scale: float, mean: Sequence[float] | None, std: Sequence[float] | None
) -> InputSpec:
    return InputSpec(
        layout=layout,
        scale=scale,
        mean=tuple(mean) if mean is not None else None,
        std=tuple(std) if std is not None else None,
    )


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


def _shape_text(dims: Sequence[int | None]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _describe(detected: dict[str, str]) -> str:
    return "; ".join(f"{key} {value}" for key, value in detected.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
