"""Declared setting constraints: one check, one message form, for every attack."""

from __future__ import annotations

import pytest

from pixelguard.attacks import create_attack
from pixelguard.config import at_least, between, check_constraints, constraints_of, one_of, positive
from pixelguard.errors import ConfigError


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("sparse-rs", {"steps": 0}, "sparse-rs: steps must be at least 1, got 0"),
        ("sparse-rs", {"p_init": 0.0}, "sparse-rs: p_init must lie in (0, 1], got 0.0"),
        ("pixel-de", {"population": 3}, "pixel-de: population must be at least 4, got 3"),
        ("pixel-de", {"mutation": 2.5}, "pixel-de: mutation must lie in (0, 2], got 2.5"),
        ("pixel-de", {"loss": "x"}, "pixel-de: loss must be 'margin' or 'probability', got 'x'"),
        (
            "pixel-de",
            {"population": 4, "checks_per_generation": 5},
            "pixel-de: checks_per_generation must lie in 1..population, got 5",
        ),
        ("corner-search", {"checks": 0}, "corner-search: checks must be at least 1, got 0"),
        ("min-pixels", {"budget": None}, "min-pixels: budget must be at least 1, got None"),
        ("label-only", {"group_steps": -1}, "label-only: group_steps must be at least 0, got -1"),
        ("pgd", {"steps": 2.5}, "pgd: steps must be at least 1, got 2.5"),
        ("pgd", {"norm": "l1"}, "pgd: norm must be 'linf' or 'l2', got 'l1'"),
        ("fgsm", {"eps": 0.0}, "fgsm: eps must be a positive number, got 0.0"),
        ("gradient-descent", {"budget": 0}, "gradient-descent: budget must be at least 1, got 0"),
    ],
)
def test_a_broken_constraint_reads_the_same_for_every_attack(name, params, message):
    with pytest.raises(ConfigError) as err:
        create_attack(name, **params)
    assert str(err.value) == message


def test_constraints_are_inherited_and_readable_for_help():
    rules = {k: c.rule for k, c in constraints_of(type(create_attack("pgd"))).items()}
    assert rules["budget"] == "be at least 1"  # from Attack
    assert rules["eps"] == "be a positive number"  # from NormBoundedAttack
    assert rules["loss"] == "be 'ce' or 'margin'"  # from GradientAttack
    assert rules["steps"] == "be at least 1"  # PGD's own


def test_checks():
    assert at_least(1).accepts(1) and not at_least(1).accepts(True)
    assert at_least(1, optional=True).accepts(None) and not at_least(1).accepts(None)
    assert not positive().accepts(float("inf")) and not positive().accepts(float("nan"))
    unit = between(0, 1, low_open=True, high_open=True)
    assert unit.rule == "lie in (0, 1)" and not unit.accepts(1) and unit.accepts(0.5)
    assert one_of("a", "b", "c").rule == "be one of 'a', 'b', 'c'"

    class Config:
        _constraints = {"n": at_least(2)}
        n = 1

    with pytest.raises(ConfigError, match="^thing: n must be at least 2, got 1$"):
        check_constraints("thing", Config())
