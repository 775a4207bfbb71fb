"""Fixtures for the evaluation tests: the held-out digits, a tiny attack, a tiny suite."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.data import Dataset
from pixelguard.evaluate.runner import Evaluation, evaluate
from pixelguard.evaluate.suite import Suite, build_suite
from pixelguard.models.torch import TorchClassifier


@pytest.fixture(scope="session")
def held_out(digits: tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    """The 397 digits the session model did not train on."""
    x, y = digits
    return Dataset(x[1400:], y[1400:], [str(d) for d in range(10)], "held-out digits")


@pytest.fixture()
def tiny_attack() -> PixelDE:
    """A pixel-de small enough to run in well under a second per chunk."""
    return PixelDE(pixels=3, population=20, generations=3, seed=0)


@pytest.fixture(scope="session")
def tiny_suite() -> Suite:
    """Sparse-pgd then sparse-rs at 1 and 3 pixels, 20 queries each: a second on 12 digits."""
    return build_suite("pixel", pixels=(1, 3), budget=20, gradients=True, seed=0)


@pytest.fixture(scope="session")
def sharding() -> dict[str, int]:
    """Twelve images in three shards of four."""
    return {"limit": 12, "shard_size": 4}


@pytest.fixture(scope="session")
def sharded_evaluation(
    digits_model: TorchClassifier, held_out: Dataset, tiny_suite: Suite, sharding: dict[str, int]
) -> Evaluation:
    """``tiny_suite`` on the first held-out digits, locally, without a checkpoint."""
    return evaluate(digits_model, held_out, tiny_suite, **sharding)


def _without_timings(evaluation: Evaluation) -> dict[str, Any]:
    data = evaluation.to_dict()
    del data["wall_time"]
    for attack in data["attacks"]:
        del attack["seconds"]
    return data


@pytest.fixture(scope="session")
def timing_free() -> Callable[[Evaluation], dict[str, Any]]:
    """``Evaluation.to_dict`` without wall times: what two runs of one seed must agree on."""
    return _without_timings
