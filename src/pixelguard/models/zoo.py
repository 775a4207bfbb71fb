"""Small built-in architectures, and a checkpoint format that loads without running code.

A pixelguard checkpoint is a ``torch.save`` of plain data only (strings, numbers,
lists, dicts and tensors), so :func:`load_checkpoint` reads it with
``torch.load(weights_only=True)``: opening an untrusted checkpoint cannot execute
code. The network is rebuilt from its registered architecture name and parameters.
"""

from __future__ import annotations

import dataclasses
import enum
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pixelguard.errors import ConfigError, ModelError
from pixelguard.models.base import InputSpec
from pixelguard.registry import Registry

CHECKPOINT_FORMAT = "pixelguard-model"
CHECKPOINT_VERSION = 1

ARCHITECTURES: Registry[nn.Module] = Registry("model architecture")


@ARCHITECTURES.register("small-cnn")
def small_cnn(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """conv16-relu-conv32-relu-maxpool2-[conv64-relu-maxpool2]-fc128-relu-fcK.

    The third conv block is added when both image sides are at least 16 pixels, so
    one architecture fits 8x8 digits, 28x28 MNIST and 32x32 CIFAR-10.

    Shape:
        input: (N, in_channels, H, W) -> (N, num_classes) logits.
    """
    height, width = image_size
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]
    channels, height, width = 32, height // 2, width // 2
    if min(image_size) >= 16:
        layers += [nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, height, width = 64, height // 2, width // 2
    layers += [
        nn.Flatten(),
        nn.Linear(channels * height * width, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    ]
    return nn.Sequential(*layers)


@ARCHITECTURES.register("mlp")
def mlp(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> nn.Module:
    """flatten-fc256-relu-fcK.

    Shape:
        input: (N, in_channels, H, W) -> (N, num_classes) logits.
    """
    features = in_channels * image_size[0] * image_size[1]
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, 256), nn.ReLU(), nn.Linear(256, num_classes)
    )


def list_archs() -> list[str]:
    """Names of the registered architectures, sorted."""
    return ARCHITECTURES.names()


def build_model(
    arch: str, in_channels: int, num_classes: int, image_size: Sequence[int]
) -> nn.Module:
    """Build a freshly initialised network of a registered architecture.

    Args:
        arch: a name from :func:`list_archs`, e.g. ``"small-cnn"``.
        in_channels: image channels (1 for grey, 3 for RGB).
        num_classes: number of output logits, at least 2.
        image_size: ``(H, W)``, at least 2 pixels each.

    Returns:
        The network, taking canonical [0, 1] NCHW batches and returning logits.

    Shape:
        returned module: (N, in_channels, H, W) -> (N, num_classes).

    Raises:
        ConfigError: unknown architecture or invalid sizes.

    Example:
        >>> build_model("small-cnn", 1, 10, (8, 8))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    factory = ARCHITECTURES.get(arch)
    size = tuple(int(v) for v in image_size)
    if len(size) != 2 or min(size) < 2:
        raise ConfigError(f"image_size must be (H, W) with sides >= 2, got {tuple(image_size)}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be at least 1, got {in_channels}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    return factory(in_channels=int(in_channels), num_classes=int(num_classes), image_size=size)


def save_checkpoint(
    path: str | Path,
    module: nn.Module,
    *,
    arch: str,
    arch_params: Mapping[str, Any],
    input_shape: Sequence[int],
    class_names: Sequence[str] | None,
    spec: InputSpec,
    metrics: Mapping[str, Any],
) -> Path:
    """Write a checkpoint that :func:`load_checkpoint` reads with ``weights_only=True``.

    Args:
        path: the ``.pt`` file to write (parent folders are created).
        module: the trained network, built by ``build_model(arch, **arch_params)``.
        arch: its registered architecture name.
        arch_params: the keyword arguments of :func:`build_model` besides ``arch``:
            ``in_channels``, ``num_classes``, ``image_size``.
        input_shape: ``(C, H, W)`` of the canonical images it classifies.
        class_names: one name per class, or None.
        spec: how the network wants its input (``InputSpec()`` for zoo training).
        metrics: plain numbers describing training (accuracies, epochs, seconds).

    Returns:
        The path written.

    Raises:
        ConfigError: unknown architecture, class names of the wrong length, or
            metadata that is not plain data.
    """
    ARCHITECTURES.get(arch)
    params = _plain(dict(arch_params), "arch_params")
    if class_names is not None:
        class_names = [str(name) for name in class_names]
        expected = params.get("num_classes")
        if expected is not None and len(class_names) != expected:
            raise ConfigError(f"{len(class_names)} class names for {expected} classes")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_params": params,
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "input_shape": [int(v) for v in input_shape],
        "class_names": class_names,
        "spec": _plain(dataclasses.asdict(spec), "spec"),
        "metrics": _plain(dict(metrics), "metrics"),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def save_zoo_checkpoint(
    path: str | Path,
    module: nn.Module,
    *,
    arch: str,
    input_shape: Sequence[int],
    num_classes: int,
    class_names: Sequence[str] | None,
    metrics: Mapping[str, Any],
) -> Path:
    """:func:`save_checkpoint` for a zoo network built for ``input_shape`` and trained on
    canonical images: ``arch_params`` follow from the shape, the spec is the canonical one."""
    c, h, w = (int(v) for v in input_shape)
    return save_checkpoint(
        path,
        module,
        arch=arch,
        arch_params={"in_channels": c, "num_classes": num_classes, "image_size": [h, w]},
        input_shape=(c, h, w),
        class_names=class_names,
        spec=InputSpec(),
        metrics=metrics,
    )


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Read a pixelguard checkpoint safely (``weights_only=True``) and rebuild its network.

    Args:
        path: a file written by :func:`save_checkpoint`.

    Returns:
        The network in eval mode on the CPU, and the metadata: ``format``, ``version``,
        ``arch``, ``arch_params``, ``input_shape`` (a tuple), ``class_names``,
        ``spec`` (an :class:`InputSpec`) and ``metrics``.

    Raises:
        ModelError: the file is missing, unreadable, or not a pixelguard checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(
            f"{path} is not a pixelguard checkpoint ({torch_load_failure(exc, path)})"
        ) from exc
    return checkpoint_from_dict(payload, str(path))


_OTHER_FORMATS = {
    ".onnx": "an ONNX file",
    ".keras": "a Keras file",
    ".h5": "an HDF5 (Keras) file",
    ".pkl": "a pickle file",
    ".pickle": "a pickle file",
    ".joblib": "a joblib file",
}


def torch_load_failure(exc: BaseException, path: Path) -> str:
    """Why a weights-only ``torch.load`` of ``path`` failed, in a few words.

    torch's own message advises re-running with ``weights_only=False``, which runs any
    code in the file: never pass that advice on. Name the file's format when its
    suffix says it, else keep only torch's technical reason.
    """
    known = _OTHER_FORMATS.get(path.suffix.lower())
    if known is not None:
        return f"it is {known}"
    text = str(exc)
    if "Weights only load failed" in text:
        detail = text.partition("WeightsUnpickler error:")[2].strip()
        reason = detail.splitlines()[0].strip() if detail else ""
        return f"not a torch.save file of weights{': ' + reason if reason else ''}"
    lines = text.strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def checkpoint_from_dict(payload: object, source: str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from an already loaded checkpoint dictionary.

    Args:
        payload: what ``torch.load(..., weights_only=True)`` returned.
        source: where it came from, for error messages.

    Returns:
        As :func:`load_checkpoint`.

    Raises:
        ModelError: not a pixelguard checkpoint, a newer version, or weights that do
            not fit the architecture.
    """
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{source} is not a pixelguard checkpoint")
    version = payload.get("version")
    if version != CHECKPOINT_VERSION:
        raise ModelError(
            f"{source} is checkpoint version {version}; this pixelguard reads version "
            f"{CHECKPOINT_VERSION}"
        )
    missing = {"arch", "arch_params", "state_dict", "input_shape", "spec"} - set(payload)
    if missing:
        raise ModelError(f"{source} lacks {', '.join(sorted(missing))}")
    try:
        module = build_model(payload["arch"], **payload["arch_params"])
        module.load_state_dict(payload["state_dict"])
        spec_fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in payload["spec"].items()
        }
        spec = InputSpec(**spec_fields)
    except (ConfigError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"{source} cannot be rebuilt: {exc}") from exc
    module.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["input_shape"] = tuple(int(v) for v in payload["input_shape"])
    meta["spec"] = spec
    meta.setdefault("class_names", None)
    meta.setdefault("metrics", {})
    return module, meta


def _plain(value: Any, what: str) -> Any:
    """``value`` as plain data that ``weights_only`` loading accepts, or ConfigError."""
    if isinstance(value, enum.Enum):
        return _plain(value.value, what)
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, what) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    raise ConfigError(f"{what} must hold plain numbers, strings, lists and dicts, got {value!r}")
