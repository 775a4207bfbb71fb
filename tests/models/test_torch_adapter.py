"""TorchClassifier: conversion at the edge, output kinds, chunking, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pixelguard.errors import ConfigError, ModelError
from pixelguard.models import Differentiable, InputSpec, OutputKind, TorchClassifier


class ChannelMean(nn.Module):
    """Scores are the per-channel means of the input, in NCHW or NHWC."""

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.dims = (1, 2) if channels_last else (2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=self.dims)


class Quadratic(nn.Module):
    """Two smooth scores with a known gradient: sum(w * x^2) and sum(v * x)."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.rand(numel, generator=gen))
        self.v = nn.Parameter(torch.rand(numel, generator=gen) - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return torch.stack([(flat**2 * self.w).sum(1), (flat * self.v).sum(1)], dim=1)


def known_images() -> torch.Tensor:
    """Two 3x4x4 images whose channels have distinct, exactly known means."""
    base = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(2, 3, 4, 4).clone()
    base[1] = base[1].flip(0)
    return base


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)
    )


def test_nchw_round_trip_gives_channel_means() -> None:
    x = known_images()
    clf = TorchClassifier(ChannelMean(), (3, 4, 4), output="logits")
    torch.testing.assert_close(clf.predict(x), x.mean(dim=(2, 3)))


def test_nhwc_layout_is_applied() -> None:
    x = known_images()
    clf = TorchClassifier(ChannelMean(channels_last=True), (3, 4, 4), InputSpec(layout="nhwc"))
    torch.testing.assert_close(clf.predict(x), x.mean(dim=(2, 3)))


def test_scale_mean_std_are_applied_per_channel() -> None:
    x = known_images()
    spec = InputSpec(scale=255.0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    clf = TorchClassifier(ChannelMean(), (3, 4, 4), spec, output="logits")
    expected = (255.0 * x.mean(dim=(2, 3)) - torch.tensor([10.0, 20.0, 30.0])) / torch.tensor(
        [2.0, 4.0, 8.0]
    )
    torch.testing.assert_close(clf.predict(x), expected)


def test_output_kind_is_detected() -> None:
    logits = TorchClassifier(tiny_cnn(), (1, 8, 8))
    probs = TorchClassifier(nn.Sequential(tiny_cnn(), nn.Softmax(dim=1)), (1, 8, 8))
    labels_net = nn.Sequential(tiny_cnn(), _OneHot())
    labels = TorchClassifier(labels_net, (1, 8, 8))
    assert logits.capabilities.output is OutputKind.LOGITS
    assert probs.capabilities.output is OutputKind.PROBABILITIES
    assert labels.capabilities.output is OutputKind.LABELS
    assert logits.capabilities.gradients and probs.capabilities.gradients
    assert not labels.capabilities.gradients
    assert logits.num_classes == 5


class _OneHot(nn.Module):
    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(scores.argmax(1), scores.shape[1]).float()


def test_logits_of_a_probability_model_are_log_probabilities() -> None:
    net = tiny_cnn()
    clf = TorchClassifier(nn.Sequential(net, nn.Softmax(dim=1)), (1, 8, 8))
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(clf.logits(x), torch.log_softmax(net(x), dim=1))


def test_chunking_gives_the_same_scores_as_one_batch() -> None:
    net = tiny_cnn()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    whole = TorchClassifier(net, (1, 8, 8), batch_size=1024)
    chunked = TorchClassifier(net, (1, 8, 8), batch_size=3)
    torch.testing.assert_close(chunked.predict(x), whole.predict(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(chunked.logits(x), whole.logits(x), atol=1e-6, rtol=1e-6)


def test_logits_gradient_matches_finite_differences() -> None:
    spec = InputSpec(scale=2.0, mean=(0.5,), std=(0.25,))
    clf = TorchClassifier(Quadratic(4), (1, 2, 2), spec, output="logits")
    assert isinstance(clf, Differentiable)
    x = torch.tensor([[[[0.2, 0.4], [0.6, 0.8]]]], requires_grad=True)
    for k in range(2):
        (grad,) = torch.autograd.grad(clf.logits(x)[0, k], x)
        eps = 1e-2
        numeric = torch.zeros(4)
        for i in range(4):
            step = torch.zeros(4)
            step[i] = eps
            step = step.view(1, 1, 2, 2)
            with torch.no_grad():
                up, down = clf.logits(x + step)[0, k], clf.logits(x - step)[0, k]
            numeric[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(grad.flatten(), numeric, rtol=1e-3, atol=1e-3)


def test_predict_does_not_track_gradients_or_mutate_input() -> None:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before = x.clone()
    scores = TorchClassifier(tiny_cnn(), (1, 8, 8)).predict(x)
    assert not scores.requires_grad
    assert torch.equal(x, before)


def test_module_is_put_in_eval_mode_and_device_is_found() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
    net.train()
    clf = TorchClassifier(net, (1, 2, 2), device="cpu")
    assert not net.training
    assert clf.device == torch.device("cpu")
    x = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(clf.predict(x), clf.predict(x))
    assert TorchClassifier(ChannelMean(), (3, 4, 4)).device == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_module_takes_cpu_batches_and_returns_on_their_device() -> None:
    net = tiny_cnn().to("cuda")
    clf = TorchClassifier(net, (1, 8, 8), batch_size=3)
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = clf.predict(x)
    assert scores.device.type == "cpu"
    torch.testing.assert_close(scores, net.cpu()(x).detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_module_works() -> None:
    x = known_images()
    scripted = torch.jit.script(ChannelMean())
    clf = TorchClassifier(scripted, (3, 4, 4), output="logits")
    torch.testing.assert_close(clf.predict(x), x.mean(dim=(2, 3)))
    assert clf.logits(x.requires_grad_()).requires_grad


def test_uint8_input_disables_gradients() -> None:
    spec = InputSpec(scale=255.0, dtype="uint8")
    clf = TorchClassifier(_FloatMean(), (3, 4, 4), spec, output="logits")
    assert not clf.capabilities.gradients
    torch.testing.assert_close(
        clf.predict(known_images()), 255 * known_images().mean((2, 3)), atol=0.5, rtol=0
    )


class _FloatMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))


class _Bad(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "1d":
            return x.reshape(x.shape[0], -1).sum(1)
        if self.kind == "rows":
            return torch.zeros(x.shape[0] + 1, 3)
        scores = torch.zeros(x.shape[0], 3)
        scores[0, 0] = float("nan")
        return scores


@pytest.mark.parametrize("kind", ["1d", "rows", "nan"])
def test_wrong_output_raises_model_error(kind: str) -> None:
    clf = TorchClassifier(_Bad(kind), (1, 2, 2), output="logits")
    x = torch.rand(2, 1, 2, 2)
    with pytest.raises(ModelError):
        clf.predict(x)
    with pytest.raises(ModelError):
        clf.logits(x)


def test_module_failure_and_wrong_image_shape_raise_model_error() -> None:
    clf = TorchClassifier(tiny_cnn(), (1, 9, 9), output="logits")
    with pytest.raises(ModelError, match="check input_shape"):
        clf.predict(torch.rand(2, 1, 9, 9))
    good = TorchClassifier(tiny_cnn(), (1, 8, 8), output="logits")
    with pytest.raises(ModelError, match="expects images of shape"):
        good.logits(torch.rand(2, 1, 9, 9))


def test_not_a_module_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nn.Module"):
        TorchClassifier(lambda x: x, (1, 2, 2))  # type: ignore[arg-type]


def test_a_torchscript_module_that_fails_says_why_in_one_line() -> None:
    scripted = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    model = TorchClassifier(scripted, (1, 8, 8), output="logits")
    with pytest.raises(ModelError) as info:
        model.predict(torch.zeros(2, 1, 8, 8))
    message = str(info.value)
    assert "\n" not in message, "not the interpreter's traceback"
    assert "mat1 and mat2 shapes cannot be multiplied" in message
    assert "Traceback" not in message
