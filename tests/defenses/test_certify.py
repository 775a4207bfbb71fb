"""Randomized ablation: the encoding, the radius formula, and soundness by brute force."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from pixelguard.defenses.ablation import (
    ablate,
    ablation_masks,
    encode_ablated,
    train_ablation_classifier,
)
from pixelguard.defenses.certify import (
    RandomizedAblation,
    ablation_delta,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
)
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.models.base import Classifier, OutputKind


def test_masks_keep_exactly_k_pixels_and_differ_between_images() -> None:
    masks = ablation_masks(50, (4, 5), 7, torch.Generator().manual_seed(0))
    assert masks.shape == (50, 1, 4, 5) and masks.dtype == torch.bool
    assert torch.equal(masks.flatten(1).sum(dim=1), torch.full((50,), 7))
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 40
    again = ablation_masks(50, (4, 5), 7, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    with pytest.raises(ConfigError):
        ablation_masks(1, (4, 5), 21, torch.Generator())


def test_encoding_tells_ablated_from_black() -> None:
    x = torch.rand(6, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    x[:, :, 0, 0] = 0.0  # black pixels
    encoded = ablate(x, 10, torch.Generator().manual_seed(2))
    assert encoded.shape == (6, 6, 5, 5)
    values, complements = encoded[:, :3], encoded[:, 3:]
    kept = (values + complements).sum(dim=1) > 0
    assert torch.equal(kept.flatten(1).sum(dim=1), torch.full((6,), 10))
    assert torch.allclose(
        (values + complements)[kept.unsqueeze(1).expand(-1, 3, -1, -1)], torch.tensor(1.0)
    )
    assert torch.equal(
        encoded[~kept.unsqueeze(1).expand(-1, 6, -1, -1)], torch.zeros(int((~kept).sum()) * 6)
    )
    assert torch.equal(
        values[kept.unsqueeze(1).expand(-1, 3, -1, -1)], x[kept.unsqueeze(1).expand(-1, 3, -1, -1)]
    )
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    assert torch.equal(encode_ablated(x[:1], mask), torch.cat([x[:1], 1 - x[:1]], dim=1))


def _exact_delta(rho: int, d: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(d - rho, k), math.comb(d, k))


@pytest.mark.parametrize("d,k", [(16, 1), (16, 2), (20, 5), (64, 16), (30, 30)])
def test_delta_matches_exact_binomials(d: int, k: int) -> None:
    computed = ablation_delta(torch.arange(d + 1), d, k)
    for rho in range(d + 1):
        assert float(computed[rho]) == pytest.approx(float(_exact_delta(rho, d, k)), abs=1e-12)


@pytest.mark.parametrize("d,k", [(16, 2), (25, 4), (64, 16)])
def test_radius_matches_a_brute_force_search(d: int, k: int) -> None:
    p_lower = torch.cat(
        [torch.linspace(0.0, 1.0, 201, dtype=torch.float64), torch.tensor([0.5, 0.50001])]
    )
    radius = certified_radius(p_lower, d, k)
    for p, r in zip(p_lower.tolist(), radius.tolist()):
        p_exact = Fraction(p)
        expected = -1
        for rho in range(d + 1):
            if p_exact - _exact_delta(rho, d, k) > Fraction(1, 2):
                expected = rho
        # Exact, except that a radius whose margin is within 1e-9 of 1/2 may be given up.
        near_tie = expected >= 0 and p_exact - _exact_delta(expected, d, k) <= Fraction(
            1, 2
        ) + Fraction(1, 10**9)
        assert r == expected or (near_tie and r == expected - 1), f"p_lower={p}"


def test_clopper_pearson_closed_forms() -> None:
    bound = clopper_pearson_lower(torch.tensor([0, 100, 50]), 100, 0.05)
    assert float(bound[0]) == 0.0
    assert float(bound[1]) == pytest.approx(0.05 ** (1 / 100))
    assert 0.40 < float(bound[2]) < 0.50
    wider = clopper_pearson_lower(torch.tensor([50]), 100, 0.001)
    assert float(wider[0]) < float(bound[2])


def _tiny_linear_base(weights: torch.Tensor) -> nn.Module:
    """Class 1 iff sum over kept pixels of w_i * (2 x_i - 1) > 0, on 1-channel images."""
    d = weights.numel()
    layer = nn.Linear(2 * d, 2, bias=False)
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[1, :d] = weights
        layer.weight[1, d:] = -weights
    return nn.Sequential(nn.Flatten(), layer)


def _all_masks(side: int, keep: int) -> torch.Tensor:
    d = side * side
    combos = list(itertools.combinations(range(d), keep))
    masks = torch.zeros(len(combos), d, dtype=torch.bool)
    for i, kept in enumerate(combos):
        masks[i, list(kept)] = True
    return masks.view(-1, 1, side, side)


def test_certificates_hold_against_brute_force_pixel_changes() -> None:
    generator = torch.Generator().manual_seed(0)
    base = _tiny_linear_base(1 + 0.5 * torch.randn(16, generator=generator))
    brightness = torch.rand(40, 1, 1, 1, generator=generator)
    x = (torch.rand(40, 1, 4, 4, generator=generator) < brightness).float()
    smoothed = RandomizedAblation(base, (1, 4, 4), 2, samples=2000, samples_select=200, alpha=0.01)
    pred, radius = smoothed.certify(x)
    assert int((radius >= 2).sum()) >= 10, "the case should certify non-trivial radii"

    # Every one of the C(16, 2) = 120 ablations: the exact smoothed classifier.
    every = _all_masks(4, 2)
    exact = smoothed.vote_counts(x, every)
    exact_pred = exact.argmax(dim=1)
    exact_radius = certified_radius(exact.amax(dim=1).double() / every.shape[0], 16, 2)
    certified = radius >= 0
    assert torch.equal(pred[certified], exact_pred[certified])
    assert bool((radius <= exact_radius).all()), "a radius exceeds what the true vote share allows"

    # Random changes of `radius` pixels to colour-cube corners never change the exact vote;
    # changes of `radius + 1` pixels do flip some images, so the check has teeth.
    flipped_beyond = 0
    for i in certified.nonzero().flatten().tolist():
        r = int(radius[i])
        if r > 0:
            assert not _any_flip(smoothed, every, x[i], r, exact_pred[i], generator), (
                f"image {i} flipped with {r} pixels changed"
            )
        flipped_beyond += _any_flip(smoothed, every, x[i], r + 1, exact_pred[i], generator)
    assert flipped_beyond > 0


def _any_flip(
    smoothed: RandomizedAblation,
    masks: torch.Tensor,
    image: torch.Tensor,
    pixels: int,
    label: torch.Tensor,
    generator: torch.Generator,
    trials: int = 300,
) -> bool:
    """Whether any of ``trials`` random changes of ``pixels`` pixels to 0/1 changes the vote."""
    positions = torch.rand(trials, image.numel(), generator=generator).topk(pixels, dim=1).indices
    values = (torch.rand(trials, pixels, generator=generator) < 0.5).float()
    changed = (
        image.flatten().repeat(trials, 1).scatter(1, positions, values).view(trials, *image.shape)
    )
    return bool((smoothed.vote_counts(changed, masks).argmax(dim=1) != label).any())


def test_abstains_when_the_votes_are_split() -> None:
    base = _tiny_linear_base(torch.ones(16))
    x = torch.zeros(1, 1, 4, 4)
    x[..., :2, :] = 1.0  # half the pixels vote class 1, half class 0
    smoothed = RandomizedAblation(base, (1, 4, 4), 1, samples=1000, samples_select=100)
    _, radius = smoothed.certify(x)
    assert radius.tolist() == [-1]
    assert smoothed.predict(x)[0].tolist() == pytest.approx([0.5, 0.5], abs=0.06)
    assert certified_accuracy(torch.tensor([1]), radius, torch.tensor([1]), [0]) == [0.0]


def test_certified_accuracy_counts_correct_images_at_each_radius() -> None:
    pred = torch.tensor([0, 1, 2, 3, 4])
    radius = torch.tensor([-1, 0, 2, 5, 1])
    y = torch.tensor([0, 1, 2, 0, 4])
    assert certified_accuracy(pred, radius, y, [0, 1, 2, 3]) == [0.6, 0.4, 0.2, 0.0]
    with pytest.raises(ConfigError):
        certified_accuracy(pred, radius, y, [-1])
    with pytest.raises(ShapeError):
        certified_accuracy(pred, radius[:2], y, [0])


def test_ablation_classifier_on_digits_certifies_held_out_images(digits) -> None:
    x, y = digits
    module, metrics = train_ablation_classifier(x[:1400], y[:1400], keep=16, epochs=8, seed=0)
    assert metrics["keep"] == 16 and 0.0 <= metrics["train_accuracy"] <= 1.0
    pick = torch.randperm(397, generator=torch.Generator().manual_seed(0))[:40] + 1400
    smoothed = RandomizedAblation(module, (1, 8, 8), 16, samples=200, samples_select=50, seed=1)
    assert isinstance(smoothed, Classifier)
    assert smoothed.capabilities.output is OutputKind.PROBABILITIES
    votes = smoothed.predict(x[pick])
    assert torch.allclose(votes.sum(dim=1), torch.ones(40))
    assert torch.equal(votes, smoothed.predict(x[pick])), "predict should be deterministic"
    assert float((votes.argmax(dim=1) == y[pick]).float().mean()) >= 0.7
    pred, radius = smoothed.certify(x[pick])
    assert int(radius.min()) >= -1 and int(radius.max()) <= 64 - 16
    accuracy = certified_accuracy(pred, radius, y[pick], [0, 1, 2, 3])
    assert accuracy == sorted(accuracy, reverse=True) and accuracy[0] >= 0.5


def test_training_is_seeded(digits) -> None:
    x, y = digits[0][:128], digits[1][:128]
    first, _ = train_ablation_classifier(x, y, keep=8, epochs=1, seed=4)
    second, _ = train_ablation_classifier(x, y, keep=8, epochs=1, seed=4)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_settings_raise() -> None:
    base = _tiny_linear_base(torch.ones(16))
    with pytest.raises(ConfigError):
        RandomizedAblation(base, (1, 4, 4), 17)
    with pytest.raises(ConfigError):
        RandomizedAblation(base, (1, 4, 4), 2, alpha=0.0)
    with pytest.raises(ConfigError):
        RandomizedAblation(base, (1, 4, 4), 2, samples=0)
    with pytest.raises(ShapeError):
        RandomizedAblation(base, (1, 4, 4), 2).predict(torch.zeros(1, 1, 5, 5))
