"""Expectation over transformation: averages of seeded random transforms."""

from __future__ import annotations

import pytest
import torch

from pixelguard.defenses.eot import ExpectationOverTransformation
from pixelguard.defenses.preprocess import MedianFilter, RandomNoise
from pixelguard.errors import ConfigError
from pixelguard.models.base import Classifier, Differentiable


def _noise_like_eot(x: torch.Tensor, samples: int, sigma: float, seed: int) -> torch.Tensor:
    """The transformed copies the wrapper must build: the same draws from the same seed."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples * x.shape[0], *x.shape[1:]), generator=generator)
    return (x.repeat(samples, 1, 1, 1) + sigma * noise).clamp(0, 1)


def test_logits_are_the_mean_of_the_per_sample_logits(digits, digits_model) -> None:
    x = digits[0][:5]
    eot = ExpectationOverTransformation(RandomNoise(digits_model, 0.2, seed=1), samples=6, seed=3)
    expected = digits_model.logits(_noise_like_eot(x, 6, 0.2, seed=3)).view(6, 5, 10)
    assert torch.allclose(eot.logits(x), expected.mean(dim=0), atol=1e-5)
    assert not torch.allclose(expected[0], expected[1]), "the samples should differ"


def test_sample_logits_and_predict_average_the_same_kind_of_draws(digits, digits_model) -> None:
    x = digits[0][:4]
    eot = ExpectationOverTransformation(RandomNoise(digits_model, 0.2), samples=5, seed=7)
    per_sample = eot.sample_logits(x)
    assert per_sample.shape == (5, 4, 10)
    again = ExpectationOverTransformation(RandomNoise(digits_model, 0.2), samples=5, seed=7)
    expected = digits_model.predict(_noise_like_eot(x, 5, 0.2, seed=7)).view(5, 4, 10).mean(dim=0)
    assert torch.allclose(again.predict(x), expected, atol=1e-5)


def test_gradient_is_the_mean_of_straight_through_gradients(digits, digits_model) -> None:
    x, y = digits[0][:3], digits[1][:3]
    eot = ExpectationOverTransformation(RandomNoise(digits_model, 0.2), samples=4, seed=11)
    x_var = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(eot.logits(x_var), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_var)
    noisy = _noise_like_eot(x, 4, 0.2, seed=11).requires_grad_(True)
    mean_logits = digits_model.logits(noisy).view(4, 3, 10).mean(dim=0)
    (grad_noisy,) = torch.autograd.grad(
        torch.nn.functional.cross_entropy(mean_logits, y, reduction="sum"), noisy
    )
    assert torch.allclose(grad, grad_noisy.view(4, 3, 1, 8, 8).sum(dim=0), atol=1e-6)


def test_averaging_shrinks_the_spread(digits, digits_model) -> None:
    x = digits[0][:1].repeat(40, 1, 1, 1)
    one = (
        ExpectationOverTransformation(RandomNoise(digits_model, 0.3), samples=1).logits(x).detach()
    )
    many = (
        ExpectationOverTransformation(RandomNoise(digits_model, 0.3), samples=16).logits(x).detach()
    )
    assert float(many.std(dim=0).mean()) < 0.5 * float(one.std(dim=0).mean())


def test_is_a_non_deterministic_differentiable_classifier(digits_model) -> None:
    eot = ExpectationOverTransformation(RandomNoise(digits_model, 0.1))
    assert isinstance(eot, Classifier) and isinstance(eot, Differentiable)
    assert eot.num_classes == 10 and eot.input_shape == (1, 8, 8)
    assert eot.capabilities.gradients and not eot.capabilities.deterministic
    assert eot.params()["samples"] == 8


def test_rejects_deterministic_preprocessors_and_bad_samples(digits_model) -> None:
    with pytest.raises(ConfigError):
        ExpectationOverTransformation(MedianFilter(digits_model))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ExpectationOverTransformation(RandomNoise(digits_model, 0.1), samples=0)
