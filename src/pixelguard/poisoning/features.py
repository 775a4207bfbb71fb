"""Penultimate-layer features of a torch model, the input of training-set screening.

Screening (spectral signatures, activation clustering) looks at what the network
computes just before its classification layer. pixelguard reads it with a forward
hook on the *input* of the module's last ``nn.Linear``, so it supports:

- a :class:`~pixelguard.models.torch.TorchClassifier` (a pixelguard checkpoint from
  ``pixelguard train``, a ``.pt``/``.pth`` module, a ``file.py:factory`` torch module),
- any plain ``nn.Module`` whose last layer is an ``nn.Linear`` producing the class
  scores (a softmax after it is fine).

TorchScript modules (hooks do not run inside compiled code), ONNX, Keras, TensorFlow,
scikit-learn, callable and http models expose no hidden layer: they are refused with a
:class:`~pixelguard.errors.CapabilityError` that says what is supported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pixelguard.checks import check_images
from pixelguard.defaults import DEFAULT_BATCH_SIZE
from pixelguard.errors import CapabilityError, ModelError, first_line
from pixelguard.models.torch import TorchClassifier

SUPPORTED = (
    "screening reads penultimate-layer features from a torch model: a pixelguard "
    "checkpoint (pixelguard train), a torch module file or a file.py:factory module "
    "whose last layer is nn.Linear"
)


def _unsupported(why: str) -> CapabilityError:
    return CapabilityError(f"{why}; {SUPPORTED}")


def last_linear(module: nn.Module) -> nn.Linear:
    """The module's last ``nn.Linear`` in registration order (its classification layer).

    Raises:
        CapabilityError: a TorchScript module, or one without any ``nn.Linear``.
    """
    if isinstance(module, torch.jit.ScriptModule):
        raise _unsupported("a TorchScript module runs compiled code that hooks cannot read")
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise _unsupported(f"the {type(module).__name__} module has no nn.Linear layer")
    return linears[-1]


def _module_and_input(model: Any) -> tuple[nn.Module, Any, torch.device]:
    """The torch module behind ``model``, how to convert canonical input for it, its device."""
    if isinstance(model, TorchClassifier):
        return model.module, model.spec.to_model, model.device
    if isinstance(model, nn.Module):
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return model, lambda x: x, device
    raise _unsupported(f"a {type(model).__name__} model exposes no hidden layer")


def penultimate_features(
    model: TorchClassifier | nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The input of the model's last ``nn.Linear`` for every image, batched, without grad.

    Args:
        model: a :class:`TorchClassifier` or an ``nn.Module`` taking canonical images.
        x: the images.
        batch_size: most images per forward pass (default: the classifier's, else
            :data:`~pixelguard.defaults.DEFAULT_BATCH_SIZE`).

    Returns:
        One feature row per image, float32 on the CPU.

    Shape:
        x: (N, C, H, W) float32 in [0, 1] -> (N, D) float32.

    Raises:
        CapabilityError: not a supported model (see the module docstring), or the last
            ``nn.Linear`` is not the layer that produces the class scores.
        ShapeError, RangeError: invalid images.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
        >>> penultimate_features(net, torch.rand(5, 1, 2, 2)).shape
        torch.Size([5, 6])
    """
    module, to_model, device = _module_and_input(model)
    layer = last_linear(module)
    check_images(x)
    size = batch_size or getattr(model, "batch_size", None) or DEFAULT_BATCH_SIZE
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())
        captured_out.append(output)

    captured_out: list[Any] = []
    rows: list[torch.Tensor] = []
    handle = layer.register_forward_hook(hook)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for chunk in torch.split(x, size):
                captured.clear()
                captured_out.clear()
                try:
                    out = module(to_model(chunk.to(device)))
                except RuntimeError as exc:
                    raise ModelError(
                        f"the module failed on input of shape {tuple(chunk.shape)}: "
                        f"{first_line(exc)}"
                    ) from exc
                _check_last_layer(layer, captured, captured_out, out, chunk.shape[0])
                rows.append(captured[0])
    finally:
        handle.remove()
        module.train(was_training)
    if not rows:
        return torch.zeros(0, layer.in_features)
    return torch.cat(rows)


def _check_last_layer(
    layer: nn.Linear, inputs: list[torch.Tensor], outputs: list[Any], out: Any, n: int
) -> None:
    """The hooked layer ran once on this chunk and gave the module's (N, K) scores."""
    if len(inputs) != 1:
        raise _unsupported(
            f"its last nn.Linear ran {len(inputs)} times in one forward pass, not once"
        )
    scores = out[0] if isinstance(out, (tuple, list)) and out else out
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[0] != n:
        raise _unsupported("the module does not return one row of class scores per image")
    layer_out = outputs[0]
    if (
        not isinstance(layer_out, torch.Tensor)
        or layer_out.shape != scores.shape
        or inputs[0].shape[0] != n
    ):
        raise _unsupported(
            f"its last nn.Linear ({layer.in_features}->{layer.out_features}) is not the "
            f"layer that gives the {scores.shape[1]} class scores"
        )
