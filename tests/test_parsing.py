"""Settings are read one way everywhere: shapes, numbers and key=value texts."""

from __future__ import annotations

import pytest

from pixelguard.defenses.spec import parse_defense
from pixelguard.errors import ConfigError
from pixelguard.models.base import parse_floats, parse_shape
from pixelguard.parsing import parse_key_values, parse_value


@pytest.mark.parametrize("given", ["1,28,28", "1x28x28", " 1, 28, 28 ", (1, 28, 28), [1, 28, 28]])
def test_one_shape_parser_for_text_and_sequences(given):
    assert parse_shape(given) == (1, 28, 28)


@pytest.mark.parametrize("given", ["1,28", "1,28,28,3", "0,8,8", "a,b,c", (1.5, 8, 8), "1.5,8,8"])
def test_bad_shapes_name_the_option(given):
    with pytest.raises(ConfigError, match="--input-shape must be C,H,W"):
        parse_shape(given, "--input-shape")


def test_values_read_the_same_in_param_and_defense_settings():
    assert [parse_value(t) for t in ("3", "0.5", "true", "null", "median")] == [
        3,
        0.5,
        True,
        None,
        "median",
    ]
    assert parse_key_values(["steps=3", "p-init=0.5", "exact=false"], "--param") == {
        "steps": 3,
        "p_init": 0.5,
        "exact": False,
    }
    _, described = parse_defense("outlier-removal:3,threshold=0.25")
    assert described["params"] == {"size": 3, "threshold": 0.25}
    with pytest.raises(ConfigError, match="--param must be key=value"):
        parse_key_values(["steps"], "--param")


def test_fractions_are_numbers():
    assert parse_floats("8/255, 0.1", "--eps") == pytest.approx((8 / 255, 0.1))
    with pytest.raises(ConfigError, match="8/255"):
        parse_floats("8/0", "--eps")
