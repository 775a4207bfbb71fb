"""Merging the results of one attack run over several chunks of images."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from pixelguard.attacks.base import AttackResult
from pixelguard.errors import ConfigError

_SHARED = ("attack", "params", "seed", "budget")
"""Fields every merged result must agree on."""


def tensor_fields(result: AttackResult) -> dict[str, torch.Tensor]:
    """The per-image tensors of ``result`` by field name (``target`` only when set)."""
    return {
        f.name: value
        for f in dataclasses.fields(result)
        if isinstance(value := getattr(result, f.name), torch.Tensor)
    }


def merge_results(results: Sequence[AttackResult]) -> AttackResult:
    """Concatenate the results of one configured attack run chunk by chunk.

    Per-image tensors are concatenated in order and wall times are summed.

    Args:
        results: at least one result, all of the same attack, parameters, seed and
            budget, all targeted or all untargeted.

    Returns:
        One result holding every image of ``results`` in order.

    Shape:
        x_adv: (sum N_i, C, H, W); every other tensor: (sum N_i,).

    Raises:
        ConfigError: no results, or results that differ in attack configuration or
            in being targeted.

    Example:
        >>> merged = merge_results([first, second])  # doctest: +SKIP
        >>> merged.n_images == first.n_images + second.n_images  # doctest: +SKIP
        True
    """
    if not results:
        raise ConfigError("merge_results needs at least one result")
    first = results[0]
    for other in results[1:]:
        for name in _SHARED:
            if getattr(other, name) != getattr(first, name):
                raise ConfigError(
                    f"cannot merge results whose {name} differs: "
                    f"{getattr(first, name)!r} and {getattr(other, name)!r}"
                )
        if (other.target is None) != (first.target is None):
            raise ConfigError("cannot merge targeted and untargeted results")
    merged: dict[str, Any] = {
        name: torch.cat([tensor_fields(r)[name] for r in results]) for name in tensor_fields(first)
    }
    return dataclasses.replace(first, **merged, wall_time=float(sum(r.wall_time for r in results)))
