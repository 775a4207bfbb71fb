"""Defense specs and the detector registry: names resolve to configured wrappers."""

from __future__ import annotations

import pytest
import torch

from pixelguard.defenses.detect import IsolatedPixelDetector, create_detector, list_detectors
from pixelguard.defenses.eot import ExpectationOverTransformation
from pixelguard.defenses.preprocess import MedianFilter, OutlierPixelRemoval
from pixelguard.defenses.spec import parse_defense
from pixelguard.errors import ConfigError


def test_a_spec_wraps_the_model_in_the_named_preprocessor(digits_model):
    wrap, description = parse_defense("outlier-removal:3,threshold=0.4,gradient=none")
    defended = wrap(digits_model)
    assert isinstance(defended, OutlierPixelRemoval)
    assert (defended.size, defended.threshold, defended.gradient) == (3, 0.4, "none")
    assert description == {
        "name": "outlier-removal",
        "params": {"size": 3, "threshold": 0.4, "gradient": "none"},
        "adaptive_attacks": ["black-box"],
    }
    assert isinstance(parse_defense("median")[0](digits_model), MedianFilter)


def test_a_random_defense_is_attacked_through_its_expectation(digits_model):
    wrap, description = parse_defense("random-noise:0.05,seed=1", eot_samples=4)
    defended = wrap(digits_model)
    assert isinstance(defended, ExpectationOverTransformation) and defended.samples == 4
    assert defended.predict(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert description["adaptive_attacks"] == ["eot", "bpda", "black-box"]


@pytest.mark.parametrize("spec", ["blur:3", "median:3,5", "median:width=3", "median:3,=4"])
def test_bad_specs_are_config_errors(spec):
    with pytest.raises(ConfigError):
        parse_defense(spec)


def test_detectors_resolve_by_name_and_alias(digits_model):
    assert list_detectors() == ["feature-squeezing", "isolated-pixel", "strip"]
    detector = create_detector("isolated-pixels", digits_model, top=2)
    assert isinstance(detector, IsolatedPixelDetector) and detector.top == 2
    assert create_detector("feature-squeezing", digits_model).model is digits_model
    with pytest.raises(ConfigError, match="unknown detector"):
        create_detector("magnet", digits_model)
