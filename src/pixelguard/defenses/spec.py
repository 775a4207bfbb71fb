"""Defense specs: ``"median:3"`` as a wrapper factory plus a description for reports.

A spec is ``NAME[:VALUE][,KEY=VALUE]...``: a registered preprocessor, an optional
value for its first setting, and any settings by name, e.g. ``median:3``,
``bit-depth:4``, ``jpeg:75``, ``random-noise:0.1,seed=1`` or
``outlier-removal:size=3,threshold=0.4``. ``gradient=none`` turns off the
straight-through gradients (the non-adaptive baseline).

The factory wraps a model so every attack hits the defended model adaptively:
white-box attacks differentiate straight through the transform (BPDA) and a random
transform is attacked through its expectation (EOT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from pixelguard.defenses.eot import ExpectationOverTransformation
from pixelguard.defenses.preprocess import Preprocessor, create_preprocessor, preprocessors
from pixelguard.errors import ConfigError
from pixelguard.models.base import Classifier
from pixelguard.parsing import parse_value

DefenseFactory = Callable[[Classifier], Classifier]
"""Wraps a model in the defense: ``factory(model) -> defended model``."""

_COMMON_SETTINGS = ("gradient", "batch_size")
"""Settings every preprocessor takes besides its own."""


def parse_defense(spec: str, *, eot_samples: int = 8) -> tuple[DefenseFactory, dict[str, Any]]:
    """Parse a defense spec into a factory and a description.

    Args:
        spec: ``NAME[:VALUE][,KEY=VALUE]...``, e.g. ``"median:3"``.
        eot_samples: random transforms averaged per query for a random defense.

    Returns:
        ``(factory, description)``: ``factory(model)`` returns the defended model;
        ``description`` is ``{"name", "params", "adaptive_attacks"}``, where
        ``adaptive_attacks`` lists what makes attacks on it adaptive: ``"bpda"``
        (straight-through gradients), ``"eot"`` (expectation over the randomness)
        and ``"black-box"`` (queries to the defended model itself).

    Raises:
        ConfigError: an unknown defense or setting, or a malformed spec.

    Example:
        >>> parse_defense("median:3")[1]
        {'name': 'median', 'params': {'size': 3}, 'adaptive_attacks': ['bpda', 'black-box']}
    """
    name, _, rest = spec.strip().partition(":")
    cls = cast(type[Preprocessor], preprocessors.get(name.strip()))
    params = _settings(spec, rest, cls)
    if eot_samples < 1:
        raise ConfigError(f"eot_samples must be at least 1, got {eot_samples}")

    def factory(model: Classifier) -> Classifier:
        defended = create_preprocessor(cls.name, model, **params)
        if defended.random:
            return ExpectationOverTransformation(defended, samples=eot_samples)
        return defended

    adaptive = ["eot"] if cls.random else []
    if params.get("gradient", "bpda") == "bpda":
        adaptive.append("bpda")
    adaptive.append("black-box")
    return factory, {"name": cls.name, "params": params, "adaptive_attacks": adaptive}


def _settings(spec: str, text: str, cls: type[Preprocessor]) -> dict[str, Any]:
    """The ``VALUE,KEY=VALUE...`` part of a spec as keyword arguments of ``cls``."""
    names = cls.setting_names()
    known = (*names, *_COMMON_SETTINGS)
    params: dict[str, Any] = {}
    for position, item in enumerate(p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        if not sep:
            if position or not names:
                raise ConfigError(f"defense {spec!r}: write settings as key=value, got {item!r}")
            key, value = names[0], item
        key = key.strip().replace("-", "_")
        if key not in known:
            raise ConfigError(
                f"defense {cls.name} has no setting {key!r}; its settings: {', '.join(known)}"
            )
        params[key] = parse_value(value.strip())
    return params
