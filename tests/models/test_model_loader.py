"""load_model: objects, files, factories, endpoints, and refusing to run untrusted code."""

from __future__ import annotations

import pickle
import sys
import textwrap
import types
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from pixelguard.errors import ConfigError, ModelError, UnsafeLoadError
from pixelguard.models import (
    CallableClassifier,
    InputSpec,
    OutputKind,
    SklearnClassifier,
    TorchClassifier,
    build_model,
    load_model,
    save_checkpoint,
)


class ChannelMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def known_images() -> torch.Tensor:
    base = torch.tensor([0.1, 0.5, 0.9]).view(1, 3, 1, 1).expand(2, 3, 4, 4).clone()
    base[1] = base[1].flip(0)
    return base


def linear_net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def fitted_logreg() -> LogisticRegression:
    return LogisticRegression().fit(np.eye(4), [0, 1, 2, 0])


X4 = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))


# -- objects ------------------------------------------------------------------------


def test_objects_get_the_matching_adapter() -> None:
    assert isinstance(load_model(linear_net(), input_shape=(1, 2, 2)), TorchClassifier)
    assert isinstance(load_model(fitted_logreg(), input_shape=(1, 2, 2)), SklearnClassifier)
    fn = load_model(lambda a: a.reshape(len(a), -1)[:, :2], input_shape=(1, 2, 2))
    assert isinstance(fn, CallableClassifier)
    ready = TorchClassifier(linear_net(), (1, 2, 2))
    assert load_model(ready) is ready


def test_objects_need_input_shape_and_a_known_kind() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        load_model(linear_net())
    with pytest.raises(ConfigError, match="cannot make a classifier from int"):
        load_model(42, input_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="input_shape"):
        load_model(linear_net(), input_shape=(2, 2))


def test_string_mean_std_scale_and_layout_options() -> None:
    x = known_images()
    clf = load_model(
        ChannelMean(), input_shape=(3, 4, 4), scale=255, mean="10,20,30", std=[2, 4, 8]
    )
    assert clf.spec == InputSpec(scale=255.0, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 8.0))
    expected = (255.0 * x.mean(dim=(2, 3)) - torch.tensor([10.0, 20.0, 30.0])) / torch.tensor(
        [2.0, 4.0, 8.0]
    )
    torch.testing.assert_close(clf.predict(x), expected)
    nhwc = load_model(lambda a: a.mean(axis=(1, 2)), input_shape=(3, 4, 4), layout="nhwc")
    torch.testing.assert_close(nhwc.predict(x), x.mean(dim=(2, 3)))
    with pytest.raises(ConfigError, match="mean"):
        load_model(ChannelMean(), input_shape=(3, 4, 4), mean="a,b")
    with pytest.raises(ConfigError, match="layout"):
        load_model(ChannelMean(), input_shape=(3, 4, 4), layout="chw")


def test_output_option_is_passed_through() -> None:
    def probs(a: np.ndarray) -> np.ndarray:
        z = np.exp(a.reshape(len(a), -1)[:, :3])
        return z / z.sum(1, keepdims=True)

    assert load_model(probs, input_shape=(1, 2, 2)).capabilities.output is (
        OutputKind.PROBABILITIES
    )
    declared = load_model(probs, input_shape=(1, 2, 2), output="logits")
    assert declared.capabilities.output is OutputKind.LOGITS
    with pytest.raises(ConfigError, match="scikit-learn"):
        load_model(fitted_logreg(), input_shape=(1, 2, 2), output="logits")


# -- torch files --------------------------------------------------------------------


def test_pickled_module_is_refused_without_trust(tmp_path) -> None:
    net = linear_net()
    path = tmp_path / "full.pt"
    torch.save(net, path)
    with pytest.raises(UnsafeLoadError, match="--trust-pickle"):
        load_model(path, input_shape=(1, 2, 2))
    clf = load_model(path, input_shape=(1, 2, 2), trust_pickle=True)
    assert torch.equal(clf.predict(X4), net(X4).detach())


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
def test_torchscript_file_needs_input_shape(tmp_path) -> None:
    net = linear_net()
    path = tmp_path / "scripted.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(path))
    with pytest.raises(ConfigError, match="input_shape"):
        load_model(path)
    clf = load_model(path, input_shape=(1, 2, 2))
    assert isinstance(clf, TorchClassifier)
    torch.testing.assert_close(clf.predict(X4), net(X4).detach())


def _checkpoint(path: Path) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_model("mlp", 1, 3, (2, 2))
    save_checkpoint(
        path,
        net,
        arch="mlp",
        arch_params={"in_channels": 1, "num_classes": 3, "image_size": (2, 2)},
        input_shape=(1, 2, 2),
        class_names=None,
        spec=InputSpec(mean=(0.5,)),
        metrics={},
    )
    return net


def test_checkpoint_spec_is_kept_unless_the_user_overrides_it(tmp_path) -> None:
    path = tmp_path / "model.pt"
    net = _checkpoint(path)
    clf = load_model(path)
    assert clf.input_shape == (1, 2, 2)
    assert clf.spec == InputSpec(mean=(0.5,))
    torch.testing.assert_close(clf.predict(X4), net(X4 - 0.5).detach())
    overridden = load_model(path, scale=2.0, layout="nhwc")
    assert overridden.spec == InputSpec(layout="nhwc", scale=2.0, mean=(0.5,))
    with pytest.raises(ConfigError, match="trained on images of shape"):
        load_model(path, input_shape=(1, 4, 4))


def test_state_dict_and_corrupt_torch_files(tmp_path) -> None:
    sd = tmp_path / "weights.pt"
    torch.save(linear_net().state_dict(), sd)
    with pytest.raises(ModelError, match="state_dict"):
        load_model(sd, input_shape=(1, 2, 2))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a torch file")
    for trust in (False, True):
        with pytest.raises(ModelError, match="bad.pt"):
            load_model(bad, input_shape=(1, 2, 2), trust_pickle=trust)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(sd.read_bytes()[:100])
    with pytest.raises(ModelError, match="truncated.pt"):
        load_model(truncated, input_shape=(1, 2, 2))


# -- pickles ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pkl", ".pickle", ".joblib"])
def test_pickles_are_refused_without_trust(tmp_path, suffix: str) -> None:
    est = fitted_logreg()
    path = tmp_path / f"model{suffix}"
    if suffix == ".joblib":
        joblib.dump(est, path)
    else:
        path.write_bytes(pickle.dumps(est))
    with pytest.raises(UnsafeLoadError, match="runs code"):
        load_model(path, input_shape=(1, 2, 2))
    clf = load_model(path, input_shape=(1, 2, 2), trust_pickle=True)
    assert isinstance(clf, SklearnClassifier)
    expected = est.predict_proba(X4.reshape(5, -1).numpy())
    np.testing.assert_allclose(clf.predict(X4).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_corrupt_pickle_with_trust_is_a_model_error(tmp_path) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelError, match="bad.pkl"):
        load_model(path, trust_pickle=True)


# -- factories ----------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_file_factory_imports_neighbours_and_builds_the_model(tmp_path) -> None:
    _write(
        tmp_path / "layers_helper.py",
        """
        from torch import nn

        def head():
            return nn.Linear(4, 3)
        """,
    )
    factory = _write(
        tmp_path / "my_model.py",
        """
        from dataclasses import dataclass

        import torch
        from torch import nn

        from layers_helper import head


        @dataclass
        class Settings:
            seed: int = 0


        def make_model():
            torch.manual_seed(Settings().seed)
            return nn.Sequential(nn.Flatten(), head())
        """,
    )
    clf = load_model(f"{factory}:make_model", input_shape=(1, 2, 2))
    assert isinstance(clf, TorchClassifier)
    assert clf.predict(X4).shape == (5, 3)
    assert str(tmp_path) not in sys.path


def test_factory_errors(tmp_path) -> None:
    path = _write(
        tmp_path / "broken.py",
        """
        def make_model():
            raise RuntimeError("no weights here")

        not_callable = 3
        """,
    )
    with pytest.raises(ModelError, match="RuntimeError: no weights here"):
        load_model(f"{path}:make_model", input_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="no function 'missing'"):
        load_model(f"{path}:missing", input_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="no function 'not_callable'"):
        load_model(f"{path}:not_callable", input_shape=(1, 2, 2))
    with pytest.raises(ConfigError, match="name the function"):
        load_model(path, input_shape=(1, 2, 2))
    with pytest.raises(ModelError, match="no such model file"):
        load_model(f"{tmp_path / 'absent.py'}:make_model")


# -- paths, endpoints ---------------------------------------------------------------


def test_missing_unsupported_and_folder_paths(tmp_path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="no such model file"):
        load_model(str(tmp_path / "missing.onnx"))
    other = tmp_path / "model.bin"
    other.write_bytes(b"")
    with pytest.raises(ConfigError, match="unsupported model file"):
        load_model(other)
    with pytest.raises(ModelError, match="folder"):
        load_model(tmp_path)


def test_http_urls_go_to_the_http_adapter(monkeypatch) -> None:
    calls: list[tuple[str, dict]] = []
    fake = types.ModuleType("pixelguard.models.http")

    def load_http_model(url: str, **kwargs: object) -> CallableClassifier:
        calls.append((url, kwargs))
        return CallableClassifier(lambda a: a.reshape(len(a), -1)[:, :2], (1, 2, 2))

    fake.load_http_model = load_http_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pixelguard.models.http", fake)
    load_model("https://example.test/score", http_config="endpoint.yaml", mean="0.5", scale=255)
    url, kwargs = calls[0]
    assert url == "https://example.test/score"
    assert kwargs == {
        "config": "endpoint.yaml",
        "input_shape": None,
        "layout": None,
        "scale": 255,
        "mean": (0.5,),
        "std": None,
        "output": None,
    }


def test_http_without_the_adapter_and_http_config_elsewhere(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pixelguard.models.http", None)
    with pytest.raises(ConfigError, match="http adapter"):
        load_model("http://localhost:9/score")
    with pytest.raises(ConfigError, match="http_config"):
        load_model(linear_net(), input_shape=(1, 2, 2), http_config="endpoint.yaml")


def test_a_module_without_input_size_takes_the_datas_and_is_probed():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert load_model(net, data_shape=(1, 8, 8)).input_shape == (1, 8, 8)
    assert load_model(net, input_shape=(1, 8, 8), data_shape=(3, 32, 32)).input_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match=r"\(3, 32, 32\).*--input-shape"):
        load_model(net, data_shape=(3, 32, 32))
    with pytest.raises(ConfigError, match=r"input_shape=\(C, H, W\)"):
        load_model(net)


# -- batch size, memory, threads and device -----------------------------------------


def test_files_calibrate_under_auto_and_keep_their_results(tmp_path) -> None:
    checkpoint = tmp_path / "model.pt"
    _checkpoint(checkpoint)
    scripted = tmp_path / "scripted.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(linear_net()), str(scripted))
    for path, shape in ((checkpoint, None), (scripted, (1, 2, 2))):
        clf = load_model(path, input_shape=shape, batch_size="auto")
        assert isinstance(clf, TorchClassifier)
        assert clf.batch_size == clf.calibration.batch_size  # type: ignore[attr-defined]
        assert clf.calibration.bytes_per_image >= 16  # type: ignore[attr-defined]
        fixed = load_model(path, input_shape=shape, batch_size=3)
        torch.testing.assert_close(clf.predict(X4), fixed.predict(X4))


def test_auto_leaves_ready_classifiers_and_scikit_learn_batches_alone() -> None:
    ready = TorchClassifier(linear_net(), (1, 2, 2), batch_size=5)
    assert load_model(ready, batch_size="auto", max_memory="1K") is ready
    assert ready.batch_size == 5 and not hasattr(ready, "calibration")
    assert ready.max_memory == 1 << 30
    sk = load_model(fitted_logreg(), input_shape=(1, 2, 2), batch_size="auto", max_memory="1G")
    assert isinstance(sk, SklearnClassifier) and sk.batch_size == 4096
    assert sk.max_memory == 1 << 30 and not hasattr(sk, "calibration")


def test_endpoints_get_the_memory_budget(monkeypatch) -> None:
    fake = types.ModuleType("pixelguard.models.http")

    def load_http_model(url: str, **kwargs: object) -> CallableClassifier:
        return CallableClassifier(lambda a: a.reshape(len(a), -1)[:, :2], (1, 2, 2))

    fake.load_http_model = load_http_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pixelguard.models.http", fake)
    model = load_model("https://example.test/score", http_config="e.yaml", max_memory="2G")
    assert model.max_memory == 2 << 30  # type: ignore[attr-defined]
    assert model.batch_size == 128  # type: ignore[attr-defined]  # never measured


def test_http_classifiers_carry_a_memory_budget() -> None:
    from pixelguard.models.http import HttpClassifier
    from pixelguard.models.http_config import EndpointConfig

    cfg = EndpointConfig(url="http://127.0.0.1:9/score", input_shape=(1, 8, 8), num_classes=10)
    assert HttpClassifier(cfg).max_memory == 1 << 30


def test_device_option_for_modules() -> None:
    net = linear_net()
    assert load_model(net, input_shape=(1, 2, 2), device="cpu").device == torch.device("cpu")  # type: ignore[attr-defined]
    if not torch.cuda.is_available():
        assert load_model(net, input_shape=(1, 2, 2), device="auto").device.type == "cpu"  # type: ignore[attr-defined]
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            load_model(net, input_shape=(1, 2, 2), device="cuda:0")
