"""Every registered attack keeps the attack contract against every adapter kind it supports.

The attacks are taken from ``list_attacks()`` when the tests are collected, so a newly
registered attack is checked without touching this file; :func:`check_contract` is the
one loop, used as well by the tests that register toy attacks of their own.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

import pixelguard.attacks  # noqa: F401  (registers the built-in attacks)
from pixelguard.attacks.base import (
    Attack,
    AttackState,
    ThreatModel,
    create_attack,
    list_attacks,
    register_attack,
    unregister_attack,
)
from pixelguard.errors import CapabilityError
from pixelguard.models import CallableClassifier, OnnxClassifier, SklearnClassifier
from pixelguard.models.base import Capabilities, Classifier, ClassifierWrapper
from pixelguard.testing import check_attack_result

N_IMAGES = 4
BUDGET = 150
"""Queries per image for every attack run here: small, so the whole file runs in seconds."""

SMALL: dict[str, list[dict[str, Any]]] = {
    "corner-search": [{"budget": 2 * 64}],
    "fgsm": [{"eps": 0.3}, {"norm": "l2", "eps": 1.5}],
    "gradient-descent": [{"steps": 10}],
    "label-only": [{"max_pixels": 30, "group_steps": 10}, {"group_steps": 5}],
    "min-pixels": [{"max_pixels": 4, "stage_steps": 10}],
    "pgd": [{"eps": 0.3, "steps": 5}, {"norm": "l2", "eps": 1.5, "steps": 5, "restarts": 2}],
    "pixel-de": [{"pixels": 2, "population": 10, "generations": 3}],
    "sparse-pgd": [{"pixels": 3, "steps": 5, "restarts": 2}],
    "sparse-rs": [{"pixels": 1, "steps": 30}, {"pixels": 3, "steps": 30, "min_batch": 8}],
}
"""Small configurations of the built-in attacks; any other attack runs with its defaults
and :data:`BUDGET` queries."""

ADAPTERS = ("torch", "torch-reject", "onnx", "sklearn", "callable", "callable-labels")


def configurations(name: str) -> list[dict[str, Any]]:
    return [{"seed": 0, "budget": BUDGET, **params} for params in SMALL.get(name, [{}])]


class RejectsNine(ClassifierWrapper):
    """The wrapped model, with its class 9 meaning "input rejected"."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(self.model.capabilities, reject_class=9)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def images(digits) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits
    return x[1400 : 1400 + N_IMAGES].clone(), y[1400 : 1400 + N_IMAGES].clone()


@pytest.fixture(scope="module")
def adapters(digits, digits_model, tmp_path_factory) -> dict[str, Classifier]:
    """One model per adapter kind, each small and fast and right on most digits."""
    x, y = digits
    path = Path(tmp_path_factory.mktemp("contract")) / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            digits_model.module,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["scores"],
            dynamic_axes={"x": {0: "n"}, "scores": {0: "n"}},
        )
    flat = x[:600].reshape(600, -1).numpy()
    with threadpool_limits(1):
        logreg = LogisticRegression(max_iter=200).fit(flat, y[:600].numpy())
    weights = logreg.coef_.T.astype(np.float32)
    bias = logreg.intercept_.astype(np.float32)

    def linear(a: np.ndarray) -> np.ndarray:
        return a.reshape(len(a), -1) @ weights + bias

    def labels(a: np.ndarray) -> np.ndarray:
        return np.eye(10, dtype=np.float32)[linear(a).argmax(axis=1)]

    return {
        "torch": digits_model,
        "torch-reject": RejectsNine(digits_model),  # type: ignore[dict-item]
        "onnx": OnnxClassifier(path),
        "sklearn": SklearnClassifier(logreg, (1, 8, 8)),
        "callable": CallableClassifier(linear, (1, 8, 8), output="logits"),
        "callable-labels": CallableClassifier(labels, (1, 8, 8), output="labels"),
    }


def modes(cls: type[Attack]) -> Iterator[bool]:
    """``False`` (untargeted) and ``True`` (targeted), those the attack supports."""
    if cls.supports_untargeted:
        yield False
    if cls.supports_targeted:
        yield True


def _target(y: torch.Tensor) -> torch.Tensor:
    """A target class per image: never its label, never the reject class 9."""
    return (y + 1) % 9


def check_contract(
    attack: Attack, model: Classifier, x: torch.Tensor, y: torch.Tensor
) -> list[str]:
    """Run ``attack`` on ``model`` in each mode it supports and check every result.

    An attack that needs what the model lacks must refuse it with a
    :class:`CapabilityError` instead. Returns what ran, e.g. ``["untargeted"]``.
    """
    caps = model.capabilities
    if (attack.needs_gradients and not caps.gradients) or (attack.needs_scores and not caps.scores):
        targeted = next(modes(type(attack)))
        with pytest.raises(CapabilityError):
            attack.run(model, x, y, target=_target(y) if targeted else None)
        return []
    ran = []
    for targeted in modes(type(attack)):
        target = _target(y) if targeted else None
        result = attack.run(model, x, y, target=target)
        assert (result.target is not None) == targeted
        assert result.attack == attack.name
        check_attack_result(
            result, model, x, budget=attack.budget, threat_model=attack.threat_model
        )
        # The default threat model, rebuilt from the result alone, is the attack's own.
        check_attack_result(result, model, x)
        ran.append("targeted" if targeted else "untargeted")
    if attack.supports_untargeted:
        # Labels the model already gets wrong: the clean query (or the scan) fools every image.
        wrong = (model.predict(x).argmax(dim=1) + 1) % model.num_classes
        result = attack.run(model, x, wrong)
        check_attack_result(result, model, x, budget=attack.budget)
        ran.append("misclassified")
    return ran


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name", list_attacks())
def test_every_attack_keeps_the_contract(name, adapter, adapters, images):
    model = adapters[adapter]
    x, y = images
    for params in configurations(name):
        check_contract(create_attack(name, **params), model, x, y)


def test_every_attack_declares_a_threat_model():
    expected = {
        "corner-search": ThreatModel("l0", 1),
        "fgsm": ThreatModel("linf", 0.3),
        "gradient-descent": ThreatModel(),
        "label-only": ThreatModel("l0", 30),
        "min-pixels": ThreatModel("l0", 4),
        "pgd": ThreatModel("linf", 0.3),
        "pixel-de": ThreatModel("l0", 2),
        "sparse-pgd": ThreatModel("l0", 3),
        "sparse-rs": ThreatModel("l0", 1),
    }
    for name, threat in expected.items():
        assert create_attack(name, **configurations(name)[0]).threat_model == threat, name
    assert create_attack("label-only").threat_model == ThreatModel()  # no max_pixels
    assert create_attack("pgd", norm="l2", eps=0.5).threat_model == ThreatModel("l2", 0.5)
    assert create_attack("min-pixels").threat_model == ThreatModel("l0", 64)


@dataclass(frozen=True, kw_only=True)
class ToyOnePixel(Attack):
    """Sets pixel (0, 0) of every image to 1 - its value: one pixel, as declared."""

    name: ClassVar[str] = "toy-one-pixel"
    needs_scores: ClassVar[bool] = False
    pixels: int = 1

    def _run(self, state: AttackState) -> None:
        rows = state.unfooled
        state.x_adv[rows, :, 0, 0] = 1.0 - state.x[rows, :, 0, 0]


@dataclass(frozen=True, kw_only=True)
class ToyOverreach(Attack):
    """Declares one pixel but flips the top half: its successes break its own threat model."""

    name: ClassVar[str] = "toy-overreach"
    pixels: int = 1

    def _run(self, state: AttackState) -> None:
        rows = state.unfooled
        state.x_adv[rows, :, :4, :] = 1.0 - state.x[rows, :, :4, :]


@pytest.fixture
def registered() -> Iterator[Callable[[type[Attack], str], type[Attack]]]:
    """``registered(cls, name)``: register an attack for one test, then forget it."""
    names: list[str] = []

    def register(cls: type[Attack], name: str) -> type[Attack]:
        names.append(name)
        return register_attack(name)(cls)

    yield register
    for name in names:
        unregister_attack(name)


def test_a_registered_toy_attack_is_picked_up_and_checked(registered, adapters, images):
    registered(ToyOnePixel, "toy-one-pixel")
    assert "toy-one-pixel" in list_attacks()
    x, y = images
    for adapter in ADAPTERS:
        ran = []
        for params in configurations("toy-one-pixel"):
            ran += check_contract(create_attack("toy-one-pixel", **params), adapters[adapter], x, y)
        assert ran == ["untargeted", "targeted", "misclassified"], adapter


def test_the_contract_catches_success_outside_the_threat_model(registered, adapters, images):
    registered(ToyOverreach, "toy-overreach")
    model, (x, y) = adapters["torch"], images
    result = create_attack("toy-overreach").run(model, x, y)
    assert bool(result.success.any()) and int(result.l0_pixels.max()) > 1
    with pytest.raises(AssertionError, match=r"outside its threat model \(l0 <= 1 pixels\)"):
        check_attack_result(result, model, x)
    # Distances that do not match the images are caught too.
    forged = dataclasses.replace(result, l0_pixels=torch.zeros_like(result.l0_pixels))
    with pytest.raises(AssertionError, match="l0_pixels do not match"):
        check_attack_result(forged, model, x, threat_model=ThreatModel())
    forged = dataclasses.replace(result, linf=result.linf / 2)
    with pytest.raises(AssertionError, match="linf does not match"):
        check_attack_result(forged, model, x, threat_model=ThreatModel())


def test_registering_for_a_test_leaves_no_trace():
    assert "toy-one-pixel" not in list_attacks()
    assert "toy-overreach" not in list_attacks()
