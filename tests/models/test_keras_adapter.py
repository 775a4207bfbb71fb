"""KerasClassifier and SavedModelClassifier: Keras files score like Keras, with gradients.

A tiny softmax CNN is trained once (torch backend, seeded) on the built-in digits and
saved as ``.keras`` and ``.h5``. Keras itself is the reference: predictions and the
success of every attack are checked with a fresh Keras forward pass.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - depends on the environment
    pytest.skip("the Keras tests need the torch backend", allow_module_level=True)

from typer.testing import CliRunner  # noqa: E402

import pixelguard  # noqa: E402
from pixelguard.cli.app import app  # noqa: E402
from pixelguard.errors import (  # noqa: E402
    CapabilityError,
    ConfigError,
    MissingDependencyError,
    ModelError,
    UnsafeLoadError,
)
from pixelguard.models import OutputKind, load_model  # noqa: E402
from pixelguard.models import keras as keras_adapter  # noqa: E402
from pixelguard.models.keras import KerasClassifier  # noqa: E402

TARGET = 5

# Keras's torch backend converts tensors with np.array(x), which numpy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def nhwc(x: torch.Tensor) -> np.ndarray:
    return x.detach().permute(0, 2, 3, 1).numpy()


def keras_predict(model, x: torch.Tensor) -> np.ndarray:
    return np.asarray(model.predict(nhwc(x), verbose=0))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """A softmax CNN on NHWC digits (92% held out, under 2 s), saved as .keras and .h5."""
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(nhwc(x[:1400]), y[:1400].numpy(), epochs=12, batch_size=100, verbose=0)
    folder = tmp_path_factory.mktemp("keras")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(folder / "model.keras")
        model.save(folder / "model.h5")
    held_out = x[1400:], y[1400:]
    return model, folder, held_out


@pytest.fixture(scope="module")
def clf(trained) -> KerasClassifier:
    return load_model(trained[1] / "model.keras")


@pytest.fixture(scope="module")
def correct_not_target(trained, clf):
    """Held-out digits the model gets right, other than the target class."""
    x, y = trained[2]
    keep = (clf.predict(x).argmax(1) == y) & (y != TARGET)
    return x[keep][:60], y[keep][:60]


@pytest.mark.parametrize("name", ["model.keras", "model.h5"])
def test_loads_and_scores_like_keras(trained, name, caplog) -> None:
    model, folder, (x, _) = trained
    with caplog.at_level(logging.INFO, logger="pixelguard.models.keras"):
        loaded = load_model(folder / name, batch_size=50)
    assert loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
    assert loaded.detected == {
        "layout": "nhwc (from the model's input shape (None, 8, 8, 1))",
        "output": "probabilities (last layer's softmax)",
    }
    assert "nhwc" in caplog.text and "softmax" in caplog.text
    caps = loaded.capabilities
    assert caps.output is OutputKind.PROBABILITIES and caps.gradients
    accuracy = (keras_predict(model, x).argmax(1) == trained[2][1].numpy()).mean()
    assert accuracy > 0.9
    np.testing.assert_allclose(loaded.predict(x).numpy(), keras_predict(model, x), atol=1e-5)


def test_logits_are_the_pre_softmax_values(trained, clf) -> None:
    model, _, (x, _) = trained
    dense = model.layers[-1]
    features = keras.Model(model.inputs[0], dense.input)(nhwc(x[:20]))
    expected = (features @ dense.kernel.value + dense.bias.value).detach()
    logits = clf.logits(x[:20])
    torch.testing.assert_close(logits.detach(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.softmax(logits.detach(), 1), clf.predict(x[:20]))


def test_input_gradient_matches_a_finite_difference() -> None:
    # a smooth (tanh) model: finite differences of ReLU networks jump at the kinks
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    clf = KerasClassifier(model, scale=2.0)
    x = torch.rand((4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 5, 9])

    def loss(images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(clf.logits(images), y, reduction="sum")

    point = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(point), point)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    h = 1e-2
    with torch.no_grad():
        numeric = (loss(x + h * direction) - loss(x - h * direction)) / (2 * h)
    analytic = (grad * direction).sum()
    assert abs(float(analytic)) > 0.1
    assert abs(float(numeric - analytic)) < 1e-3 * abs(float(analytic))


def test_pgd_lowers_accuracy_more_than_noise_of_the_same_size(clf, correct_not_target) -> None:
    x, y = correct_not_target
    eps = 0.15
    result = pixelguard.create_attack("pgd", eps=eps, steps=10, seed=0).run(clf, x, y)
    sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    noisy = (x + eps * sign).clamp(0, 1)
    noise_accuracy = float((clf.predict(noisy).argmax(1) == y).float().mean())
    pgd_accuracy = 1 - result.success_rate
    assert pgd_accuracy < 0.2 < noise_accuracy
    assert float(result.linf.max()) <= eps + 1e-6


def test_targeted_gradient_descent_reaches_the_target_for_keras(
    trained, clf, correct_not_target
) -> None:
    x, y = correct_not_target
    attack = pixelguard.create_attack("gradient-descent", eta=0.01, steps=100)
    result = attack.run(clf, x, y, target=TARGET)
    assert result.success_rate >= 0.8
    fooled = result.x_adv[result.success]
    assert (keras_predict(trained[0], fooled).argmax(1) == TARGET).all()


def test_user_options_override_what_was_detected(trained) -> None:
    path = trained[1] / "model.keras"
    given = load_model(path, output="logits", scale=2.0, mean="0.5", std="0.25")
    assert given.detected["output"] == "logits (as given)"
    assert given.capabilities.output is OutputKind.LOGITS
    assert (given.spec.scale, given.spec.mean, given.spec.std) == (2.0, (0.5,), (0.25,))
    x = trained[2][0][:5]
    np.testing.assert_allclose(
        given.predict(x).numpy(), keras_predict(trained[0], (x * 2 - 0.5) / 0.25), atol=1e-5
    )
    swapped = load_model(path, layout="nchw")  # (None, 8, 8, 1) read as NCHW: 8 channels
    assert swapped.detected["layout"] == "nchw (as given)" and swapped.input_shape == (8, 8, 1)
    with pytest.raises(ModelError, match=r"input_shape is \(1, 9, 9\)"):
        load_model(path, input_shape=(1, 9, 9))


def _dense(inputs: keras.KerasTensor, *, softmax_layer: bool = False):
    keras.utils.set_random_seed(0)
    flat = keras.layers.Flatten()(inputs)
    if softmax_layer:
        return keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(3)(flat)))
    return keras.Model(inputs, keras.layers.Dense(3)(flat))


def test_layouts_are_read_from_the_input_shape() -> None:
    x = torch.rand((6, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    first = _dense(keras.Input((1, 8, 8)))
    clf = KerasClassifier(first)
    assert clf.input_shape == (1, 8, 8) and clf.spec.layout == "nchw"
    assert clf.detected["output"] == "logits (from the scores of a probe batch)"
    np.testing.assert_allclose(clf.predict(x).numpy(), first.predict(x.numpy(), verbose=0))
    grey = _dense(keras.Input((8, 8)))
    clf = KerasClassifier(grey)
    assert clf.input_shape == (1, 8, 8) and "without a channel axis" in clf.detected["layout"]
    np.testing.assert_allclose(clf.predict(x).numpy(), grey.predict(x[:, 0].numpy(), verbose=0))
    flat = _dense(keras.Input((64,)))
    clf = KerasClassifier(flat)
    assert clf.input_shape == (1, 8, 8) and "flattened" in clf.detected["layout"]
    np.testing.assert_allclose(
        clf.predict(x).numpy(), flat.predict(x.reshape(6, 64).numpy(), verbose=0)
    )
    with pytest.raises(ConfigError, match="pass input_shape"):
        KerasClassifier(_dense(keras.Input((60,))))
    open_size = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(open_size)
    open_model = keras.Model(open_size, keras.layers.Dense(3)(pooled))
    with pytest.raises(ConfigError, match="leaves its image size open"):
        KerasClassifier(open_model)
    sized = KerasClassifier(open_model, input_shape=(3, 5, 5))
    assert sized.spec.layout == "nhwc" and sized.predict(torch.zeros(2, 3, 5, 5)).shape == (2, 3)
    pair = [keras.Input((4,)), keras.Input((4,))]
    two = keras.Model(pair, keras.layers.Dense(3)(keras.layers.Concatenate()(pair)))
    with pytest.raises(ModelError, match="2 inputs"):
        KerasClassifier(two)


def test_softmax_layer_and_subclassed_models_give_gradients() -> None:
    x = torch.rand((5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    clf = KerasClassifier(_dense(keras.Input((8, 8, 1)), softmax_layer=True))
    assert clf.detected["output"] == "probabilities (last layer's softmax)"
    torch.testing.assert_close(torch.softmax(clf.logits(x).detach(), 1), clf.predict(x))

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.head = keras.layers.Dense(3, activation="softmax")

        def call(self, images):
            return self.head(keras.ops.reshape(images, (-1, 64)))

    with pytest.raises(ConfigError, match="does not record its input size"):
        KerasClassifier(Subclassed())
    sub = KerasClassifier(Subclassed(), input_shape=(1, 8, 8))
    assert sub.spec.layout == "nhwc" and "log-probabilities" in sub.detected["output"]
    logits = sub.logits(x.requires_grad_(True))
    assert logits.requires_grad
    torch.testing.assert_close(logits.detach().exp(), sub.predict(x.detach()))


def test_code_in_the_file_needs_trust_pickle(tmp_path) -> None:
    inputs = keras.Input((8, 8, 1))
    scaled = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(scaled)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(tmp_path / "lambda.keras")
    with pytest.raises(UnsafeLoadError, match="--trust-pickle"):
        load_model(tmp_path / "lambda.keras")
    assert load_model(tmp_path / "lambda.keras", trust_pickle=True).num_classes == 3


def test_unreadable_keras_files_are_model_errors(tmp_path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file")
    with pytest.raises(ModelError, match="cannot load Keras model"):
        load_model(bad)
    (tmp_path / "bad.keras").write_text("not a zip archive")
    with pytest.raises(ModelError, match="not a Keras 3 .keras file"):
        load_model(tmp_path / "bad.keras")
    with pytest.raises(ModelError, match="no such model file"):
        keras_adapter.load_keras_file(tmp_path / "missing.keras")


def test_other_backend_gives_a_black_box_classifier(trained, monkeypatch, caplog) -> None:
    model, _, (x, y) = trained
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with caplog.at_level(logging.WARNING, logger="pixelguard.models.keras"):
        clf = KerasClassifier(model)
    assert "KERAS_BACKEND=torch" in caplog.text
    assert clf.capabilities.output is OutputKind.PROBABILITIES and not clf.capabilities.gradients
    np.testing.assert_allclose(clf.predict(x[:8]).numpy(), keras_predict(model, x[:8]), atol=1e-5)
    with pytest.raises(CapabilityError, match="gradients"):
        pixelguard.create_attack("pgd", eps=0.1).run(clf, x[:4], y[:4])
    with pytest.raises(ModelError, match="KERAS_BACKEND=torch"):
        clf.logits(x[:2])


def test_without_keras_the_error_names_the_extra(trained, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "keras", None)
    with pytest.raises(MissingDependencyError) as err:
        load_model(trained[1] / "model.keras")
    message = str(err.value)
    assert "pip install 'pixelguard[keras]'" in message and "pip install -e '.[keras]'" in message
    assert "\n" not in message


def test_a_backend_keras_cannot_import_is_a_config_error(monkeypatch) -> None:
    def fail(name: str):
        raise ModuleNotFoundError("No module named 'jax'", name="jax")

    monkeypatch.setattr(keras_adapter.importlib, "import_module", fail)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ConfigError, match="KERAS_BACKEND=jax"):
        keras_adapter.import_keras()


@pytest.mark.parametrize(
    ("env", "imported", "expected"),
    [(None, False, "torch"), ("jax", False, "jax"), (None, True, None)],
)
def test_keras_backend_is_set_to_torch_only_when_nobody_chose(
    monkeypatch, env, imported, expected
) -> None:
    if env is None:
        monkeypatch.delenv("KERAS_BACKEND", raising=False)
    else:
        monkeypatch.setenv("KERAS_BACKEND", env)
    if not imported:
        monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setattr(keras_adapter.importlib, "import_module", lambda name: keras)
    assert keras_adapter.import_keras() is keras
    assert os.environ.get("KERAS_BACKEND") == expected


def test_saved_model_without_tensorflow_names_the_extra(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'pixelguard\[tensorflow\]'"):
        load_model(folder)


_EXPORT = """
import sys
import keras
model = keras.saving.load_model(sys.argv[1], compile=False)
model.export(sys.argv[2], verbose=False)
"""


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"
)
def test_saved_model_scores_like_keras(trained, tmp_path) -> None:
    model, folder, (x, y) = trained
    exported = tmp_path / "exported"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run(
        [sys.executable, "-c", _EXPORT, str(folder / "model.keras"), str(exported)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    clf = load_model(exported)
    assert clf.input_shape == (1, 8, 8) and clf.detected["layout"].startswith("nhwc")
    assert clf.capabilities.output is OutputKind.PROBABILITIES and not clf.capabilities.gradients
    np.testing.assert_allclose(clf.predict(x).numpy(), keras_predict(model, x), atol=1e-5)
    result = pixelguard.create_attack("sparse-rs", pixels=3, budget=50).run(clf, x[:5], y[:5])
    assert result.n_images == 5


_TENSORFLOW_BACKEND = """
import sys
import numpy as np
import torch
import pixelguard
clf = pixelguard.load_model(sys.argv[1])
x = np.load(sys.argv[2])
import keras
print(keras.backend.backend(), clf.capabilities.gradients)
np.save(sys.argv[3], clf.predict(torch.from_numpy(x)).numpy())
"""


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"
)
def test_an_explicit_tensorflow_backend_is_respected(trained, tmp_path) -> None:
    model, folder, (x, _) = trained
    np.save(tmp_path / "x.npy", x[:10].numpy())
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    args = [str(folder / "model.keras"), str(tmp_path / "x.npy"), str(tmp_path / "p.npy")]
    result = subprocess.run(
        [sys.executable, "-c", _TENSORFLOW_BACKEND, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tensorflow", "False"]
    assert "white-box attacks need KERAS_BACKEND=torch" in result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), keras_predict(model, x[:10]), atol=1e-5)


def test_cli_tutorial_workflow_reaches_the_target(trained, tmp_path) -> None:
    model, folder, (x, y) = trained
    images = (nhwc(x[:40]) * 255).round().astype(np.uint8)  # as tutorials save them
    np.save(tmp_path / "attack_dataset.npy", images)
    np.save(tmp_path / "labels.npy", y[:40].numpy())
    out = tmp_path / "run"
    args = [
        "attack",
        "--model",
        folder / "model.keras",
        "--data",
        tmp_path / "attack_dataset.npy",
        "--labels",
        tmp_path / "labels.npy",
        "--attack",
        "gradient-descent",
        "--target",
        str(TARGET),
        "--param",
        "eta=0.01",
        "--param",
        "steps=100",
        "--out",
        out,
        "--quiet",
    ]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "nhwc (from the model's input shape (None, 8, 8, 1))" in result.stdout
    report = json.loads((out / "results.json").read_text())
    rows = report["images"]
    successes = [row for row in rows if row["success"]]
    assert len(successes) >= 0.8 * len(rows) > 0
    assert all(row["pred_after"] == TARGET for row in successes)
    with np.load(out / "adversarial.npz") as arrays:
        fooled = torch.from_numpy(arrays["x_adv"][arrays["success"]])
    assert len(fooled) == len(successes)
    assert (keras_predict(model, fooled).argmax(1) == TARGET).all()


def test_importing_pixelguard_does_not_import_keras_or_tensorflow() -> None:
    code = (
        "import sys, pixelguard.models, pixelguard.cli.app; "
        "print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.split() == ["False", "False"]


def test_a_keras_model_object_and_a_factory_returning_one_load_as_keras(trained, tmp_path) -> None:
    model, folder, (x, _) = trained
    expected = keras_predict(model, x[:16])
    given = load_model(model)
    assert isinstance(given, KerasClassifier) and given.input_shape == (1, 8, 8)
    np.testing.assert_allclose(given.predict(x[:16]).numpy(), expected, atol=1e-5)
    factory = tmp_path / "build.py"
    factory.write_text(
        "import keras\n\n\ndef make_model():\n"
        f"    return keras.saving.load_model({str(folder / 'model.keras')!r})\n"
    )
    built = load_model(f"{factory}:make_model")
    assert isinstance(built, KerasClassifier)
    np.testing.assert_allclose(built.predict(x[:16]).numpy(), expected, atol=1e-5)


def test_a_model_with_an_open_image_size_takes_the_datas(tmp_path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )
    path = tmp_path / "open.keras"
    model.save(path)
    assert load_model(path, data_shape=(1, 8, 8)).input_shape == (1, 8, 8)
    with pytest.raises(ConfigError, match=r"--input-shape C,H,W"):
        load_model(path)
