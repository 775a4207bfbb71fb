"""Adapter for PyTorch modules and TorchScript modules: differentiable, on the module's device."""

from __future__ import annotations

import dataclasses
import itertools

import torch
from torch import nn

from pixelguard.errors import ConfigError, ModelError, first_line
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_MEMORY,
    ArrayClassifier,
    Capabilities,
    InputSpec,
    OutputKind,
    differentiable_scores,
    log_probabilities,
    one_tensor,
    resolve_device,
)


class TorchClassifier(ArrayClassifier):
    """A PyTorch (or TorchScript) module as a differentiable :class:`Classifier`.

    The module is switched to eval mode (in place) and run on its own device: the
    device of its first parameter or buffer, or ``device`` when given (the module is
    then moved there, in place), or the CPU. Input chunks are moved to that device,
    converted with ``spec`` (autograd-safe) and fed to the module; scores come back on
    the caller's device.

    Args:
        module: an ``nn.Module`` or a TorchScript module (``torch.jit.load``/``script``).
        input_shape: ``(C, H, W)`` of the canonical images the module classifies.
        spec: how the module wants its input (layout, scale, mean/std, dtype);
            default: NCHW float32 in [0, 1].
        output: what the module returns (``"logits"``, ``"probabilities"``,
            ``"labels"``), or None to detect it from a probe batch.
        batch_size: most images per forward pass (``load_model(batch_size="auto")``
            measures the fastest).
        device: where to run the module: ``"cpu"``, ``"cuda"``, ``"cuda:0"``, or
            ``"auto"`` (the GPU when torch sees one); default: where it is.
        max_memory: bytes of input and activations one forward pass may hold; attacks
            also size their candidate batches by it.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) float32 scores of kind
        ``output``, on x's device, without autograd.
        logits: x (N, C, H, W) float32 -> (N, K) float32 logits, differentiable with
        respect to x; log-probabilities when the module outputs probabilities.

    Raises:
        ConfigError: ``module`` is not a torch module, a bad shape/batch size, or a
            device this machine does not have.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> clf = TorchClassifier(net, (1, 2, 2), output="logits")
        >>> clf.predict(torch.zeros(5, 1, 2, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: tuple[int, int, int],
        spec: InputSpec | None = None,
        output: OutputKind | str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: str | torch.device | None = None,
        max_memory: int = DEFAULT_MAX_MEMORY,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ConfigError(
                f"TorchClassifier needs a torch.nn.Module or TorchScript module, "
                f"got {type(module).__name__}"
            )
        super().__init__(
            input_shape=input_shape,
            spec=spec if spec is not None else InputSpec(),
            output=output,
            batch_size=batch_size,
            gradients=True,
            max_memory=max_memory,
        )
        resolved = resolve_device(device)
        if resolved is not None:
            module.to(resolved)
            self.device = torch.device(resolved)
        else:
            self.device = _module_device(module)
        module.eval()
        self.module = module

    @property
    def capabilities(self) -> Capabilities:
        """Gradients are offered unless the module returns labels or takes uint8 input."""
        caps = super().capabilities
        differentiable = caps.output is not OutputKind.LABELS and self.spec.dtype != "uint8"
        return dataclasses.replace(caps, gradients=differentiable)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = self.spec.to_model(x.to(self.device))
        try:
            out = self.module(inputs)
        except RuntimeError as exc:
            raise ModelError(
                f"the module failed on input of shape {tuple(inputs.shape)} "
                f"(layout {self.spec.layout}, dtype {self.spec.dtype}): {first_line(exc)}; "
                "check input_shape, layout and batch_size"
            ) from exc
        return one_tensor(out, "the module")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a canonical batch, under autograd, computed in chunks.

        Shape:
            x: (N, C, H, W) float32 -> (N, K) float32 on x's device. For a module that
            outputs probabilities this is ``log(probabilities)`` (floored at 1e-12),
            which differs from logits only by a per-row constant.

        Raises:
            ModelError: the input has the wrong image shape, or the module returned
                something other than finite (N, K) scores.
        """
        output = self.capabilities.output
        scores = differentiable_scores(
            x, self.input_shape, self.batch_size, self._forward, "the module"
        )
        if output is OutputKind.PROBABILITIES:
            return log_probabilities(scores, output)
        return scores


def _module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer, or the CPU."""
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        return tensor.device
    return torch.device("cpu")
