"""Every attack at ImageNet size: 3 x 224 x 224 images, 1,000 classes.

The model is built to be fooled by a few pixels, as a trained ImageNet network is, but
in milliseconds: its features are the strongest positive and negative response of each
colour channel to a Laplacian (an isolated dot against its surroundings), max-pooled
over the image, and its head maps them to 1,000 logits. The smooth test images give
almost no response, so every clean image is class 0 by a clear margin; the head has
planted a class, 948 ("Granny Smith" in ``benchmarks/imagenet_classes.txt``), that
outgrows class 0 only when dots raise several features at once. One pixel cannot
reach it (one dot raises each channel's features by at most 5 together); twenty random
corner pixels can. The other 998 classes barely move, so untargeted success means reaching it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pixelguard
from pixelguard.attacks.base import attacks, create_attack, list_attacks
from pixelguard.attacks.corner_search import corner_search_cost
from pixelguard.models.base import Classifier, ClassifierWrapper, memory_budget
from pixelguard.testing import check_attack_result

SHAPE = (3, 224, 224)
CLASSES = 1000
CLEAN_CLASS = 0
TARGET = 948
PLANTED_WEIGHT = 1.6
"""Weight of every feature in the planted class's logit."""
LIFT = PLANTED_WEIGHT * 15.5
"""How far the planted class starts below the clean class. One dot raises at most 5 per
channel (up to 4 at the dot, up to 1 of the other sign at its neighbours), 15 in all, so
one pixel never reaches it; dots of both signs on dark and bright ground do (up to 8)."""
BUDGET = 200
"""Queries per image for the contract runs."""

SMALL: dict[str, dict[str, Any]] = {
    "corner-search": {},
    "fgsm": {"eps": 0.1},
    "gradient-descent": {"steps": 5},
    "label-only": {"max_pixels": 200, "group_steps": 10},
    "min-pixels": {"max_pixels": 20, "stage_steps": 20},
    "pgd": {"eps": 0.05, "steps": 3},
    "pixel-de": {"pixels": 10, "population": 20, "generations": 5},
    "sparse-pgd": {"pixels": 20, "steps": 5, "restarts": 1},
    "sparse-rs": {"pixels": 20, "steps": BUDGET, "min_batch": 8},
}
"""Small settings of the built-in attacks; any other attack runs with its defaults."""


class DotDetector(nn.Module):
    """(N, 3, 224, 224) -> (N, 1000) logits from max-pooled Laplacian responses."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.head = nn.Linear(2 * SHAPE[0], CLASSES)
        with torch.no_grad():
            self.head.weight.copy_(0.02 * torch.randn(CLASSES, 2 * SHAPE[0], generator=generator))
            self.head.bias.copy_(0.1 * torch.randn(CLASSES, generator=generator))
            self.head.bias[CLEAN_CLASS] = self.head.bias.max() + 1.0
            self.head.weight[TARGET] = PLANTED_WEIGHT
            self.head.bias[TARGET] = self.head.bias[CLEAN_CLASS] - LIFT

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 6): per channel, the largest positive and negative response."""
        p = F.pad(x, (1, 1, 1, 1), mode="replicate")
        neighbours = p[:, :, :-2, 1:-1] + p[:, :, 2:, 1:-1] + p[:, :, 1:-1, :-2] + p[:, :, 1:-1, 2:]
        response = (4 * x - neighbours).flatten(2)
        return torch.cat([response.amax(dim=2), (-response).amax(dim=2)], dim=1).relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Random 7x7 colour fields upsampled to 224x224, on the uint8 grid."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, SHAPE[0], 7, 7, generator=generator)
    fine = F.interpolate(coarse, size=SHAPE[1:], mode="bilinear", align_corners=False)
    return (fine * 255).round() / 255


@pytest.fixture(scope="module")
def model() -> Classifier:
    return pixelguard.load_model(DotDetector().eval(), input_shape=SHAPE, output="logits")


@pytest.fixture(scope="module")
def images(model: Classifier) -> tuple[torch.Tensor, torch.Tensor]:
    """Two images the model classifies as :data:`CLEAN_CLASS`, with those labels."""
    x = smooth_images(2)
    y = model.predict(x).argmax(dim=1)
    assert y.tolist() == [CLEAN_CLASS] * 2
    return x, y


def test_the_model_is_imagenet_sized(model: Classifier, images) -> None:
    x, _ = images
    assert model.input_shape == SHAPE and model.num_classes == CLASSES
    assert model.predict(x).shape == (2, CLASSES)
    assert corner_search_cost(SHAPE) == 401_408


def _settings(name: str) -> dict[str, Any]:
    settings = {"seed": 0, "budget": BUDGET, **SMALL.get(name, {})}
    fields = {f.name for f in dataclasses.fields(cast(Any, attacks.get(name)))}
    return {key: value for key, value in settings.items() if key in fields}


@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_keeps_the_contract_at_imagenet_size(name: str, model, images) -> None:
    x, y = images
    attack = create_attack(name, **_settings(name))
    modes: list[torch.Tensor | None] = [None] if attack.supports_untargeted else []
    if attack.supports_targeted:
        modes.append(torch.full_like(y, TARGET))
    assert modes, name
    for target in modes:
        result = attack.run(model, x, y, target=target)
        assert result.x_adv.shape == x.shape
        check_attack_result(result, model, x, budget=attack.budget)
        if target is not None:
            assert result.target is not None and bool((result.target == TARGET).all())


def test_sparse_rs_needs_more_than_one_pixel_and_finds_twenty(model, images) -> None:
    x, y = images
    one = create_attack("sparse-rs", pixels=1, steps=300, seed=0).run(model, x, y)
    check_attack_result(one, model, x, max_pixels=1, budget=301)
    assert not bool(one.success.any())  # no single dot reaches the planted class
    # 401,408 queries would scan every corner of every pixel; 300 cannot, so none is tried.
    assert int(one.queries.max()) <= 301
    twenty = create_attack("sparse-rs", pixels=20, steps=300, seed=0).run(model, x, y)
    check_attack_result(twenty, model, x, max_pixels=20, budget=301)
    assert bool(twenty.success.any())
    assert bool((twenty.pred_after[twenty.success] != CLEAN_CLASS).all())


def test_targeted_sparse_rs_lands_on_one_class_of_a_thousand(model, images) -> None:
    x, y = images
    target = torch.full_like(y, TARGET)
    attack = create_attack("sparse-rs", pixels=20, steps=300, seed=0)
    result = attack.run(model, x, y, target=target)
    check_attack_result(result, model, x, max_pixels=20, budget=301)
    assert bool(result.success.any())
    fooled = result.success
    assert bool((result.pred_after[fooled] == TARGET).all())
    assert bool((model.predict(result.x_adv[fooled]).argmax(dim=1) == TARGET).all())


class LargestCall(ClassifierWrapper):
    """The wrapped model, recording the bytes of the largest image batch it was asked about."""

    def __init__(self, model: Classifier) -> None:
        super().__init__(model)
        self.largest = 0
        self.calls = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.numel() * x.element_size())
        self.calls += 1
        return self.model.predict(x)


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("sparse-rs", {"pixels": 2, "steps": 100, "min_batch": 64}),
        ("sparse-bayes", {"pixels": 2, "steps": 100}),
        ("pixel-de", {"pixels": 2, "population": 40, "generations": 3}),
    ],
)
def test_candidate_batches_stay_within_the_memory_budget(name, settings, images) -> None:
    """The largest image batch an attack hands the model is at most ``max_memory`` bytes.

    tracemalloc cannot measure this: it does not see torch's CPU allocations (a 40 MB
    tensor adds nothing to its count), so the batches are measured where they arrive.
    """
    x, y = images
    adapter = pixelguard.load_model(DotDetector().eval(), input_shape=SHAPE, output="logits")
    image_bytes = x[0].numel() * x.element_size()
    adapter.max_memory = 8 * image_bytes  # type: ignore[attr-defined]
    recorder = LargestCall(adapter)
    assert memory_budget(recorder) == 8 * image_bytes
    result = create_attack(name, seed=0, **settings).run(recorder, x, y)
    check_attack_result(result, adapter, x)
    assert recorder.calls > 1
    assert recorder.largest <= adapter.max_memory, (  # type: ignore[attr-defined]
        f"{name} sent {recorder.largest / image_bytes:.0f} images at once; the budget "
        f"holds 8 ({adapter.max_memory:,} bytes)"  # type: ignore[attr-defined]
    )
