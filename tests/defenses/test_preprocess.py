"""Preprocessing wrappers: the Classifier contract, clean accuracy, and BPDA gradients."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch

from pixelguard.attacks.pgd import PGD
from pixelguard.defenses.filters import local_median, reduce_bit_depth
from pixelguard.defenses.preprocess import (
    BitDepthReduction,
    JpegCompression,
    MedianFilter,
    OutlierPixelRemoval,
    Preprocessor,
    RandomNoise,
    create_preprocessor,
    list_preprocessors,
)
from pixelguard.errors import CapabilityError, ConfigError, ShapeError
from pixelguard.models.base import Classifier, Differentiable, OutputKind
from pixelguard.models.callable import CallableClassifier
from pixelguard.testing import check_attack_result


class Case(NamedTuple):
    name: str
    params: dict[str, object]
    max_accuracy_drop: float
    """Measured on the held-out digits (index >= 1400), with room for training noise."""


# Measured drops (percentage points of held-out accuracy, small CNN on 8x8 digits):
# bit depth 3: 0, JPEG 75: 0.3, random noise 0.1: 1.3, outlier removal (0.5): 7,
# median 3x3: 23. A 3x3 median wipes out strokes one or two pixels wide, which is most
# of an 8x8 digit: the cost of this defense on tiny images, stated, not hidden.
CASES = [
    Case("bit-depth", {"bits": 3}, 0.02),
    Case("jpeg", {"quality": 75}, 0.03),
    Case("random-noise", {"sigma": 0.1}, 0.05),
    Case("outlier-removal", {"size": 3, "threshold": 0.5}, 0.12),
    Case("median", {"size": 3}, 0.30),
]


def _accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.predict(x).argmax(dim=1) == y).float().mean())


def test_every_registered_preprocessor_is_covered() -> None:
    assert sorted(case.name for case in CASES) == list_preprocessors()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_keeps_clean_accuracy_within_its_stated_tolerance(case: Case, digits, digits_model) -> None:
    x, y = digits[0][1400:], digits[1][1400:]
    defended = create_preprocessor(case.name, digits_model, **case.params)
    drop = _accuracy(digits_model, x, y) - _accuracy(defended, x, y)
    assert drop <= case.max_accuracy_drop


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_is_a_classifier_like_the_wrapped_model(case: Case, digits, digits_model) -> None:
    defended = create_preprocessor(case.name, digits_model, **case.params)
    assert isinstance(defended, Classifier) and isinstance(defended, Differentiable)
    assert defended.input_shape == digits_model.input_shape
    assert defended.num_classes == digits_model.num_classes
    caps = defended.capabilities
    assert caps.output is digits_model.capabilities.output and caps.gradients
    assert caps.deterministic is not defended.random
    x = digits[0][:7].clone()
    before = x.clone()
    scores = defended.predict(x)
    assert scores.shape == (7, 10) and scores.dtype == torch.float32
    assert torch.equal(x, before), "predict mutated its input"
    assert defended.params()["defense"] == case.name


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name != "random-noise"], ids=lambda c: c.name
)
def test_predict_and_logits_classify_the_transformed_images(
    case: Case, digits, digits_model
) -> None:
    defended = create_preprocessor(case.name, digits_model, **case.params)
    x = digits[0][:16]
    transformed = defended.transform(x)
    assert (
        transformed.shape == x.shape
        and float(transformed.min()) >= 0
        and float(transformed.max()) <= 1
    )
    assert torch.equal(defended.predict(x), digits_model.predict(transformed))
    assert torch.allclose(defended.logits(x), digits_model.logits(transformed), atol=1e-6)


def _input_gradient(model: Differentiable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model.logits(x), y), x)
    return grad


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.name != "random-noise"], ids=lambda c: c.name
)
def test_bpda_backward_is_the_identity(case: Case, digits, digits_model) -> None:
    defended = create_preprocessor(case.name, digits_model, **case.params)
    x, y = digits[0][:16], digits[1][:16]
    expected = _input_gradient(digits_model, defended.transform(x), y)
    assert torch.allclose(_input_gradient(defended, x, y), expected, atol=1e-6)


@pytest.mark.parametrize("defense", [BitDepthReduction, JpegCompression], ids=["bit-depth", "jpeg"])
def test_exact_gradient_of_quantising_transforms_is_zero(defense, digits, digits_model) -> None:
    defended = defense(digits_model, gradient="none")
    grad = _input_gradient(defended, digits[0][:16], digits[1][:16])
    assert torch.equal(grad, torch.zeros_like(grad))


def test_exact_gradient_through_the_median_reaches_only_median_pixels(digits, digits_model) -> None:
    defended = MedianFilter(digits_model, 3, gradient="none")
    x, y = digits[0][:1], digits[1][:1]
    grad = _input_gradient(defended, x, y)
    assert bool((grad != 0).any())
    # A pixel gets gradient only if it is the median of some window.
    is_some_median = torch.isin(x, local_median(x, 3))
    assert bool((is_some_median | (grad == 0)).all())


def _pgd_success_rate(
    defended: Preprocessor, x: torch.Tensor, y: torch.Tensor, eps: float
) -> float:
    """Success of 20-step Linf PGD (no random start) on the images the defended model gets right."""
    correct = defended.predict(x).argmax(dim=1) == y
    attack = PGD(norm="linf", eps=eps, steps=20, step_size=eps / 4, random_start=False, seed=0)
    result = attack.run(defended, x[correct], y[correct])
    check_attack_result(result, defended, x[correct], max_linf=eps)
    return result.success_rate


@pytest.mark.parametrize("defense", [BitDepthReduction, JpegCompression], ids=["bit-depth", "jpeg"])
def test_bpda_recovers_the_attack_that_masked_gradients_stop(
    defense, correct_digits, digits_model
) -> None:
    # Measured: exact gradients 0%, BPDA 93% (bit depth 3) and 98% (JPEG 75) at eps 0.2.
    x, y = correct_digits[0][:60], correct_digits[1][:60]
    assert _pgd_success_rate(defense(digits_model, gradient="none"), x, y, eps=0.2) == 0.0
    assert _pgd_success_rate(defense(digits_model, gradient="bpda"), x, y, eps=0.2) >= 0.7


def test_bpda_attack_breaks_the_median_filter(correct_digits, digits_model) -> None:
    # The median is piecewise linear, so its exact gradient is informative too
    # (measured: exact 100%, BPDA 92% at eps 0.2): the median filter does not mask
    # gradients, and both rules must break it.
    x, y = correct_digits[0][:60], correct_digits[1][:60]
    for rule in ("bpda", "none"):
        assert _pgd_success_rate(MedianFilter(digits_model, 3, gradient=rule), x, y, eps=0.2) >= 0.7


def test_random_noise_is_seeded_and_random(digits, digits_model) -> None:
    x = digits[0][:8]
    a, b = RandomNoise(digits_model, 0.1, seed=5), RandomNoise(digits_model, 0.1, seed=5)
    first = a.transform(x)
    assert torch.equal(first, b.transform(x))
    assert not torch.equal(first, a.transform(x))
    assert not a.capabilities.deterministic
    assert float((first - x).std()) == pytest.approx(0.1, rel=0.3)


def test_gradients_follow_the_wrapped_model(digits) -> None:
    black_box = CallableClassifier(
        lambda a: np.stack([a.mean(axis=(1, 2, 3)), 1 - a.mean(axis=(1, 2, 3))], axis=1),
        (1, 8, 8),
        output="probabilities",
    )
    defended = MedianFilter(black_box, 3)
    assert not defended.capabilities.gradients
    assert defended.capabilities.output is OutputKind.PROBABILITIES
    assert defended.predict(digits[0][:3]).shape == (3, 2)
    with pytest.raises(CapabilityError):
        defended.logits(digits[0][:3])


def test_bad_settings_and_shapes_raise(digits_model) -> None:
    with pytest.raises(ConfigError):
        MedianFilter(digits_model, 1)
    with pytest.raises(ConfigError):
        OutlierPixelRemoval(digits_model, threshold=1.5)
    with pytest.raises(ConfigError):
        BitDepthReduction(digits_model, bits=0)
    with pytest.raises(ConfigError):
        JpegCompression(digits_model, quality=100)
    with pytest.raises(ConfigError):
        RandomNoise(digits_model, sigma=0)
    with pytest.raises(ConfigError):
        MedianFilter(digits_model, gradient="exact")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        create_preprocessor("blur", digits_model)
    with pytest.raises(ShapeError):
        BitDepthReduction(digits_model).logits(torch.zeros(2, 1, 4, 4))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m: MedianFilter(m, 1), "median: size must be at least 2, got 1"),
        (
            lambda m: OutlierPixelRemoval(m, threshold=1.5),
            "outlier-removal: threshold must lie in (0, 1), got 1.5",
        ),
        (lambda m: BitDepthReduction(m, bits=9), "bit-depth: bits must lie in 1..8, got 9"),
        (lambda m: JpegCompression(m, quality=0), "jpeg: quality must lie in 1..95, got 0"),
        (lambda m: RandomNoise(m, sigma=0), "random-noise: sigma must be a positive number, got 0"),
        (
            lambda m: MedianFilter(m, gradient="exact"),
            "median: gradient must be 'bpda' or 'none', got 'exact'",
        ),
        (
            lambda m: BitDepthReduction(m, batch_size=0),
            "bit-depth: batch_size must be at least 1, got 0",
        ),
    ],
)
def test_bad_settings_read_like_attack_settings(digits_model, make, message) -> None:
    with pytest.raises(ConfigError) as err:
        make(digits_model)
    assert str(err.value) == message


def test_bpda_forward_equals_the_transform_exactly(digits, digits_model) -> None:
    defended = BitDepthReduction(digits_model, bits=2)
    x = digits[0][:32].clone().requires_grad_(True)
    seen = defended.gradient_input(x)
    assert torch.equal(seen.detach(), reduce_bit_depth(x.detach(), 2))
