"""merge_results: concatenation in order, summed wall time, refusal to mix runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pixelguard.attacks.base import AttackResult
from pixelguard.errors import ConfigError
from pixelguard.evaluate import merge_results
from pixelguard.evaluate.merge import tensor_fields


def _result(n: int, start: int, *, target: bool = False, **changes: object) -> AttackResult:
    """A synthetic result whose per-image values encode their position ``start + i``."""
    ids = torch.arange(start, start + n)
    result = AttackResult(
        x_adv=ids.float().view(n, 1, 1, 1).expand(n, 1, 2, 2) / 100,
        y=ids % 10,
        target=(ids + 1) % 10 if target else None,
        success=ids % 2 == 0,
        queries=ids * 10,
        l0_pixels=ids % 3,
        l0_features=ids % 3,
        l2=ids.float() / 7,
        linf=ids.float() / 9,
        pred_before=ids % 10,
        pred_after=(ids + 1) % 10,
        conf_before=torch.full((n,), 0.9),
        conf_after=torch.full((n,), 0.6),
        attack="pixel-de",
        params={"pixels": 1, "seed": 0},
        seed=0,
        budget=None,
        wall_time=1.5,
    )
    return dataclasses.replace(result, **changes)


def test_merge_concatenates_every_tensor_in_order_and_sums_wall_time() -> None:
    parts = [_result(3, 0), _result(2, 3), _result(4, 5)]
    merged = merge_results(parts)
    whole = _result(9, 0)
    assert merged.n_images == 9
    for name, tensor in tensor_fields(whole).items():
        assert torch.equal(getattr(merged, name), tensor), name
    assert merged.target is None
    assert merged.wall_time == pytest.approx(4.5)
    assert (merged.attack, merged.params, merged.seed) == ("pixel-de", {"pixels": 1, "seed": 0}, 0)


def test_merge_keeps_targets() -> None:
    merged = merge_results([_result(2, 0, target=True), _result(3, 2, target=True)])
    assert torch.equal(merged.target, _result(5, 0, target=True).target)


def test_merge_of_one_result_is_that_result() -> None:
    one = _result(4, 0)
    merged = merge_results([one])
    assert torch.equal(merged.x_adv, one.x_adv) and merged.wall_time == one.wall_time


@pytest.mark.parametrize(
    "other",
    [
        _result(2, 2, params={"pixels": 3, "seed": 0}),
        _result(2, 2, attack="sparse-rs"),
        _result(2, 2, seed=1),
        _result(2, 2, budget=100),
        _result(2, 2, target=True),
    ],
    ids=["params", "attack", "seed", "budget", "targeted"],
)
def test_merge_refuses_results_of_different_runs(other: AttackResult) -> None:
    with pytest.raises(ConfigError, match="cannot merge"):
        merge_results([_result(2, 0), other])


def test_merge_refuses_an_empty_list() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        merge_results([])
