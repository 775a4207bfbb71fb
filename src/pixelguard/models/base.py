"""The Classifier protocol, its capabilities, and the input spec adapters convert with.

Every model inside pixelguard is a :class:`Classifier`: it takes a canonical image
batch (float32, [0, 1], NCHW) and returns ``(N, K)`` scores. What the model itself
wants (layout, value scale, mean/std, dtype) is an :class:`InputSpec` the adapter
applies at the edge; what it returns is an :class:`OutputKind`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from pixelguard.checks import check_images
from pixelguard.defaults import DEFAULT_BATCH_SIZE as DEFAULT_BATCH_SIZE
from pixelguard.defaults import DEFAULT_MAX_MEMORY as DEFAULT_MAX_MEMORY
from pixelguard.errors import ConfigError, ModelError


class OutputKind(str, enum.Enum):
    """What a model's scores are: raw logits, probabilities, or one-hot labels only."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    LABELS = "labels"


@dataclass(frozen=True)
class Capabilities:
    """What an attack may rely on, checked once when the attack starts.

    Attributes:
        output: what the scores are.
        gradients: whether ``logits(x)`` can be differentiated.
        deterministic: whether the same input always gets the same scores.
        reject_class: a class that means "input rejected" (a detector's verdict),
            or None. Predicting it never counts as fooling the model, and it cannot
            be an attack's target.
    """

    output: OutputKind = OutputKind.LOGITS
    gradients: bool = False
    deterministic: bool = True
    reject_class: int | None = None

    def __post_init__(self) -> None:
        if self.reject_class is not None and self.reject_class < 0:
            raise ConfigError(f"reject_class must be a class index >= 0, got {self.reject_class}")

    @property
    def scores(self) -> bool:
        """True when the model returns graded scores, not only its top label."""
        return self.output is not OutputKind.LABELS


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input, applied by :meth:`to_model` at the edge.

    The canonical batch ``x`` (NCHW, [0, 1]) becomes ``((x * scale) - mean) / std``
    in ``layout`` and ``dtype``. ``mean``/``std`` are per channel, in the scaled units.
    """

    layout: str = "nchw"
    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dtype: str = "float32"
    flatten: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("nchw", "nhwc"):
            raise ConfigError(f"layout must be 'nchw' or 'nhwc', got {self.layout!r}")
        if not self.scale > 0:
            raise ConfigError(f"scale must be positive, got {self.scale}")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")
        if self.dtype not in ("float32", "float64", "float16", "uint8"):
            raise ConfigError(f"dtype must be float32, float64, float16 or uint8, got {self.dtype}")

    def _channel_stats(self, channels: int) -> tuple[list[float] | None, list[float] | None]:
        def expand(values: tuple[float, ...] | None, what: str) -> list[float] | None:
            if values is None:
                return None
            if len(values) == 1:
                return [values[0]] * channels
            if len(values) != channels:
                raise ConfigError(
                    f"{what} has {len(values)} values but the images have {channels} channels"
                )
            return list(values)

        return expand(self.mean, "mean"), expand(self.std, "std")

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Convert a canonical batch to the model's input (torch, autograd-safe)."""
        mean, std = self._channel_stats(x.shape[1])
        out = x * self.scale if self.scale != 1.0 else x
        if mean is not None:
            out = out - torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if std is not None:
            out = out / torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        if self.layout == "nhwc":
            out = out.permute(0, 2, 3, 1)
        if self.flatten:
            out = out.reshape(out.shape[0], -1)
        if self.dtype == "uint8":
            out = out.round().clamp(0, 255).to(torch.uint8)
        elif self.dtype != "float32":
            out = out.to(getattr(torch, self.dtype))
        return out

    def to_model_numpy(self, x: torch.Tensor) -> np.ndarray:
        """Convert a canonical batch to a contiguous numpy array for non-torch models."""
        with torch.no_grad():
            return np.ascontiguousarray(self.to_model(x.detach()).cpu().numpy())


@runtime_checkable
class Classifier(Protocol):
    """Anything that classifies canonical image batches.

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> scores (N, K) float32, same device.
    """

    @property
    def num_classes(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def predict(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Differentiable(Classifier, Protocol):
    """A classifier whose logits can be differentiated with respect to the input."""

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...


class ClassifierWrapper:
    """Base for a Classifier that wraps another: the wrapped model's classes, input shape
    and capabilities, unless the wrapper overrides them.

    Preprocessing defences, query accounting, resizing and expectation over
    transformation are all wrappers, so any attack can hit any stack of them.
    """

    def __init__(self, model: Classifier) -> None:
        self.model = model

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.model.input_shape

    @property
    def capabilities(self) -> Capabilities:
        return self.model.capabilities


def _wrapped(model: object) -> Iterator[object]:
    """``model`` and every model it wraps (through ``.model``), outermost first."""
    for _ in range(64):  # a bound against a wrapper that wraps itself
        if model is None:
            return
        yield model
        model = getattr(model, "model", None)


def _wrapped_setting(model: object, name: str) -> int | None:
    """The outermost ``name`` attribute (a positive int) along a chain of wrappers, or None."""
    for layer in _wrapped(model):
        value = getattr(layer, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def preferred_batch_size(model: Classifier) -> int:
    """Images per call at which ``model`` runs fastest, as far as pixelguard knows.

    The ``batch_size`` of the adapter under any wrappers (preprocessors, query
    counters, resizing): measured when the model was loaded with ``batch_size="auto"``,
    else the one given; the adapter chunks every call to it.
    """
    return _wrapped_setting(model, "batch_size") or DEFAULT_BATCH_SIZE


def memory_budget(model: Classifier) -> int:
    """Bytes an attack may hold at once in candidate images for ``model``.

    The ``max_memory`` of the adapter under any wrappers, else
    :data:`~pixelguard.defaults.DEFAULT_MAX_MEMORY`.
    """
    return _wrapped_setting(model, "max_memory") or DEFAULT_MAX_MEMORY


def model_device(model: Classifier) -> torch.device:
    """The torch device ``model`` runs on: the ``device`` of the adapter under any
    wrappers, else the CPU. Attacks keep their tensors where their images are; callers
    that want every tensor on the model's device put the images there.
    """
    for layer in _wrapped(model):
        device = getattr(layer, "device", None)
        if isinstance(device, (str, torch.device)):
            try:
                return torch.device(device)
            except RuntimeError:
                break
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> str | None:
    """A device option as a torch device string, checked against this machine.

    ``None`` stays None (the caller's default: where the weights are); ``"auto"`` is
    ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"``, ``"mps"`` and other torch device names are kept once checked.

    Raises:
        ConfigError: not a device name, or a GPU that torch does not see here.
    """
    if device is None:
        return None
    text = str(device).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise ConfigError(
            f"device must be auto, cpu, cuda or cuda:N, got {str(device)!r}"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {text} (--device): torch sees no CUDA GPU on this machine "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ConfigError(
                f"device {text} (--device): torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {text} (--device): torch sees no MPS device here; use cpu")
    return text


def detect_output_kind(scores: torch.Tensor, atol: float = 1e-3) -> OutputKind:
    """Guess what ``scores`` are from their rows.

    Rows that are one-hot are labels, rows of non-negative values summing to one are
    probabilities, anything else is logits.
    """
    s = scores.detach().double()
    if s.numel() == 0:
        return OutputKind.LOGITS
    nonneg = bool((s >= -atol).all())
    sums_to_one = bool(((s.sum(dim=1) - 1).abs() <= atol).all())
    if nonneg and sums_to_one:
        one_hot = bool(((s == 0) | (s == 1)).all()) and s.shape[1] > 1
        return OutputKind.LABELS if one_hot else OutputKind.PROBABILITIES
    return OutputKind.LOGITS


def log_probabilities(scores: torch.Tensor, output: OutputKind) -> torch.Tensor:
    """Scores of the declared kind as log-probabilities (floored to avoid -inf)."""
    if output is OutputKind.LOGITS:
        return torch.log_softmax(scores, dim=1)
    return torch.log(scores.clamp_min(1e-12))


def probabilities(scores: torch.Tensor, output: OutputKind) -> torch.Tensor:
    """Scores of the declared kind as probabilities."""
    if output is OutputKind.LOGITS:
        return torch.softmax(scores, dim=1)
    return scores


def one_tensor(out: object, what: str) -> torch.Tensor:
    """A network's output as one tensor: a lone element of a tuple or list is unwrapped.

    Raises:
        ModelError: ``what`` returned something other than a tensor.
    """
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"{what} returned {type(out).__name__}, expected an (N, K) tensor of scores"
        )
    return out


def differentiable_scores(
    x: torch.Tensor,
    input_shape: tuple[int, int, int],
    batch_size: int,
    forward: Callable[[torch.Tensor], torch.Tensor],
    what: str,
) -> torch.Tensor:
    """``forward`` over ``x`` in chunks of ``batch_size``, under autograd, checked.

    The shared part of every differentiable adapter's ``logits``: ``x`` must have the
    model's image shape, and each chunk must come back as finite ``(n, K)`` scores.

    Shape:
        x: (N, C, H, W) float32 -> (N, K) float32 on x's device.

    Raises:
        ModelError: ``x`` has another image shape, or ``what`` returned something
            other than finite (n, K) scores with K >= 2.
    """
    if x.dim() != 4 or tuple(x.shape[1:]) != input_shape:
        raise ModelError(
            f"the model expects images of shape {input_shape}, got {tuple(x.shape)[1:]}"
        )
    chunks = []
    for chunk in torch.split(x, batch_size):
        out = forward(chunk)
        if out.dim() != 2 or out.shape[0] != chunk.shape[0] or out.shape[1] < 2:
            raise ModelError(
                f"{what} returned shape {tuple(out.shape)} for {chunk.shape[0]} images; "
                f"expected ({chunk.shape[0]}, K) scores with K >= 2"
            )
        chunks.append(out.to(device=x.device, dtype=torch.float32))
    scores = torch.cat(chunks)
    if not bool(torch.isfinite(scores.detach()).all()):
        raise ModelError(f"{what} returned NaN or infinite scores")
    return scores


@dataclass(eq=False)
class ArrayClassifier:
    """Shared adapter machinery: input spec, chunking, output-kind detection, checks.

    ``batch_size`` is the most images per model call (see :func:`preferred_batch_size`);
    ``max_memory`` the bytes of input and activations one call may hold, which attacks
    also read as their budget for candidate images (see :func:`memory_budget`).

    Subclasses implement :meth:`_forward` on one canonical chunk: they convert it with
    their spec, run the model and return its ``(n, K)`` output. The output kind and
    number of classes are read from a probe batch when not given. Adapters compare
    by identity (two adapters with equal settings may wrap different models).
    """

    input_shape: tuple[int, int, int]
    spec: InputSpec = field(default_factory=InputSpec)
    output: OutputKind | str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    gradients: bool = False
    _num_classes: int | None = field(default=None, repr=False)
    max_memory: int = DEFAULT_MAX_MEMORY

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or min(self.input_shape) <= 0:
            raise ConfigError(f"input_shape must be (C, H, W), got {self.input_shape}")
        self.input_shape = tuple(int(v) for v in self.input_shape)  # type: ignore[assignment]
        for name in ("batch_size", "max_memory"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                auto = "; batch_size='auto' is load_model's" if value == "auto" else ""
                raise ConfigError(f"{name} must be a positive whole number, got {value!r}{auto}")
        if self.output is not None:
            self.output = OutputKind(self.output)

    def _forward(self, x: torch.Tensor) -> torch.Tensor | np.ndarray:  # pragma: no cover
        raise ModelError(f"{type(self).__name__} does not implement _forward")

    def _probe(self) -> None:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((4, *self.input_shape), generator=gen)
        with torch.no_grad():
            scores = self._raw_predict(x)
        self._num_classes = int(scores.shape[1])
        if self.output is None:
            self.output = detect_output_kind(scores)

    @property
    def num_classes(self) -> int:
        if self._num_classes is None:
            self._probe()
        assert self._num_classes is not None
        return self._num_classes

    @property
    def capabilities(self) -> Capabilities:
        if self.output is None:
            self._probe()
        return Capabilities(output=OutputKind(self.output), gradients=self.gradients)

    def _raw_predict(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ModelError(
                f"the model expects images of shape {self.input_shape}, got {tuple(x.shape[1:])}"
            )
        chunks = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            out = self._forward(chunk)
            chunks.append(_as_scores(out, chunk.shape[0]).to(x.device))
        if not chunks:
            return torch.zeros((0, self._num_classes or 0), device=x.device)
        return torch.cat(chunks)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Scores for a canonical batch, computed in chunks of ``batch_size``."""
        check_images(x)
        with torch.no_grad():
            return self._raw_predict(x)


def _as_scores(out: object, n: int) -> torch.Tensor:
    """Turn a model's raw output into an (n, K) float32 tensor or raise ModelError."""
    if isinstance(out, (tuple, list)) and len(out) == 1:
        out = out[0]
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.asarray(out))
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"the model returned {type(out).__name__}, expected an (N, K) array of scores"
        )
    if out.dim() != 2 or out.shape[0] != n:
        raise ModelError(
            f"the model returned shape {tuple(out.shape)} for {n} images; expected ({n}, K) scores"
        )
    if out.shape[1] < 2:
        raise ModelError("the model returned fewer than 2 class scores")
    out = out.detach().to(torch.float32)
    if not torch.isfinite(out).all():
        raise ModelError("the model returned NaN or infinite scores")
    return out


def parse_number(text: str) -> float:
    """``"0.03"`` or a fraction ``"8/255"`` (how budgets are written in the field) as a float.

    Raises:
        ValueError: neither a number nor ``a/b`` with a non-zero ``b``.
    """
    numerator, sep, denominator = text.strip().partition("/")
    if not sep:
        return float(numerator)
    divisor = float(denominator)
    if divisor == 0:
        raise ValueError(f"division by zero in {text!r}")
    return float(numerator) / divisor


def parse_shape(
    shape: str | Sequence[int] | None, what: str = "input_shape"
) -> tuple[int, int, int] | None:
    """``"1,28,28"``, ``"1x28x28"`` or ``(1, 28, 28)`` as a ``(C, H, W)`` tuple (None stays None).

    Raises:
        ConfigError: not three positive whole numbers; ``what`` names the option.
    """
    if shape is None:
        return None
    parts = shape.replace("x", ",").replace(" ", "").split(",") if isinstance(shape, str) else shape
    values = [p for p in parts if p != ""]
    try:
        sizes = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) != 3 or min(sizes) <= 0 or any(isinstance(v, float) and v % 1 for v in values):
        raise ConfigError(f"{what} must be C,H,W (three positive whole numbers), got {shape!r}")
    return sizes[0], sizes[1], sizes[2]


def parse_floats(text: str | Sequence[float] | None, what: str) -> tuple[float, ...] | None:
    """Parse ``"0.5,0.5,0.5"`` (or a sequence) into a tuple of floats for mean/std."""
    if text is None:
        return None
    if isinstance(text, str):
        try:
            values = tuple(parse_number(v) for v in text.replace(" ", "").split(",") if v)
        except ValueError as exc:
            raise ConfigError(
                f"{what} must be comma-separated numbers or fractions such as 8/255, got {text!r}"
            ) from exc
    else:
        values = tuple(float(v) for v in text)
    if not values:
        raise ConfigError(f"{what} is empty")
    return values
