"""Pixel triggers, backdoor poisoning and the attack success rate."""

from __future__ import annotations

import pytest
import torch

from pixelguard.data.base import Dataset
from pixelguard.errors import CapabilityError, ConfigError, ShapeError
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.training import train_classifier
from pixelguard.poisoning.backdoor import backdoor_metrics, poison_dataset, read_poison_info
from pixelguard.poisoning.triggers import parse_trigger

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def train_test(digits) -> tuple[Dataset, Dataset]:
    x, y = digits
    return (
        Dataset(x[:1200], y[:1200], None, "digits-train"),
        Dataset(x[1200:], y[1200:], None, "digits-test"),
    )


@pytest.mark.parametrize(
    ("spec", "rows", "cols"),
    [
        ("square:3@bottom-right", range(4, 7), range(4, 7)),
        ("square:2@top-left,margin=0", range(0, 2), range(0, 2)),
        ("checker:3@top-right", range(1, 4), range(4, 7)),
        ("square:3@bottom-left,margin=2", range(3, 6), range(2, 5)),
    ],
)
def test_patch_triggers_sit_where_the_spec_says(spec, rows, cols) -> None:
    trigger = parse_trigger(spec, SHAPE)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[rows.start : rows.stop, cols.start : cols.stop] = True
    assert torch.equal(trigger.mask, expected)
    stamped = trigger.apply(torch.full((2, *SHAPE), 0.5))
    assert torch.equal(stamped[:, :, ~expected], torch.full_like(stamped[:, :, ~expected], 0.5))


def test_checker_alternates_and_scattered_pixels_are_seeded() -> None:
    checker = parse_trigger("checker:3@top-left", (3, 8, 8))
    patch = checker.apply(torch.full((1, 3, 8, 8), 0.5))[0, :, 1:4, 1:4]
    assert torch.equal(patch[:, 0, 0], torch.ones(3)) and torch.equal(
        patch[:, 0, 1], torch.zeros(3)
    )
    first, again = parse_trigger("pixels:4,seed=1", SHAPE), parse_trigger("pixels:4,seed=1", SHAPE)
    other = parse_trigger("pixels:4,seed=2", SHAPE)
    assert first.n_pixels == 4 and torch.equal(first.mask, again.mask)
    assert not torch.equal(first.mask, other.mask)
    assert set(first.values.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    "spec",
    [
        "square",
        "circle:3",
        "square:0",
        "square:x",
        "square:3@middle",
        "square:8@bottom-right",
        "pixels:65",
        "pixels:3@top-left",
        "square:2,value=2",
        "square:2,colour=1",
        "square:2,margin",
    ],
)
def test_bad_trigger_specs_are_config_errors(spec) -> None:
    with pytest.raises(ConfigError) as error:
        parse_trigger(spec, SHAPE)
    assert spec in str(error.value)


@pytest.mark.parametrize("mode", ["all-to-one", "all-to-all"])
def test_poisoned_set_has_the_rate_and_only_trigger_pixels_change(train_test, mode) -> None:
    train, _ = train_test
    target = 3 if mode == "all-to-one" else None
    poisoned = poison_dataset(train, "square:2@bottom-right", rate=0.1, target=target, mode=mode)
    assert poisoned.n_poisoned == 120 and poisoned.rate == pytest.approx(0.1)
    changed = (poisoned.dataset.x != train.x).flatten(2).any(dim=1)  # (N, H*W)
    trigger_area = poisoned.trigger.mask.flatten()
    assert not changed[:, ~trigger_area].any()
    assert not changed[~poisoned.mask].any()
    clean, relabelled = train.y[poisoned.mask], poisoned.dataset.y[poisoned.mask]
    if mode == "all-to-one":
        assert (clean != 3).all() and (relabelled == 3).all()
    else:
        assert torch.equal(relabelled, (clean + 1) % 10)
    assert torch.equal(poisoned.dataset.y[~poisoned.mask], train.y[~poisoned.mask])
    assert torch.equal(poisoned.clean_labels, train.y)


def test_same_seed_same_poison_other_seed_other_images(train_test) -> None:
    train, _ = train_test
    a = poison_dataset(train, "square:2", rate=0.05, target=1, seed=4)
    b = poison_dataset(train, "square:2", rate=0.05, target=1, seed=4)
    c = poison_dataset(train, "square:2", rate=0.05, target=1, seed=5)
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0, "target": 1}, "between 0 and 1"),
        ({"rate": 1.0, "target": 1}, "between 0 and 1"),
        ({"rate": 0.1, "target": 10}, "target class must be in [0, 9]"),
        ({"rate": 0.1}, "needs a target"),
        ({"rate": 0.1, "target": 1, "mode": "all-to-all"}, "takes no target"),
        ({"rate": 0.1, "target": 1, "mode": "random"}, "mode must be one of"),
        ({"rate": 0.5, "target": 1, "mode": "clean-label"}, "needs 600 images of the target"),
        ({"rate": 0.0001, "target": 1}, "poisons no image"),
    ],
)
def test_bad_poisoning_settings_are_config_errors(train_test, kwargs, message) -> None:
    train, _ = train_test
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        poison_dataset(train, "square:2", **kwargs)


def test_trigger_for_other_images_is_refused(train_test) -> None:
    train, _ = train_test
    with pytest.raises(ConfigError, match="shape"):
        poison_dataset(train, parse_trigger("square:2", (3, 8, 8)), rate=0.1, target=1)
    with pytest.raises(ShapeError):
        parse_trigger("square:2", (3, 8, 8)).apply(train.x[:2])


def test_saved_poison_reads_back_as_data_and_truth(train_test, tmp_path) -> None:
    from pixelguard.data import load_data

    train, _ = train_test
    poisoned = poison_dataset(train, "pixels:3,seed=2", rate=0.05, target=0, seed=1)
    path = poisoned.save(tmp_path / "poisoned.npz")
    loaded = load_data(path)
    assert torch.equal(loaded.x, poisoned.dataset.x) and torch.equal(loaded.y, poisoned.dataset.y)
    info = read_poison_info(path)
    assert info is not None and torch.equal(info.mask, poisoned.mask)
    assert info.target == 0 and info.mode == "all-to-one"
    assert torch.equal(info.trigger.mask, poisoned.trigger.mask)
    assert torch.equal(info.trigger.values, poisoned.trigger.values)
    assert read_poison_info(tmp_path / "missing.npz") is None


def _train(data: Dataset) -> TorchClassifier:
    module, _ = train_classifier(data.x, data.y, epochs=15, lr=3e-3, batch_size=64, seed=0)
    return TorchClassifier(module, SHAPE, batch_size=4096)


def test_backdoor_works_on_poisoned_model_and_not_on_clean_one(train_test) -> None:
    train, test = train_test
    poisoned = poison_dataset(train, "square:2@bottom-right", rate=0.1, target=7, seed=0)
    backdoored = backdoor_metrics(_train(poisoned.dataset), test, poisoned.trigger, target=7)
    clean = backdoor_metrics(_train(train), test, poisoned.trigger, target=7)
    assert backdoored.attack_success_rate > 0.9
    assert clean.attack_success_rate < 0.2
    assert backdoored.clean_accuracy > 0.85 and clean.clean_accuracy > 0.85
    assert backdoored.n_triggered == int((test.y != 7).sum())
    report = backdoored.to_dict()
    low, high = report["attack_success_rate_ci"]
    assert low <= report["attack_success_rate"] <= high


def test_clean_label_keeps_labels_and_stays_within_eps(train_test, digits_model) -> None:
    train, _ = train_test
    poisoned = poison_dataset(
        train, "square:2", rate=0.05, target=2, mode="clean-label", model=digits_model, eps=0.1
    )
    assert torch.equal(poisoned.dataset.y, train.y)
    assert (train.y[poisoned.mask] == 2).all() and poisoned.n_poisoned == 60
    outside = ~poisoned.trigger.mask
    delta = (poisoned.dataset.x - train.x)[:, :, outside]
    assert float(delta.abs().max()) <= 0.1 + 1e-6
    assert float(delta[poisoned.mask].abs().max()) > 0.05
    assert not delta[~poisoned.mask].any()


def test_clean_label_needs_a_gradient_model(train_test) -> None:
    train, _ = train_test
    with pytest.raises(CapabilityError, match="clean model with gradients"):
        poison_dataset(train, "square:2", rate=0.05, target=2, mode="clean-label")
