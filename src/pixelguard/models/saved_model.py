"""Adapter for TensorFlow SavedModel folders: a black-box classifier (scores only).

TensorFlow is imported only when a SavedModel is loaded (the ``tensorflow`` extra).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pixelguard.errors import ModelError, first_line, missing_dependency
from pixelguard.models.base import DEFAULT_BATCH_SIZE, ArrayClassifier, OutputKind
from pixelguard.models.image_input import ImageInput, describe_detected, input_spec

logger = logging.getLogger(__name__)

_TF_DTYPES = ("float32", "float64", "float16", "uint8")


class SavedModelClassifier(ArrayClassifier):
    """A TensorFlow SavedModel folder as a black-box :class:`Classifier` (scores only).

    What ``model.export(path)`` (Keras) or ``tf.saved_model.save`` write: a folder with
    ``saved_model.pb``. Its ``serving_default`` signature must take one image input;
    its dtype sets the input dtype, its shape the layout and image shape as for
    :class:`~pixelguard.models.keras.KerasClassifier`. The output kind is detected from a probe batch. Runs in
    TensorFlow, without gradients: use black-box attacks, or load the ``.keras`` file
    for white-box ones.

    Args:
        path: the SavedModel folder.
        input_shape, layout, scale, mean, std, output, batch_size, open_shape: as for
            :class:`~pixelguard.models.keras.KerasClassifier`.

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
        open_shape: tuple[int, int, int] | None = None,
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
                f"cannot load TensorFlow SavedModel {path}: {first_line(exc)}"
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
        image = ImageInput.detect(dims, input_shape, layout, "channels_last", open_shape)
        super().__init__(
            input_shape=image.shape,
            spec=dataclasses.replace(input_spec(image.layout, scale, mean, std), dtype=dtype),
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
        logger.info("TensorFlow SavedModel %s: %s", path, describe_detected(self.detected))

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        inputs = self.spec.to_model_numpy(x)
        if self._feed_shape is not None:
            inputs = inputs.reshape(inputs.shape[0], *self._feed_shape)
        try:
            outputs = self._signature(**{self._input_name: self._tf.constant(inputs)})
        except Exception as exc:  # TensorFlow raises its own Exception subclasses
            raise ModelError(
                f"the SavedModel {self.path} failed on input of shape {inputs.shape}: "
                f"{first_line(exc)}"
            ) from exc
        values = [v for v in outputs.values() if len(v.shape) == 2] or list(outputs.values())
        return np.asarray(values[0].numpy())


def is_saved_model(path: Path) -> bool:
    """True for a TensorFlow SavedModel folder (one holding ``saved_model.pb``)."""
    return path.is_dir() and (path / "saved_model.pb").is_file()
