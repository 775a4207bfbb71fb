"""Adapter for ONNX models, run with onnxruntime on the CPU or, with onnxruntime-gpu, CUDA.

onnxruntime is imported only when an :class:`OnnxClassifier` is built, so importing
this module is cheap and works without the ``onnx`` extra.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelguard.errors import ConfigError, ModelError, require
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_MEMORY,
    ArrayClassifier,
    InputSpec,
    OutputKind,
)

logger = logging.getLogger(__name__)

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
}


class OnnxClassifier(ArrayClassifier):
    """An ONNX model file as a black-box :class:`Classifier` (onnxruntime).

    The model must have one image input. Its element type sets the input dtype
    (float32, float64, float16 or uint8; ``spec.dtype`` is overridden). When the
    input's image dimensions are fixed in the file, ``input_shape`` is read from them
    (as NCHW or NHWC per ``spec.layout``); otherwise it must be given. A fixed batch
    dimension is honoured by padding the last chunk. The first output of rank 2 is
    taken as the scores (the first output when none is).

    Args:
        path: the ``.onnx`` file.
        input_shape: ``(C, H, W)``; required when the file leaves the image size open.
        open_shape: the ``(C, H, W)`` to use when the file leaves the image size open
            and ``input_shape`` is not given (the loader passes the data's image size).
        spec: layout, scale and mean/std the model wants; default NCHW in [0, 1].
        output: ``"logits"``, ``"probabilities"``, ``"labels"``, or None to detect.
        batch_size: most images per ``session.run``.
        device: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (onnxruntime's
            ``CUDAExecutionProvider``, which onnxruntime-gpu installs), or ``"auto"``:
            CUDA when that provider is installed and torch sees a GPU, else the CPU.
            None is the CPU.
        threads: onnxruntime's intra-op threads on the CPU; None: its default.
        max_memory: bytes of input and activations one call may hold.

    Attributes:
        providers: the execution providers the session runs on.

    Shape:
        model input: (n, C, H, W) or (n, H, W, C) or (n, C*H*W), per ``spec``.
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) float32 on x's device.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        ModelError: the file is missing or unreadable, has several inputs or an
            unsupported input type, or its fixed input shape disagrees with ``input_shape``.
        ConfigError: the image size is open in the file and ``input_shape`` is not given,
            or ``device`` asks for CUDA and the CUDA provider is not installed.

    Example:
        >>> clf = OnnxClassifier("model.onnx")  # doctest: +SKIP
        >>> clf.predict(torch.rand(4, *clf.input_shape)).shape  # doctest: +SKIP
        torch.Size([4, 10])
    """

    def __init__(
        self,
        path: str | Path,
        input_shape: tuple[int, int, int] | None = None,
        spec: InputSpec | None = None,
        output: OutputKind | str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        open_shape: tuple[int, int, int] | None = None,
        device: str | None = None,
        threads: int | None = None,
        max_memory: int = DEFAULT_MAX_MEMORY,
    ) -> None:
        ort = require("onnxruntime", "onnx", "ONNX models")
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"no such model file: {path}")
        providers = _providers(ort, device)
        options = ort.SessionOptions()  # type: ignore[attr-defined]
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(  # type: ignore[attr-defined]
                str(path), sess_options=options, providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own Exception subclasses
            raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        if wanted[0] not in session.get_providers():
            raise ConfigError(
                f"device {device} (--device): onnxruntime could not start {wanted[0]} "
                "(see its warnings); use --device cpu"
            )
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(
                f"{path} has {len(inputs)} inputs ({names}); pixelguard needs one image input"
            )
        model_input = inputs[0]
        dtype = _ONNX_DTYPES.get(model_input.type)
        if dtype is None:
            raise ModelError(
                f"{path}: input {model_input.name!r} has type {model_input.type}; "
                f"supported: {', '.join(_ONNX_DTYPES)}"
            )
        spec = dataclasses.replace(spec if spec is not None else InputSpec(), dtype=dtype)
        dims = list(model_input.shape)
        file_shape = _image_shape(dims, spec, path)
        if input_shape is None and file_shape is None and open_shape is not None:
            input_shape = open_shape
        if input_shape is None:
            if file_shape is None:
                raise ConfigError(
                    f"{path} leaves the image size open (input {model_input.name!r} has shape "
                    f"{dims}); pass input_shape=(C, H, W) (--input-shape C,H,W)"
                )
            input_shape = file_shape
        elif file_shape is not None and tuple(input_shape) != file_shape:
            raise ModelError(
                f"{path} takes images of shape {file_shape} (C, H, W) with layout "
                f"{spec.layout}, but input_shape is {tuple(input_shape)}"
            )
        elif spec.flatten and isinstance(dims[1], int) and dims[1] != math.prod(input_shape):
            raise ModelError(
                f"{path} takes {dims[1]} features but images of shape {tuple(input_shape)} "
                f"have {math.prod(input_shape)}"
            )
        fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        super().__init__(
            input_shape=input_shape,
            spec=spec,
            output=output,
            batch_size=fixed_batch or batch_size,
            gradients=False,
            max_memory=max_memory,
        )
        self.path = path
        self.threads = threads
        self.providers: list[str] = list(session.get_providers())
        self._session = session
        self._input_name = model_input.name
        self._fixed_batch = fixed_batch
        outputs = session.get_outputs()
        ranked = [o.name for o in outputs if len(o.shape or ()) == 2]
        self._output_name = ranked[0] if ranked else outputs[0].name

    def _forward(self, x: torch.Tensor) -> np.ndarray:
        inputs = self.spec.to_model_numpy(x)
        n = inputs.shape[0]
        if self._fixed_batch is not None and n < self._fixed_batch:
            pad = np.repeat(inputs[-1:], self._fixed_batch - n, axis=0)
            inputs = np.concatenate([inputs, pad])
        try:
            (out,) = self._session.run([self._output_name], {self._input_name: inputs})
        except Exception as exc:  # onnxruntime raises its own Exception subclasses
            raise ModelError(
                f"the ONNX model {self.path} failed on input of shape {inputs.shape}: {exc}"
            ) from exc
        return np.asarray(out)[:n]


def _providers(ort: object, device: str | None) -> list[Any]:
    """onnxruntime's execution providers for a device option (see :class:`OnnxClassifier`).

    Raises:
        ConfigError: CUDA asked for and its provider is not installed, or a device
            other than auto, cpu, cuda or cuda:N.
    """
    text = (device or "cpu").strip().lower()
    available = list(ort.get_available_providers())  # type: ignore[attr-defined]
    has_cuda = "CUDAExecutionProvider" in available
    if text == "auto":
        text = "cuda" if has_cuda and torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return ["CPUExecutionProvider"]
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ConfigError(
            f"device {device} (--device): ONNX models run on auto, cpu, cuda or cuda:N"
        )
    if not has_cuda:
        raise ConfigError(
            f"device {text} (--device): onnxruntime has no CUDAExecutionProvider here "
            f"(it has {', '.join(available)}); install onnxruntime-gpu, or use --device cpu"
        )
    cuda = ("CUDAExecutionProvider", {"device_id": int(match.group(1) or 0)})
    return [cuda, "CPUExecutionProvider"]


def _image_shape(dims: list[object], spec: InputSpec, path: Path) -> tuple[int, int, int] | None:
    """The (C, H, W) fixed by the model's input dimensions, or None when they are open."""
    rank = 2 if spec.flatten else 4
    if len(dims) != rank:
        expected = "(N, C*H*W)" if spec.flatten else f"(N, ...) in layout {spec.layout}"
        raise ModelError(
            f"{path}: the input has {len(dims)} dimensions {dims}; pixelguard feeds {expected}"
        )
    if spec.flatten:
        return None
    image = dims[1:]
    if not all(isinstance(d, int) and d > 0 for d in image):
        return None
    a, b, c = (int(d) for d in image)  # type: ignore[call-overload]
    if spec.layout == "nhwc":
        if c not in (1, 3, 4) and a in (1, 3, 4):
            raise ConfigError(
                f"{path}: its input {dims} is (N, C, H, W) with {a} channel(s) of {b}x{c}; "
                f"read as nhwc it would take {c} channels: drop --layout nhwc (layout=)"
            )
        return (c, a, b)
    if a not in (1, 3, 4) and c in (1, 3):
        logger.warning(
            "%s: input dims %s look channels-last; pass layout 'nhwc' if the model is NHWC",
            path,
            dims,
        )
    return (a, b, c)
