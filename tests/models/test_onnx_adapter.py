"""OnnxClassifier: a torch export scores like torch, shapes and dtypes read from the file."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from pixelguard.errors import ConfigError, ModelError
from pixelguard.models import InputSpec, OnnxClassifier, OutputKind, TorchClassifier, load_model


def tiny_cnn() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4 * 4 * 4, 10),
        ).eval()


class ChannelsLast(nn.Module):
    """Takes NHWC input and runs an NCHW network on it."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def export(
    module: nn.Module, example: torch.Tensor, path: Path, dynamic: dict | None = None
) -> Path:
    """Export with the TorchScript-based exporter (the dynamo one needs onnxscript)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["scores"],
            dynamic_axes=dynamic if dynamic is not None else {"x": {0: "n"}, "scores": {0: "n"}},
        )
    return path


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory) -> tuple[nn.Module, Path]:
    net = tiny_cnn()
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    return net, export(net, torch.zeros(1, 1, 8, 8), path)


def images(n: int, shape: tuple[int, ...] = (1, 8, 8)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))


def test_export_scores_like_torch_and_reads_input_shape(cnn_onnx) -> None:
    net, path = cnn_onnx
    clf = OnnxClassifier(path)
    assert clf.input_shape == (1, 8, 8)
    assert clf.num_classes == 10
    assert clf.capabilities.output is OutputKind.LOGITS
    x = images(20)
    expected = TorchClassifier(net, (1, 8, 8)).predict(x)
    torch.testing.assert_close(clf.predict(x), expected, atol=1e-5, rtol=1e-5)
    chunked = OnnxClassifier(path, batch_size=3)
    torch.testing.assert_close(chunked.predict(x), expected, atol=1e-5, rtol=1e-5)


def test_nhwc_model_reads_shape_per_layout(tmp_path) -> None:
    net = tiny_cnn()
    path = export(ChannelsLast(net), torch.zeros(1, 8, 8, 1), tmp_path / "nhwc.onnx")
    clf = OnnxClassifier(path, spec=InputSpec(layout="nhwc"))
    assert clf.input_shape == (1, 8, 8)
    x = images(5)
    torch.testing.assert_close(clf.predict(x), net(x).detach(), atol=1e-5, rtol=1e-5)


def test_fixed_batch_of_one_is_padded(tmp_path) -> None:
    net = tiny_cnn()
    path = export(net, torch.zeros(1, 1, 8, 8), tmp_path / "fixed.onnx", dynamic={})
    clf = OnnxClassifier(path, batch_size=64)
    assert clf.batch_size == 1
    x = images(3)
    torch.testing.assert_close(clf.predict(x), net(x).detach(), atol=1e-5, rtol=1e-5)


def test_float64_model_input_sets_the_dtype(tmp_path) -> None:
    # onnxruntime has no float64 Conv kernel, so this one is a linear model.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    path = export(net, torch.zeros(1, 1, 8, 8, dtype=torch.float64), tmp_path / "f64.onnx")
    clf = OnnxClassifier(path)
    assert clf.spec.dtype == "float64"
    x = images(4)
    torch.testing.assert_close(clf.predict(x), net(x.double()).float(), atol=1e-5, rtol=1e-5)


def _uint8_linear(path: Path, image_dims: list) -> tuple[Path, np.ndarray]:
    """A hand-built graph: uint8 (N, 1, 2, 2) -> Cast -> Flatten -> MatMul W (4, 3)."""
    weights = (np.arange(12, dtype=np.float32).reshape(4, 3) - 6) / 10
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Flatten", ["xf"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["scores"]),
        ],
        "uint8_linear",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", *image_dims])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path, weights


def test_uint8_input_with_scale_255(tmp_path) -> None:
    path, weights = _uint8_linear(tmp_path / "u8.onnx", [1, 2, 2])
    clf = OnnxClassifier(path, spec=InputSpec(scale=255.0), output="logits")
    assert clf.spec.dtype == "uint8"
    x = torch.tensor([[[[0.0, 0.5], [1.0, 0.2]]]])
    pixels = np.array([[0.0, 128.0, 255.0, 51.0]], dtype=np.float32)
    np.testing.assert_allclose(clf.predict(x).numpy(), pixels @ weights, rtol=1e-6)


def test_open_image_size_needs_input_shape(tmp_path) -> None:
    path, _ = _uint8_linear(tmp_path / "open.onnx", [1, "h", "w"])
    with pytest.raises(ConfigError, match="input_shape"):
        OnnxClassifier(path)
    assert OnnxClassifier(path, input_shape=(1, 2, 2)).input_shape == (1, 2, 2)


def test_shape_mismatch_corrupt_and_missing_files(cnn_onnx, tmp_path) -> None:
    _, path = cnn_onnx
    with pytest.raises(ModelError, match=r"\(1, 8, 8\)"):
        OnnxClassifier(path, input_shape=(1, 9, 9))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="bad.onnx"):
        OnnxClassifier(bad)
    with pytest.raises(ModelError, match="no such model file"):
        OnnxClassifier(tmp_path / "missing.onnx")


def test_importing_models_does_not_import_onnxruntime() -> None:
    code = "import sys, pixelguard.models; print('onnxruntime' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


def test_open_image_size_takes_the_datas_through_the_loader(tmp_path) -> None:
    path, _ = _uint8_linear(tmp_path / "open.onnx", [1, "h", "w"])
    assert load_model(path, data_shape=(1, 2, 2)).input_shape == (1, 2, 2)
    assert load_model(path, input_shape=(1, 2, 2), data_shape=(1, 9, 9)).input_shape == (1, 2, 2)


def test_nchw_model_read_as_nhwc_says_to_drop_the_layout(cnn_onnx) -> None:
    with pytest.raises(ConfigError, match="drop --layout nhwc"):
        OnnxClassifier(cnn_onnx[1], spec=InputSpec(layout="nhwc"))
