"""One entry point from "what the user named" to a :class:`Classifier`.

``load_model`` accepts a model object, a file, a ``file.py:factory`` reference or a
remote endpoint URL, and picks the adapter. It never runs code from a file the user
did not explicitly choose to run:

- pixelguard checkpoints are read with ``torch.load(weights_only=True)``;
- TorchScript files are loaded with ``torch.jit.load`` (TorchScript, not pickle);
- Keras files are loaded with Keras's safe mode, which refuses stored Python code
  (``Lambda`` layers) unless ``trust_pickle=True``;
- full pickles (``torch.save(model)``, ``.pkl``, ``.joblib``) are refused with
  :class:`UnsafeLoadError` unless ``trust_pickle=True``;
- ``file.py:factory`` imports and runs ``file.py``: naming it is the opt-in.

``batch_size="auto"`` measures the fastest batch size of a local model once per model
and machine (:mod:`pixelguard.models.calibration`); ``max_memory`` bounds it, and
``device``/``threads`` say where and on how many CPU threads models run.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import pickle
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pixelguard.errors import ConfigError, ModelError, PixelguardError, UnsafeLoadError, first_line
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_MEMORY,
    ArrayClassifier,
    Classifier,
    InputSpec,
    OutputKind,
    parse_floats,
    parse_shape,
    resolve_device,
)
from pixelguard.models.calibration import (
    Calibration,
    calibrate,
    format_bytes,
    memory_cap,
    parse_memory,
)
from pixelguard.models.callable import CallableClassifier
from pixelguard.models.keras import KERAS_SUFFIXES, KerasClassifier, load_keras_file
from pixelguard.models.onnx import OnnxClassifier
from pixelguard.models.resize import ResizeInput
from pixelguard.models.saved_model import SavedModelClassifier, is_saved_model
from pixelguard.models.sklearn import SklearnClassifier
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.zoo import CHECKPOINT_FORMAT, checkpoint_from_dict, torch_load_failure

logger = logging.getLogger(__name__)

_TORCH_SUFFIXES = (".pt", ".pth")
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
_SUPPORTED = (
    ".pt/.pth (pixelguard checkpoint or TorchScript), .onnx, .keras/.h5 (Keras 3), "
    "a TensorFlow SavedModel folder, "
    ".joblib/.pkl/.pickle (with --trust-pickle), file.py:factory, http(s):// endpoint"
)
AUTO = "auto"
"""The batch size (and device) that pixelguard chooses: measured (the GPU if there is one)."""


def parse_batch_size(value: int | str, what: str = "batch_size") -> int | str:
    """A batch-size option: a positive whole number (``"64"`` or 64), or ``"auto"``.

    Raises:
        ConfigError: anything else; ``what`` names the option.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.isdigit() and int(text) > 0:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ConfigError(f"{what} must be a positive whole number or auto, got {value!r}")


def parse_threads(value: int | str | None, what: str = "threads") -> int | str | None:
    """A thread-count option: a positive whole number, ``"auto"`` (measured with the
    batch size), or None (torch's default).

    Raises:
        ConfigError: anything else; ``what`` names the option.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what} must be a positive whole number or auto, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class _Options:
    """The user's adapter options; None means "not set" (checkpoint values then win)."""

    input_shape: tuple[int, int, int] | None
    layout: str | None
    scale: float | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    output: str | None
    batch_size: int | str
    device: str | None
    data_shape: tuple[int, int, int] | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    memory_given: bool = False
    threads: int | str | None = None

    @property
    def first_batch_size(self) -> int:
        """The batch size an adapter is built with (before calibration, under ``auto``)."""
        return self.batch_size if isinstance(self.batch_size, int) else DEFAULT_BATCH_SIZE

    def torch_device(self, module: nn.Module | None = None) -> str | None:
        """The device for a torch model: ``auto`` keeps a module that is already on an
        accelerator where it is, else the GPU when torch sees one, else the CPU."""
        if self.device is not None and self.device.strip().lower() == AUTO and module is not None:
            for tensor in [*module.parameters(), *module.buffers()][:1]:
                if tensor.device.type != "cpu":
                    return None
        return resolve_device(self.device)

    def keras_device(self) -> str | None:
        """The device for a Keras model: ``auto`` leaves it to Keras (the GPU if any)."""
        if self.device is not None and self.device.strip().lower() == AUTO:
            return None
        return resolve_device(self.device)

    def spec(self, base: InputSpec | None = None) -> InputSpec:
        """``base`` (default ``InputSpec()``) with every option the user set applied."""
        changes = {
            name: getattr(self, name)
            for name in ("layout", "scale", "mean", "std")
            if getattr(self, name) is not None
        }
        return dataclasses.replace(base if base is not None else InputSpec(), **changes)

    def shape_for(self, what: str) -> tuple[int, int, int]:
        """``input_shape``, else the data's image shape, else ConfigError naming ``what``."""
        if self.input_shape is not None:
            return self.input_shape
        if self.data_shape is not None:
            logger.info(
                "%s does not record its input size; using the data's %s", what, self.data_shape
            )
            return self.data_shape
        raise ConfigError(
            f"{what} does not record its input size; pass input_shape=(C, H, W) of the "
            "images it classifies (--input-shape C,H,W on the command line)"
        )

    def takes_shape_from_data(self) -> bool:
        """True when a model that records no input size gets the data's image shape."""
        return self.input_shape is None and self.data_shape is not None


def load_model(
    spec: str | Path | object,
    *,
    input_shape: Sequence[int] | None = None,
    layout: str | None = None,
    scale: float | None = None,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    output: str | None = None,
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    trust_pickle: bool = False,
    device: str | None = None,
    http_config: str | Path | None = None,
    submitted_shape: Sequence[int] | None = None,
    resize_mode: str = "bilinear",
    crop: Sequence[int] | None = None,
    data_shape: Sequence[int] | None = None,
    max_memory: int | str | None = None,
    threads: int | None = None,
) -> Classifier:
    """Turn a model object, file, factory reference or endpoint into a Classifier.

    Args:
        spec: one of

            - an ``nn.Module``/TorchScript module, a fitted scikit-learn classifier,
              a function ``numpy batch -> (N, K) scores``, or a pixelguard Classifier
              (returned as is);
            - a ``.pt``/``.pth`` file: a pixelguard checkpoint (input shape and spec are
              read from it), a TorchScript file, or, only with ``trust_pickle``, a
              fully pickled module;
            - an ``.onnx`` file;
            - a Keras 3 ``.keras``/``.h5`` file (differentiable on Keras's torch
              backend; layout and softmax output are detected), or a TensorFlow
              SavedModel folder (scores only; needs TensorFlow);
            - a ``.joblib``/``.pkl``/``.pickle`` file (only with ``trust_pickle``);
            - ``"path/to/file.py:factory"``: imports the file and calls ``factory()``,
              which returns any object above. This runs the file's code, which is
              what naming it asks for;
            - an ``http://``/``https://`` URL, handed to :mod:`pixelguard.models.http`.
        input_shape: ``(C, H, W)``; needed where the model does not record it.
        layout: ``"nchw"`` or ``"nhwc"``; default from the checkpoint, else ``"nchw"``.
        scale: multiply [0, 1] pixels by this (255 for 0..255 models); default 1 or
            the checkpoint's.
        mean: per-channel mean to subtract after scaling, ``"0.5,0.5,0.5"`` or a sequence.
        std: per-channel std to divide by after subtracting the mean.
        output: ``"logits"``, ``"probabilities"`` or ``"labels"``; None detects it
            from a probe batch (checkpoints are logits).
        batch_size: most images per model call, or ``"auto"``: measured for this
            model on this machine (a few seconds for a 224-pixel CNN on a CPU,
            milliseconds for a tiny one) and cached, see
            :func:`~pixelguard.models.calibration.calibrate`. scikit-learn models then
            keep their own default and an endpoint's config always sets its own.
        trust_pickle: allow loading files whose loading runs code (pickle, joblib).
        device: where torch, Keras and ONNX models run: ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, or ``"auto"`` (the GPU when torch sees one; ONNX models
            need onnxruntime's CUDA provider for it); default: where the module's
            weights are, the CPU for files.
        http_config: endpoint configuration file for ``http(s)://`` models only.
        submitted_shape: ``(C, H, W)`` or ``(H, W)`` of the images as submitted when
            the deployed model resizes them; the adapter is then wrapped in a
            :class:`~pixelguard.models.resize.ResizeInput`, so attacks work on (and
            count pixels in) the submitted images. None: images are the model's input.
        resize_mode: interpolation of that resize (see ``ResizeInput``).
        crop: ``(H, W)`` of a centre crop of the submitted image taken before the
            resize (see ``ResizeInput``); only with ``submitted_shape``.
        data_shape: ``(C, H, W)`` of the images to be classified, used as the input
            size of a model that records none (a torch module, a scikit-learn
            estimator, a callable) when ``input_shape`` is not given; one probe
            batch checks that the model accepts it.
        max_memory: bytes (or a size such as ``"512M"``, ``"2G"``) of input and
            activations one model call may hold; it caps the batch size, and attacks
            read it as their budget for candidate images. Default
            :data:`~pixelguard.defaults.DEFAULT_MAX_MEMORY`. When given with a fixed
            ``batch_size``, that size is lowered to fit (one image is measured).
        threads: CPU threads for torch (``torch.set_num_threads``, for the whole
            process) and onnxruntime; None keeps torch's default (one per core);
            ``"auto"``, with ``batch_size="auto"``, calibrates a torch model on the CPU
            at one thread and at torch's default and keeps the faster (both cached).

    Returns:
        A Classifier (a :class:`TorchClassifier` is also ``Differentiable``, and so is
        its ``ResizeInput``).

    Shape:
        returned ``predict``: x (N, C, H, W) float32 in [0, 1] -> (N, K) float32.

    Raises:
        ModelError: missing, corrupt or unusable model file.
        UnsafeLoadError: the file is a pickle and ``trust_pickle`` is False.
        ConfigError: invalid options, a missing ``input_shape``, an unsupported file
            type, an endpoint URL when the http adapter is not installed, a device
            this machine does not have, or one image needing more than ``max_memory``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> load_model(net, input_shape=(1, 8, 8)).num_classes
        10
    """
    options = _Options(
        input_shape=parse_shape(input_shape),
        layout=layout,
        scale=scale,
        mean=parse_floats(mean, "mean"),
        std=parse_floats(std, "std"),
        output=output,
        batch_size=parse_batch_size(batch_size),
        device=device,
        data_shape=parse_shape(data_shape, "data_shape"),
        max_memory=DEFAULT_MAX_MEMORY if max_memory is None else parse_memory(max_memory),
        memory_given=max_memory is not None,
        threads=parse_threads(threads),
    )
    options.spec()  # validate layout/scale/std before loading anything
    if not _runs_outside_torch(spec):
        resolve_device(device)  # a GPU this machine lacks fails before anything loads
    if isinstance(options.threads, int) and options.threads != torch.get_num_threads():
        torch.set_num_threads(options.threads)
    if submitted_shape is None and crop is not None:
        raise ConfigError("crop applies only with submitted_shape")
    model = _load_adapter(spec, options, trust_pickle, http_config)
    if submitted_shape is None:
        return model
    return ResizeInput(model, submitted_shape, mode=resize_mode, crop=crop)


def _runs_outside_torch(spec: object) -> bool:
    """True for an ONNX file or an endpoint, whose device torch does not decide."""
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        return True
    return isinstance(spec, (str, Path)) and str(spec).lower().endswith(".onnx")


def _load_adapter(
    spec: str | Path | object,
    options: _Options,
    trust_pickle: bool,
    http_config: str | Path | None,
) -> Classifier:
    """The adapter for ``spec`` (see :func:`load_model`)."""
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        return _load_http(spec, options, http_config)
    if http_config is not None:
        raise ConfigError("http_config applies only to http:// and https:// endpoints")
    if isinstance(spec, (str, Path)):
        path, factory = _split_factory(spec)
        if factory is not None:
            return _load_factory(path, factory, options)
        return _load_file(path, options, trust_pickle)
    return _from_object(spec, options, what=type(spec).__name__)


def _split_factory(spec: str | Path) -> tuple[Path, str | None]:
    """Split ``"file.py:factory"`` into the file and the function name."""
    if isinstance(spec, str):
        head, sep, name = spec.rpartition(":")
        if sep and head.endswith(".py") and name.isidentifier():
            return Path(head).expanduser(), name
    return Path(spec).expanduser(), None


def _from_object(obj: object, options: _Options, *, what: str) -> Classifier:
    """Wrap a loaded or given model object in the matching adapter.

    A model given the data's image shape (it records none) is probed once, so that a
    model that wants another size fails here, with the option that fixes it.
    """
    model = _adapter_for(obj, options, what=what)
    if model is obj:
        return model  # already a Classifier: the adapter options do not apply
    if options.takes_shape_from_data():
        try:
            model.num_classes  # noqa: B018  (the probe batch)
        except PixelguardError as exc:
            raise ConfigError(
                f"{what} does not record its input size and fails on the data's images of "
                f"shape {options.data_shape} ({first_line(exc)}); pass --input-shape C,H,W "
                "(input_shape=) with the size it takes"
            ) from exc
    return _tune(model, options)


DEFAULT_THREADS = torch.get_num_threads()
"""torch's own thread count in this process, before any option changed it."""


def _calibrate_threads(model: ArrayClassifier, options: _Options) -> Calibration:
    """The batch-size calibration of ``model``; under ``threads="auto"``, of a torch
    model on the CPU at one thread and at torch's default, keeping (and setting) the
    thread count whose fastest batch runs more images per second.

    One thread wins on a machine whose other cores are busy (each op then waits for
    a thread that is not scheduled) and for small models; all cores win for large
    models on an idle machine. Each count's calibration is cached on its own.
    """
    candidates = sorted({1, DEFAULT_THREADS})
    on_cpu = isinstance(model, TorchClassifier) and model.device.type == "cpu"
    if options.threads != AUTO or not on_cpu or len(candidates) == 1:
        return calibrate(model, max_memory=options.max_memory)
    measured = {}
    for threads in candidates:
        torch.set_num_threads(threads)
        measured[threads] = calibrate(model, max_memory=options.max_memory)
    best = max(candidates, key=lambda t: measured[t].throughput[measured[t].batch_size])
    torch.set_num_threads(best)
    logger.info("threads: %d (of %s, by measurement)", best, candidates)
    return measured[best]


def _tune(model: Classifier, options: _Options) -> Classifier:
    """Give an adapter built here the memory budget and, under ``batch_size="auto"``,
    its measured batch size; with a fixed size and a ``max_memory`` given, lower the
    size to what fits.

    Raises:
        ConfigError: one image needs more than ``max_memory``.
    """
    if not isinstance(model, ArrayClassifier):
        return model
    model.max_memory = options.max_memory
    fixed_batch = getattr(model, "_fixed_batch", None) is not None  # an ONNX batch dimension
    if options.batch_size == AUTO and not fixed_batch and not isinstance(model, SklearnClassifier):
        calibration = _calibrate_threads(model, options)
        model.batch_size = calibration.batch_size
        model.calibration = calibration  # type: ignore[attr-defined]
    elif options.memory_given:
        cap, per_image = memory_cap(model, options.max_memory)
        if model.batch_size > cap and not fixed_batch:
            logger.warning(
                "batch size %d needs about %s, over max_memory %s; using %d",
                model.batch_size,
                format_bytes(model.batch_size * per_image),
                format_bytes(options.max_memory),
                cap,
            )
            model.batch_size = cap
    return model


def _adapter_for(obj: object, options: _Options, *, what: str) -> Classifier:
    """The adapter that matches ``obj``."""
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(obj, keras.Model):
        # on Keras's torch backend a Keras model is also an nn.Module, but NHWC
        return KerasClassifier(obj, device=options.keras_device(), **_keras_settings(options))
    if isinstance(obj, nn.Module):
        return TorchClassifier(
            obj,
            options.shape_for(what),
            spec=options.spec(),
            output=options.output,
            batch_size=options.first_batch_size,
            device=options.torch_device(obj),
        )
    if isinstance(obj, Classifier):
        logger.debug("%s is already a pixelguard Classifier; adapter options are not used", what)
        return obj
    if hasattr(obj, "predict_proba") or (hasattr(obj, "fit") and hasattr(obj, "predict")):
        if options.output not in (None, OutputKind.PROBABILITIES.value):
            raise ConfigError(
                f"scikit-learn models give probabilities; output {options.output!r} does not apply"
            )
        sized: dict[str, int] = (
            {"batch_size": options.batch_size} if isinstance(options.batch_size, int) else {}
        )
        return SklearnClassifier(
            obj,
            options.shape_for(what),
            spec=dataclasses.replace(options.spec(), flatten=True),
            **sized,
        )
    if callable(obj):
        return CallableClassifier(
            obj,
            options.shape_for(what),
            spec=options.spec(),
            output=options.output,
            batch_size=options.first_batch_size,
        )
    raise ConfigError(
        f"cannot make a classifier from {what}: expected a torch module, a scikit-learn "
        "classifier, a function returning (N, K) scores, or a pixelguard Classifier"
    )


def _load_file(path: Path, options: _Options, trust_pickle: bool) -> Classifier:
    if is_saved_model(path):
        return _load_keras(path, options, trust_pickle)
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a model file; supported: {_SUPPORTED}")
    if not path.exists():
        raise ModelError(f"no such model file: {path}")
    suffix = path.suffix.lower()
    if suffix in _TORCH_SUFFIXES:
        return _load_torch_file(path, options, trust_pickle)
    if suffix == ".onnx":
        onnx_model = OnnxClassifier(
            path,
            input_shape=options.input_shape,
            open_shape=options.data_shape,
            spec=options.spec(),
            output=options.output,
            batch_size=options.first_batch_size,
            device=options.device,
            threads=options.threads if isinstance(options.threads, int) else None,
        )
        return _tune(onnx_model, options)
    if suffix in KERAS_SUFFIXES:
        return _load_keras(path, options, trust_pickle)
    if suffix in _PICKLE_SUFFIXES:
        return _load_pickle(path, options, trust_pickle)
    if suffix == ".py":
        raise ConfigError(f"name the function that builds the model: {path}:make_model")
    raise ConfigError(f"unsupported model file {path.name}; supported: {_SUPPORTED}")


def _load_keras(path: Path, options: _Options, trust_pickle: bool) -> Classifier:
    """A Keras file or TensorFlow SavedModel folder."""
    if path.is_dir():
        return _tune(SavedModelClassifier(path, **_keras_settings(options)), options)
    device = options.keras_device()
    model = load_keras_file(path, trust_pickle=trust_pickle, device=device)
    return _tune(KerasClassifier(model, device=device, **_keras_settings(options)), options)


def _keras_settings(options: _Options) -> dict[str, Any]:
    """The user's options for a Keras or SavedModel adapter; they override what it detects."""
    return {
        "input_shape": options.input_shape,
        "layout": options.layout,
        "scale": options.scale if options.scale is not None else 1.0,
        "mean": options.mean,
        "std": options.std,
        "output": options.output,
        "batch_size": options.first_batch_size,
        "open_shape": options.data_shape,
    }


def _load_torch_file(path: Path, options: _Options, trust_pickle: bool) -> Classifier:
    """A ``.pt``/``.pth`` file: checkpoint, TorchScript, or (trusted) full pickle."""
    if _is_torchscript(path):
        try:
            module = torch.jit.load(  # type: ignore[no-untyped-call]
                str(path), map_location=options.torch_device() or "cpu"
            )
        except RuntimeError as exc:
            raise ModelError(f"cannot load TorchScript file {path}: {first_line(exc)}") from exc
        return _from_object(module, options, what=f"TorchScript file {path}")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        unsafe = _unsafe_global(exc)
        if unsafe is None:
            raise ModelError(
                f"cannot read {path}: it is not a pixelguard checkpoint, TorchScript or "
                f"torch.save file ({torch_load_failure(exc, path)})"
            ) from exc
        if not trust_pickle:
            raise UnsafeLoadError(
                f"{path} is a fully pickled PyTorch object (it refers to {unsafe}); loading "
                "it runs code from the file. Pass --trust-pickle if you trust its source, or "
                "save it as TorchScript or a pixelguard checkpoint"
            ) from None
        return _from_object(_trusted_torch_load(path), options, what=f"pickled object in {path}")
    return _from_torch_payload(payload, path, options)


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (a zip holding ``constants.pkl``)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[-1] == "constants.pkl" for name in archive.namelist())


def _unsafe_global(exc: Exception) -> str | None:
    """The global a weights-only load refused (a pickled object), or None if corrupt."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return match.group(1) if match else None


def _trusted_torch_load(path: Path) -> Any:
    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:  # unpickling runs arbitrary code and can raise anything
        raise ModelError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc


def _from_torch_payload(payload: object, path: Path, options: _Options) -> Classifier:
    """A weights-only payload: a pixelguard checkpoint, or an explanation of what it is."""
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        module, meta = checkpoint_from_dict(payload, str(path))
        shape = meta["input_shape"]
        if options.input_shape is not None and options.input_shape != shape:
            raise ConfigError(
                f"{path} was trained on images of shape {shape}, "
                f"but input_shape is {options.input_shape}"
            )
        checkpoint_model = TorchClassifier(
            module,
            shape,
            spec=options.spec(meta["spec"]),
            output=options.output or OutputKind.LOGITS,
            batch_size=options.first_batch_size,
            device=options.torch_device(),
        )
        return _tune(checkpoint_model, options)
    hint = (
        "save a pixelguard checkpoint, a TorchScript file (torch.jit.script(model).save(path)) "
        "or name a factory that builds the network: model.py:make_model"
    )
    if (
        isinstance(payload, dict)
        and payload
        and all(isinstance(v, torch.Tensor) for v in payload.values())
    ):
        raise ModelError(
            f"{path} holds only weights (a state_dict) without the network's code; {hint}"
        )
    raise ModelError(f"{path} holds a {type(payload).__name__}, not a model; {hint}")


def _load_pickle(path: Path, options: _Options, trust_pickle: bool) -> Classifier:
    if not trust_pickle:
        raise UnsafeLoadError(
            f"{path} is a pickle file: loading it runs code; pass --trust-pickle if you "
            "trust its source"
        )
    loader: Callable[[Path], Any]
    try:
        import joblib

        loader = joblib.load
    except ImportError:

        def loader(p: Path) -> Any:
            with p.open("rb") as handle:
                return pickle.load(handle)

    try:
        obj = loader(path)
    except Exception as exc:  # unpickling runs arbitrary code and can raise anything
        raise ModelError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
    return _from_object(obj, options, what=f"object in {path}")


def _load_factory(path: Path, name: str, options: _Options) -> Classifier:
    """Import ``path`` as a module and wrap what ``name()`` returns."""
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    module_name = "_pixelguard_factory_" + re.sub(r"\W", "_", path.stem)
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise ModelError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(import_spec)
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # so the file can import its neighbours
    sys.modules[module_name] = module  # dataclasses and pickle look modules up here
    try:
        import_spec.loader.exec_module(module)
        factory = getattr(module, name, None)
        if not callable(factory):
            raise ConfigError(f"{path} has no function {name!r}")
        obj = factory()
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, PixelguardError) or not isinstance(exc, Exception):
            raise
        # user code can raise anything; keep it as the cause
        raise ModelError(f"running {path}:{name} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(folder)
    return _from_object(obj, options, what=f"{path}:{name}()")


def _load_http(url: str, options: _Options, http_config: str | Path | None) -> Classifier:
    """Hand a remote endpoint to the http adapter, if this installation has it."""
    try:
        http = importlib.import_module("pixelguard.models.http")
    except ModuleNotFoundError as exc:
        if exc.name != "pixelguard.models.http":
            raise
        raise ConfigError(
            f"{url} is a remote endpoint; remote endpoints are handled by the http adapter "
            "(pixelguard.models.http), which this installation does not include"
        ) from exc
    result: Classifier = http.load_http_model(
        url,
        config=http_config,
        input_shape=options.input_shape,
        layout=options.layout,
        scale=options.scale,
        mean=options.mean,
        std=options.std,
        output=options.output,
    )
    result.max_memory = options.max_memory  # type: ignore[attr-defined]
    return result
