"""ResizeInput: attacks on the image as submitted, resized inside the model."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pixelguard.attacks import SparseRS
from pixelguard.errors import ConfigError, ModelError
from pixelguard.models import (
    CallableClassifier,
    Differentiable,
    ResizeInput,
    TorchClassifier,
    load_model,
)
from pixelguard.testing import check_attack_result


def linear_model(shape: tuple[int, int, int] = (1, 8, 8), classes: int = 10) -> TorchClassifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], classes))
    return TorchClassifier(net, shape, output="logits")


def test_input_shape_is_the_submitted_shape() -> None:
    model = linear_model((3, 8, 8))
    assert ResizeInput(model, (3, 24, 16)).input_shape == (3, 24, 16)
    assert ResizeInput(model, (24, 16)).input_shape == (3, 24, 16)
    wrapped = ResizeInput(model, (24, 16))
    assert wrapped.num_classes == 10
    assert wrapped.capabilities == model.capabilities


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "area", "nearest", "nearest-exact"])
def test_predict_equals_model_on_manually_resized_images(mode: str) -> None:
    model = linear_model((3, 8, 8))
    x = torch.rand(5, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    wrapped = ResizeInput(model, (3, 20, 28), mode=mode)
    options = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
    manual = F.interpolate(x, size=(8, 8), mode=mode, **options).clamp(0, 1)
    torch.testing.assert_close(wrapped.predict(x), model.predict(manual))


def test_crop_takes_the_centre_of_the_submitted_image() -> None:
    model = linear_model((1, 8, 8))
    x = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(2))
    wrapped = ResizeInput(model, (1, 20, 20), mode="area", crop=(16, 16))
    manual = F.interpolate(x[:, :, 2:18, 2:18], size=(8, 8), mode="area")
    torch.testing.assert_close(wrapped.predict(x), model.predict(manual))
    outside = x.clone()
    outside[:, :, 0, :] = 1.0 - outside[:, :, 0, :]
    torch.testing.assert_close(wrapped.predict(outside), wrapped.predict(x))


def test_same_size_passes_images_through() -> None:
    model = linear_model((1, 8, 8))
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(ResizeInput(model, (8, 8)).predict(x), model.predict(x))


def test_one_submitted_pixel_is_a_fraction_of_a_model_pixel() -> None:
    model = linear_model((1, 8, 8))
    x = torch.zeros(1, 1, 32, 32)
    x_changed = x.clone()
    x_changed[0, 0, 13, 18] = 1.0
    for mode in ("area", "bilinear"):
        wrapped = ResizeInput(model, (32, 32), mode=mode)
        change = (wrapped.resize(x_changed) - wrapped.resize(x)).abs().max()
        assert 0.0 < float(change) < 1.0


def test_sparse_rs_counts_pixels_in_the_submitted_image(
    digits_model: TorchClassifier, correct_digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x8, y = correct_digits[0][:24], correct_digits[1][:24]
    x16 = F.interpolate(x8, size=(16, 16), mode="nearest")
    wrapped = ResizeInput(digits_model, (1, 16, 16), mode="bilinear")
    keep = wrapped.predict(x16).argmax(dim=1) == y
    x16, y = x16[keep], y[keep]
    assert x16.shape[0] >= 12
    result = SparseRS(pixels=3, steps=300, seed=0).run(wrapped, x16, y)
    assert result.x_adv.shape == x16.shape
    assert bool(result.success.any())
    check_attack_result(result, wrapped, x16, max_pixels=3)


def test_logits_are_differentiable_through_the_resize() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))
    model = TorchClassifier(net, (1, 4, 4), output="logits")
    wrapped = ResizeInput(model, (1, 6, 6), mode="bilinear")
    assert isinstance(wrapped, Differentiable)
    x = 0.1 + 0.8 * torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(wrapped.logits(x)[0, 1], x)
    assert float(grad.abs().max()) > 0.0
    eps = 1e-2
    for i, j in ((0, 0), (2, 3), (5, 1)):
        step = torch.zeros_like(x)
        step[0, 0, i, j] = eps
        with torch.no_grad():
            numeric = (wrapped.logits(x + step) - wrapped.logits(x - step))[0, 1] / (2 * eps)
        assert abs(float(numeric) - float(grad[0, 0, i, j])) < 1e-4


def test_models_without_logits_stay_black_box() -> None:
    model = CallableClassifier(
        lambda a: a.reshape(a.shape[0], -1)[:, :3], (1, 4, 4), output="logits"
    )
    wrapped = ResizeInput(model, (1, 8, 8))
    assert not hasattr(wrapped, "logits")
    assert not isinstance(wrapped, Differentiable)
    assert wrapped.predict(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_copies_and_pickles_keep_the_differentiable_class() -> None:
    wrapped = ResizeInput(linear_model(), (16, 16), mode="area", crop=(12, 12))
    x = torch.rand(2, 1, 16, 16)
    for clone in (copy.deepcopy(wrapped), pickle.loads(pickle.dumps(wrapped))):
        assert type(clone) is type(wrapped) and isinstance(clone, Differentiable)
        assert clone.input_shape == (1, 16, 16) and clone.crop == (12, 12)
        torch.testing.assert_close(clone.predict(x), wrapped.predict(x))


def test_wrong_submitted_size_is_refused() -> None:
    wrapped = ResizeInput(linear_model(), (16, 16))
    with pytest.raises(ModelError, match="submitted images"):
        wrapped.predict(torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize(
    ("shape", "options", "match"),
    [
        ((0, 16), {}, "positive"),
        ((1, -4, 16), {}, "positive"),
        ((16,), {}, "2 or 3"),
        ((16.5, 16), {}, "positive integer"),
        ((3, 16, 16), {}, "channels"),
        ((16, 16), {"mode": "lanczos"}, "mode"),
        ((16, 16), {"crop": (0, 8)}, "positive"),
        ((16, 16), {"crop": (8, 8, 1)}, "crop"),
        ((16, 16), {"crop": (17, 8)}, "larger than the submitted image"),
    ],
)
def test_bad_arguments_raise_config_error(
    shape: tuple[int, ...], options: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        ResizeInput(linear_model(), shape, **options)  # type: ignore[arg-type]


def test_a_non_classifier_is_refused() -> None:
    with pytest.raises(ConfigError, match="Classifier"):
        ResizeInput(object(), (16, 16))  # type: ignore[arg-type]


def test_load_model_wraps_when_a_submitted_shape_is_given() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    plain = load_model(net, input_shape=(1, 8, 8))
    assert not isinstance(plain, ResizeInput)
    wrapped = load_model(
        net, input_shape=(1, 8, 8), submitted_shape=(1, 32, 32), resize_mode="area", crop=(24, 24)
    )
    assert isinstance(wrapped, ResizeInput) and isinstance(wrapped, Differentiable)
    assert wrapped.input_shape == (1, 32, 32)
    x = torch.rand(2, 1, 32, 32)
    manual = F.interpolate(x[:, :, 4:28, 4:28], size=(8, 8), mode="area")
    torch.testing.assert_close(wrapped.predict(x), plain.predict(manual))
    with pytest.raises(ConfigError, match="submitted_shape"):
        load_model(net, input_shape=(1, 8, 8), crop=(4, 4))
    with pytest.raises(ConfigError, match="mode"):
        load_model(net, input_shape=(1, 8, 8), submitted_shape=(16, 16), resize_mode="cubic")
