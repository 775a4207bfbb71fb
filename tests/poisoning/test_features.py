"""Penultimate-layer features: which models they are read from, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pixelguard.errors import CapabilityError
from pixelguard.models.callable import CallableClassifier
from pixelguard.models.torch import TorchClassifier
from pixelguard.models.zoo import build_model
from pixelguard.poisoning.features import last_linear, penultimate_features


def test_small_cnn_features_are_the_input_of_the_last_linear() -> None:
    torch.manual_seed(0)
    module = build_model("small-cnn", 1, 10, (8, 8)).eval()
    x = torch.rand(37, 1, 8, 8)
    feats = penultimate_features(TorchClassifier(module, (1, 8, 8)), x, batch_size=10)
    assert feats.shape == (37, 128)
    with torch.no_grad():
        expected = module[:-1](x)
        assert torch.allclose(module[-1](feats), module(x), atol=1e-5)
    assert torch.allclose(feats, expected, atol=1e-6)
    assert not feats.requires_grad


def test_mlp_and_plain_module_and_softmax_head() -> None:
    module = build_model("mlp", 1, 3, (4, 4))
    assert penultimate_features(module, torch.rand(5, 1, 4, 4)).shape == (5, 256)
    with_softmax = nn.Sequential(
        nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3), nn.Softmax(1)
    )
    assert penultimate_features(with_softmax, torch.rand(4, 1, 4, 4)).shape == (4, 6)


def test_the_classifier_input_conversion_is_applied() -> None:
    from pixelguard.models.base import InputSpec

    module = nn.Sequential(nn.Flatten(), nn.Identity(), nn.Linear(4, 2))
    clf = TorchClassifier(module, (1, 2, 2), spec=InputSpec(scale=255.0), output="logits")
    x = torch.full((2, 1, 2, 2), 0.5)
    assert torch.allclose(penultimate_features(clf, x), torch.full((2, 4), 127.5))


def test_empty_batch_gives_no_rows() -> None:
    module = build_model("mlp", 1, 3, (4, 4))
    assert penultimate_features(module, torch.zeros(0, 1, 4, 4)).shape == (0, 256)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script
def test_refuses_models_without_readable_features() -> None:
    callable_model = CallableClassifier(lambda x: np.zeros((x.shape[0], 3)), (1, 4, 4))
    with pytest.raises(CapabilityError, match="exposes no hidden layer.*torch model"):
        penultimate_features(callable_model, torch.rand(2, 1, 4, 4))
    with pytest.raises(CapabilityError, match="no nn.Linear"):
        penultimate_features(nn.Sequential(nn.Flatten()), torch.rand(2, 1, 4, 4))
    scripted = torch.jit.script(build_model("mlp", 1, 3, (4, 4)))
    with pytest.raises(CapabilityError, match="TorchScript"):
        last_linear(scripted)


def test_refuses_a_last_linear_that_is_not_the_classification_layer() -> None:
    # The last registered Linear is a side branch that never runs.
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(16, 3)
            self.unused = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(x.flatten(1))

    with pytest.raises(CapabilityError, match="ran 0 times"):
        penultimate_features(Odd(), torch.rand(2, 1, 4, 4))
    # A Linear followed by more layers that change the output width.
    wrong = nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 8),
        nn.ReLU(),
        nn.Unflatten(1, (2, 2, 2)),
        nn.Conv2d(2, 3, 2),
        nn.Flatten(),
    )
    with pytest.raises(CapabilityError, match="is not the layer that gives the 3 class scores"):
        penultimate_features(wrong, torch.rand(2, 1, 4, 4))
