"""Preprocessing defenses: wrappers that transform the input, then classify it.

Every wrapper is itself a :class:`~pixelguard.models.base.Classifier` (and
differentiable when the wrapped model is), so every attack can hit the defended
model. ``predict(x)`` is ``model.predict(transform(x))``.

White-box attacks call ``logits(x)``. By default its gradient is *straight-through*
(BPDA, Athalye et al. 2018): the forward pass is ``transform(x)`` and the backward
pass treats the transform as the identity, so a gradient attack on a defended model
is adaptive. ``gradient="none"`` differentiates through the transform exactly where
it can (the median: only to the selected median element; rounding and JPEG: zero),
which is the non-adaptive baseline a naive evaluation would run. A defense that only
holds under ``"none"`` breaks gradients and is not robust.

References:
    Athalye, Carlini, Wagner. "Obfuscated gradients give a false sense of security:
    circumventing defenses to adversarial examples." ICML 2018. arXiv:1802.00420.
    Xu, Evans, Qi. "Feature squeezing: detecting adversarial examples in deep neural
    networks." NDSS 2018. arXiv:1704.01155.
"""

from __future__ import annotations

import dataclasses
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch

from pixelguard.checks import check_images
from pixelguard.config import (
    Check,
    at_least,
    between,
    check_constraints,
    int_between,
    one_of,
    positive,
)
from pixelguard.defenses.filters import (
    jpeg_compress,
    local_median,
    reduce_bit_depth,
    remove_outliers,
)
from pixelguard.errors import CapabilityError, ConfigError, ShapeError
from pixelguard.models.base import (
    DEFAULT_BATCH_SIZE,
    Capabilities,
    Classifier,
    ClassifierWrapper,
    Differentiable,
)
from pixelguard.registry import Registry

GradientRule = Literal["bpda", "none"]
"""How ``logits`` differentiates through the transform: straight-through or exact."""

preprocessors: Registry[Preprocessor] = Registry("defense")


def register_preprocessor(name: str) -> Callable[[type[Preprocessor]], type[Preprocessor]]:
    """Class decorator: register a preprocessor under ``name`` and set its ``name``."""

    def decorate(cls: type[Preprocessor]) -> type[Preprocessor]:
        cls.name = name
        preprocessors.register(name)(cls)
        return cls

    return decorate


def create_preprocessor(name: str, model: Classifier, **params: Any) -> Preprocessor:
    """Wrap ``model`` in a registered preprocessor, e.g. ``create_preprocessor("median", m, size=3)``."""
    return preprocessors.get(name)(model, **params)


def list_preprocessors() -> list[str]:
    """Names of all registered preprocessors."""
    return preprocessors.names()


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Preprocessor(ClassifierWrapper, ABC):
    """Base wrapper: a Classifier that classifies ``transform(x)`` with ``model``.

    A preprocessor is a frozen dataclass: subclasses declare their settings as
    fields after ``model`` (the first is the spec's positional value, see
    :meth:`setting_names`), what each must be in ``_constraints`` (see
    :mod:`pixelguard.config`), checked once when it is built, and implement
    :meth:`transform` (vectorised over the batch, torch).

    Args:
        model: the classifier to defend.
        gradient: ``"bpda"`` (straight-through, the default: adaptive attacks) or
            ``"none"`` (exact gradient of the transform: the non-adaptive baseline).
        batch_size: most images transformed at once (bounds the median's unfold).

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K) scores of the wrapped
        model's output kind.
        logits: x (N, C, H, W) float32 -> (N, K), differentiable per ``gradient``.

    Raises:
        ConfigError: an unknown gradient rule or a bad batch size.
    """

    name: ClassVar[str] = "preprocessor"
    random: ClassVar[bool] = False
    """True when :meth:`transform` draws randomness (see :class:`ExpectationOverTransformation`)."""
    _constraints: ClassVar[Mapping[str, Check]] = {
        "gradient": one_of("bpda", "none"),
        "batch_size": at_least(1),
    }

    model: Classifier
    gradient: GradientRule = dataclasses.field(default="bpda", kw_only=True)
    batch_size: int = dataclasses.field(default=DEFAULT_BATCH_SIZE, kw_only=True)

    def __post_init__(self) -> None:
        check_constraints(self.name, self)

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        """The defense's own settings, in order (not ``model``, ``gradient``, ``batch_size``)."""
        common = {"model", "gradient", "batch_size"}
        return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.name not in common)

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped model's, made non-deterministic when the transform is random."""
        caps = self.model.capabilities
        return dataclasses.replace(caps, deterministic=caps.deterministic and not self.random)

    def params(self) -> dict[str, Any]:
        """The configuration as plain data, for reports."""
        settings = {key: getattr(self, key) for key in self.setting_names()}
        return {"defense": self.name, **settings, "gradient": self.gradient}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params().items() if k != "defense")
        return f"{type(self).__name__}({self.model!r}, {settings})"

    @abstractmethod
    def transform(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """The defense's image transform, vectorised over the batch.

        Args:
            x: images.
            generator: randomness for random transforms (default: the wrapper's own,
                seeded one); deterministic transforms ignore it.

        Shape:
            x: (N, C, H, W) float32 in [0, 1] -> (N, C, H, W) float32 in [0, 1].
        """

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``model.predict(transform(x))``, transformed in chunks of ``batch_size``."""
        check_images(x)
        self._check_shape(x)
        with torch.no_grad():
            chunks = [self.transform(chunk) for chunk in torch.split(x, self.batch_size)]
            return self.model.predict(torch.cat(chunks) if chunks else x)

    def gradient_input(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``transform(x)`` carrying this wrapper's gradient rule, for ``model.logits``.

        ``"bpda"``: the value of ``transform(x)``, the gradient of the identity.
        ``"none"``: the transform's own gradient; where it has none (JPEG) the output
        stays connected to ``x`` with a zero gradient, so autograd still runs.

        Shape:
            x: (N, C, H, W) float32 -> (N, C, H, W) float32.
        """
        chunks = []
        for chunk in torch.split(x, self.batch_size):
            if self.gradient == "bpda":
                with torch.no_grad():
                    out = self.transform(chunk.detach(), generator=generator)
                # Exactly ``out`` in value (chunk - chunk.detach() is 0), identity backward.
                chunks.append(out + (chunk - chunk.detach()))
            else:
                out = self.transform(chunk, generator=generator)
                if chunk.requires_grad and not out.requires_grad:
                    out = out + 0.0 * chunk  # no graph (JPEG): connect it, gradient zero
                chunks.append(out)
        return torch.cat(chunks) if chunks else x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits on ``transform(x)``, under autograd.

        Raises:
            CapabilityError: the wrapped model offers no gradients.
        """
        self._check_shape(x)
        return self.differentiable_model().logits(self.gradient_input(x))

    def differentiable_model(self) -> Differentiable:
        """The wrapped model as a :class:`Differentiable`, or raise CapabilityError."""
        if not (isinstance(self.model, Differentiable) and self.model.capabilities.gradients):
            raise CapabilityError(
                f"{self.name}: the wrapped model offers no gradients, so the defended "
                "model has none either; attack it with a black-box attack"
            )
        return self.model

    def _check_shape(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ShapeError(
                f"{self.name}: the model expects images of shape {tuple(self.input_shape)}, "
                f"got {tuple(x.shape)[1:]}"
            )


@register_preprocessor("median")
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class MedianFilter(Preprocessor):
    """Median filter over ``size x size`` windows, per channel (mirrored borders).

    Removes isolated changed pixels, the footprint of few-pixel attacks, at the cost
    of thin strokes: on 8x8 digits a 3x3 median costs several points of accuracy.

    Args:
        model: the classifier to defend.
        size: window side, at least 2.
        gradient: ``"bpda"`` or ``"none"`` (see :class:`Preprocessor`).
        batch_size: most images filtered at once.

    Example:
        >>> from pixelguard.models.torch import TorchClassifier
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> defended = MedianFilter(TorchClassifier(net, (1, 4, 4), output="logits"))
        >>> defended.predict(torch.rand(2, 1, 4, 4)).shape
        torch.Size([2, 3])
    """

    _constraints = {"size": at_least(2)}

    size: int = 3

    def transform(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return local_median(x, self.size)


@register_preprocessor("outlier-removal")
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class OutlierPixelRemoval(Preprocessor):
    """Replace outlier pixels with their neighbourhood median; leave the rest alone.

    A pixel whose value differs from the median of its ``size x size`` neighbourhood
    by more than ``threshold`` in any channel takes that median (in every channel).
    Gentler than a median filter on clean images, because smooth strokes are kept.

    Args:
        model: the classifier to defend.
        size: window side, at least 2.
        threshold: largest deviation from the median a pixel may keep, in (0, 1).
        gradient: ``"bpda"`` or ``"none"`` (see :class:`Preprocessor`).
        batch_size: most images filtered at once.
    """

    _constraints = {"size": at_least(2), "threshold": between(0, 1, low_open=True, high_open=True)}

    size: int = 3
    threshold: float = 0.5

    def transform(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return remove_outliers(x, self.size, self.threshold)


@register_preprocessor("bit-depth")
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class BitDepthReduction(Preprocessor):
    """Quantise every value to ``2**bits`` levels (feature squeezing's colour-depth squeeze).

    Args:
        model: the classifier to defend.
        bits: bits per channel, 1..8.
        gradient: ``"bpda"`` or ``"none"`` (zero gradient: the rounding masks it).
        batch_size: most images quantised at once.
    """

    _constraints = {"bits": int_between(1, 8)}

    bits: int = 3

    def transform(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return reduce_bit_depth(x, self.bits)


@register_preprocessor("jpeg")
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class JpegCompression(Preprocessor):
    """JPEG-encode and decode every image with Pillow (grey or RGB).

    The one transform that is not vectorised: Pillow codes one image at a time, so
    :meth:`transform` loops over the batch on the CPU. Under ``gradient="none"`` its
    gradient is zero.

    Args:
        model: the classifier to defend.
        quality: JPEG quality, 1..95.
        gradient: ``"bpda"`` or ``"none"`` (see :class:`Preprocessor`).
        batch_size: most images coded per chunk.

    Raises:
        ConfigError: bad quality, or images with neither 1 nor 3 channels.
    """

    _constraints = {"quality": int_between(1, 95)}

    quality: int = 75

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model.input_shape[0] not in (1, 3):
            raise ConfigError(
                f"jpeg: needs grey or RGB images, the model takes {self.model.input_shape[0]} "
                "channels"
            )

    def transform(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return jpeg_compress(x, self.quality)


@register_preprocessor("random-noise")
@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class RandomNoise(Preprocessor):
    """Add Gaussian noise of standard deviation ``sigma``, clipped to [0, 1]: a random defense.

    Every call draws fresh noise from the wrapper's own generator (seeded), so the
    defended model is not deterministic; attack it through
    :class:`~pixelguard.defenses.eot.ExpectationOverTransformation`. Noise is drawn
    on the CPU and moved, so CPU and GPU runs see the same noise.

    Args:
        model: the classifier to defend.
        sigma: noise standard deviation, > 0.
        seed: seed of the noise generator (None draws one; ``seed`` records it).
        gradient: ``"bpda"`` or ``"none"`` (both pass the gradient through: the
            noise is additive and only the clipping masks it).
        batch_size: most images perturbed at once.
    """

    random = True
    _constraints = {"sigma": positive()}

    sigma: float = 0.1
    seed: int | None = dataclasses.field(default=0, kw_only=True)
    generator: torch.Generator = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        seed = self.seed if self.seed is not None else secrets.randbits(31)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "generator", torch.Generator().manual_seed(seed))

    def transform(
        self, x: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        gen = generator if generator is not None else self.generator
        noise = torch.randn(x.shape, generator=gen).to(device=x.device, dtype=x.dtype)
        return (x + self.sigma * noise).clamp(0.0, 1.0)
