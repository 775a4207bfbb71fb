"""Zoo architectures and the weights-only checkpoint format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixelguard.errors import ConfigError, ModelError
from pixelguard.models import (
    InputSpec,
    OutputKind,
    TorchClassifier,
    build_model,
    list_archs,
    load_checkpoint,
    load_model,
    save_checkpoint,
)


@pytest.mark.parametrize("arch", ["small-cnn", "mlp"])
@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_archs_fit_digits_mnist_and_cifar(arch: str, channels: int, size: int) -> None:
    net = build_model(arch, channels, 10, (size, size))
    assert net(torch.zeros(2, channels, size, size)).shape == (2, 10)


def test_small_cnn_adds_a_block_from_16_pixels() -> None:
    def convs(size: int) -> int:
        net = build_model("small-cnn", 1, 10, (size, size))
        return sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())

    assert convs(8) == 2 and convs(15) == 2 and convs(16) == 3


def test_registry_and_validation() -> None:
    assert {"small-cnn", "mlp"} <= set(list_archs())
    with pytest.raises(ConfigError, match="unknown model architecture"):
        build_model("resnet-9000", 1, 10, (8, 8))
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", 1, 1, (8, 8))
    with pytest.raises(ConfigError, match="image_size"):
        build_model("small-cnn", 1, 10, (1, 8))


def _save(path: Path, spec: InputSpec | None = None) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_model("small-cnn", 1, 3, (8, 8))
    save_checkpoint(
        path,
        net,
        arch="small-cnn",
        arch_params={"in_channels": 1, "num_classes": 3, "image_size": (8, 8)},
        input_shape=(1, 8, 8),
        class_names=["zero", "one", "two"],
        spec=spec or InputSpec(mean=(0.5,), std=(0.25,)),
        metrics={"train_accuracy": np.float64(0.97), "epochs": np.int64(3), "val": None},
    )
    return net


def test_checkpoint_round_trip_gives_identical_scores(tmp_path) -> None:
    path = tmp_path / "nested" / "model.pt"
    net = _save(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert raw["format"] == "pixelguard-model" and raw["version"] == 1
    assert raw["spec"]["mean"] == [0.5] and raw["input_shape"] == [1, 8, 8]
    module, meta = load_checkpoint(path)
    assert not module.training
    assert meta["input_shape"] == (1, 8, 8)
    assert meta["spec"] == InputSpec(mean=(0.5,), std=(0.25,))
    assert meta["class_names"] == ["zero", "one", "two"]
    assert meta["metrics"] == {"train_accuracy": 0.97, "epochs": 3, "val": None}
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = TorchClassifier(net, (1, 8, 8), meta["spec"]).predict(x)
    assert torch.equal(TorchClassifier(module, (1, 8, 8), meta["spec"]).predict(x), expected)
    loaded = load_model(path)
    assert isinstance(loaded, TorchClassifier)
    assert loaded.capabilities.output is OutputKind.LOGITS
    assert torch.equal(loaded.predict(x), expected)


def test_save_validates_metadata(tmp_path) -> None:
    net = build_model("mlp", 1, 3, (8, 8))
    common = {
        "arch": "mlp",
        "arch_params": {"in_channels": 1, "num_classes": 3, "image_size": [8, 8]},
        "input_shape": (1, 8, 8),
        "spec": InputSpec(),
    }
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        save_checkpoint(tmp_path / "a.pt", net, class_names=["a", "b"], metrics={}, **common)
    with pytest.raises(ConfigError, match="plain"):
        save_checkpoint(tmp_path / "b.pt", net, class_names=None, metrics={"x": object()}, **common)
    with pytest.raises(ConfigError, match="unknown model architecture"):
        save_checkpoint(
            tmp_path / "c.pt", net, class_names=None, metrics={}, **{**common, "arch": "nope"}
        )


def test_load_checkpoint_refuses_other_files(tmp_path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        load_checkpoint(tmp_path / "missing.pt")
    sd = tmp_path / "sd.pt"
    torch.save(build_model("mlp", 1, 3, (8, 8)).state_dict(), sd)
    with pytest.raises(ModelError, match="not a pixelguard checkpoint"):
        load_checkpoint(sd)
    path = tmp_path / "v2.pt"
    _save(path)
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 2}, path)
    with pytest.raises(ModelError, match="version 2"):
        load_checkpoint(path)
    torch.save({**payload, "arch_params": {**payload["arch_params"], "num_classes": 4}}, path)
    with pytest.raises(ModelError, match="cannot be rebuilt"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(ModelError, match="garbage.pt"):
        load_checkpoint(garbage)
