"""Expectation over transformation: attack a random defense through its average.

A random preprocessor answers each query with a fresh random transform, so one
gradient (or one score) is a noisy sample. :class:`ExpectationOverTransformation`
wraps it and averages ``samples`` transformed copies of every image in one batched
model call: ``logits(x)`` is the mean of the per-sample logits (their gradient is the
mean gradient, straight-through or exact per the preprocessor's ``gradient`` rule),
``predict(x)`` the mean of the per-sample scores.

References:
    Athalye, Engstrom, Ilyas, Kwok. "Synthesizing robust adversarial examples."
    ICML 2018. arXiv:1707.07397.
"""

from __future__ import annotations

import dataclasses
import secrets

import torch

from pixelguard.checks import check_images
from pixelguard.defenses.preprocess import Preprocessor
from pixelguard.errors import ConfigError
from pixelguard.models.base import Capabilities, ClassifierWrapper, OutputKind


class ExpectationOverTransformation(ClassifierWrapper):
    """A Classifier whose scores are the average over ``samples`` random transforms.

    The transforms are drawn from the wrapper's own generator (seeded), not the
    preprocessor's, and the generator advances from call to call: the wrapper is not
    deterministic, so an attack cannot overfit a fixed set of noise draws. Success
    must still be judged on the random defense itself.

    Args:
        model: a preprocessor whose transform is random (``model.random`` is True).
        samples: transforms averaged per image.
        seed: seed of the wrapper's generator (None draws one; ``seed`` records it).

    Shape:
        predict: x (N, C, H, W) float32 in [0, 1] -> (N, K), the mean of the wrapped
        model's scores (vote fractions when it returns labels only).
        logits: x (N, C, H, W) float32 -> (N, K), the mean of the per-sample logits.
        sample_logits: x (N, C, H, W) -> (samples, N, K).

    Raises:
        ConfigError: the preprocessor is deterministic, or ``samples`` < 1.

    Example:
        >>> from pixelguard.defenses.preprocess import RandomNoise
        >>> from pixelguard.models.torch import TorchClassifier
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> model = TorchClassifier(net, (1, 4, 4), output="logits")
        >>> eot = ExpectationOverTransformation(RandomNoise(model, 0.1), samples=4)
        >>> eot.logits(torch.rand(2, 1, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, model: Preprocessor, samples: int = 8, *, seed: int | None = 0) -> None:
        if not isinstance(model, Preprocessor) or not model.random:
            raise ConfigError(
                "expectation over transformation needs a random preprocessor "
                f"(random=True), got {type(model).__name__}"
            )
        if samples < 1:
            raise ConfigError(f"samples must be at least 1, got {samples}")
        super().__init__(model)
        self.samples = samples
        self.seed = seed if seed is not None else secrets.randbits(31)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def capabilities(self) -> Capabilities:
        """The preprocessor's, non-deterministic; averaged labels become probabilities."""
        caps = self.model.capabilities
        output = OutputKind.PROBABILITIES if caps.output is OutputKind.LABELS else caps.output
        return dataclasses.replace(caps, output=output, deterministic=False)

    def params(self) -> dict[str, object]:
        """The configuration as plain data, for reports."""
        return {"wrapper": "eot", "samples": self.samples, "seed": self.seed, **self.model.params()}

    def _repeat(self, x: torch.Tensor) -> torch.Tensor:
        """``samples`` copies of the batch, sample-major: row ``s * N + i`` is image ``i``."""
        return x.repeat(self.samples, 1, 1, 1)

    def sample_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's logits on each of ``samples`` random transforms of ``x``.

        Shape:
            x: (N, C, H, W) float32 -> (samples, N, K), under autograd.
        """
        model = self.model.differentiable_model()
        inputs = self.model.gradient_input(self._repeat(x), generator=self.generator)
        return model.logits(inputs).view(self.samples, x.shape[0], self.num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over ``samples`` random transforms of the wrapped model's logits."""
        return self.sample_logits(x).mean(dim=0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The mean over ``samples`` random transforms of the wrapped model's scores."""
        check_images(x)
        with torch.no_grad():
            transformed = self.model.transform(self._repeat(x), generator=self.generator)
            scores = self.model.model.predict(transformed)
        return scores.view(self.samples, x.shape[0], self.num_classes).mean(dim=0)
