"""A newcomer's first runs: defaults, options the data answers, and errors that say what to do."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from one_line_errors import assert_one_line_error
from sklearn.linear_model import LogisticRegression

from pixelguard.attacks.corner_search import corner_search_cost

FAST = ["--limit", "12", "--quiet"]


def _results(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_the_default_attack_is_sparse_bayes_with_the_exact_one_pixel_scan(
    cli, model_factory, tmp_path
):
    cli("attack", "--model", model_factory, "--data", "digits", "--out", tmp_path, *FAST)
    data = _results(tmp_path)
    assert data["attack"]["name"] == "sparse-bayes" and data["attack"]["params"]["pixels"] == 1
    # The exact scan of every position at both corners of a grey 8x8 image: 128 queries.
    cost = corner_search_cost((1, 8, 8))
    assert cost == 128
    assert data["images"] and all(row["queries"] <= cost for row in data["images"])
    assert all(row["pixels_changed"] <= 1 for row in data["images"] if row["success"])


def test_a_factory_model_takes_its_input_size_from_the_data(cli, model_factory, tmp_path):
    cli("attack", "--model", model_factory, "--data", "digits", "--out", tmp_path, *FAST)
    data = _results(tmp_path)
    assert data["model"]["input_shape"] == [1, 8, 8]
    assert data["data"]["limit"] == 12 and data["data"]["n_images"] == 12


def test_a_model_that_wants_another_size_says_which_option_fixes_it(cli, tmp_path):
    factory = tmp_path / "mnist_mlp.py"
    factory.write_text(
        "from torch import nn\n\n\ndef make_model():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
    )
    result = cli(
        "attack",
        "--model",
        f"{factory}:make_model",
        "--data",
        "digits",
        "--out",
        tmp_path / "r",
        *FAST,
        code=2,
    )
    assert_one_line_error(result, "(1, 8, 8)", "--input-shape")


def test_a_pickled_scikit_learn_model_needs_no_input_shape(cli, digits, tmp_path):
    x, y = digits
    estimator = LogisticRegression(max_iter=300).fit(x[:1000].flatten(1).numpy(), y[:1000].numpy())
    path = tmp_path / "logreg.pkl"
    with path.open("wb") as handle:
        pickle.dump(estimator, handle)
    cli(
        "attack",
        "--model",
        path,
        "--trust-pickle",
        "--data",
        "digits",
        "--pixels",
        "3",
        "--out",
        tmp_path / "run",
        *FAST,
    )
    data = _results(tmp_path / "run")
    assert data["model"]["input_shape"] == [1, 8, 8] and data["n_attacked"] >= 8


def test_step_and_iterations_are_the_gradient_attacks_settings(cli, model_factory, tmp_path):
    cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        "digits",
        "--attack",
        "gradient-descent",
        "--target",
        "5",
        "--step",
        "0.5",
        "--iterations",
        "40",
        "--out",
        tmp_path,
        *FAST,
    )
    data = _results(tmp_path)
    assert data["attack"]["params"]["eta"] == 0.5 and data["attack"]["params"]["steps"] == 40
    assert all(row["target"] == 5 for row in data["images"])
    cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        "digits",
        "--attack",
        "pgd",
        "--step",
        "1/255",
        "--eps",
        "8/255",
        "--out",
        tmp_path / "pgd",
        *FAST,
    )
    params = _results(tmp_path / "pgd")["attack"]["params"]
    assert params["eps"] == pytest.approx(8 / 255) and params["step_size"] == pytest.approx(1 / 255)
    for row in _results(tmp_path / "pgd")["images"]:
        assert row["linf"] <= 8 / 255 + 1e-6


def test_a_setting_the_attack_lacks_is_refused_by_name(cli, model_factory, tmp_path):
    result = cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        "digits",
        "--step",
        "0.1",
        "--out",
        tmp_path,
        code=2,
    )
    assert_one_line_error(result, "sparse-bayes has no step setting", "--step")
    result = cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        "digits",
        "--attack",
        "pgd",
        "--eps",
        "8/0",
        "--out",
        tmp_path,
        code=2,
    )
    assert_one_line_error(result, "--eps", "8/255")


def test_out_naming_an_existing_file_is_refused_before_any_work(cli, model_factory, tmp_path):
    existing = tmp_path / "model.pt"
    existing.write_bytes(b"weights")
    result = cli("attack", "--model", model_factory, "--data", "digits", "--out", existing, code=2)
    assert_one_line_error(result, "--out", "existing file")
    assert existing.read_bytes() == b"weights"


def test_images_without_labels_name_the_labels_option(cli, model_factory, digits, tmp_path):
    np.save(tmp_path / "attack_dataset.npy", digits[0][:10].numpy())
    result = cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        tmp_path / "attack_dataset.npy",
        "--out",
        tmp_path / "r",
        code=2,
    )
    assert_one_line_error(result, "--labels labels.npy")


def test_hardening_an_onnx_file_never_advises_unsafe_loading(cli, tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(b"\x08\x07not a checkpoint")
    result = cli(
        "harden",
        "--model",
        model,
        "--data",
        "digits",
        "--against",
        "pixels:1",
        "--out",
        tmp_path / "h.pt",
        code=2,
    )
    err = assert_one_line_error(result, "ONNX file", "pixelguard train")
    assert "weights_only" not in err


def test_class_names_put_the_data_in_the_models_class_order(cli, model_factory, digits, tmp_path):
    x, y = digits
    np.savez(tmp_path / "d.npz", x=x[1400:1440].numpy(), y=y[1400:1440].numpy())
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        tmp_path / "d.npz",
        "--class-names",
        names,
        "--out",
        tmp_path / "r",
        "--quiet",
    )
    assert _results(tmp_path / "r")["data"]["class_names"][3] == "digit 3"
    result = cli(
        "attack",
        "--model",
        model_factory,
        "--data",
        tmp_path / "d.npz",
        "--class-names",
        "a,a",
        "--out",
        tmp_path / "r2",
        code=2,
    )
    assert_one_line_error(result, "distinct")


@pytest.mark.parametrize(
    "command",
    ["attack", "evaluate", "detect", "harden", "certify", "train", "demo", "report", "compare"],
)
def test_help_shows_no_value_placeholder_for_flags(cli, command):
    text = cli(command, "--help", env={"COLUMNS": "160"}).stdout
    assert "--help" in text and "<int>" in text or command in ("report", "compare")
    assert "<bool>" not in text
    assert "<bool>" not in cli("--help", env={"COLUMNS": "160"}).stdout


def test_a_sample_records_where_its_images_are_in_the_data(cli, model_factory, tmp_path):
    from pixelguard.data import load_data

    cli("attack", "--model", model_factory, "--data", "digits", "--out", tmp_path, *FAST)
    data = _results(tmp_path)
    indices = data["data"]["indices"]
    assert len(indices) == 12 and indices == sorted(indices) and indices[-1] >= 100
    originals = np.load(tmp_path / "adversarial.npz")
    test = load_data("digits")
    for row, x in zip(data["images"], originals["x"], strict=True):
        np.testing.assert_array_equal(test.x[indices[row["index"]]].numpy(), x)


def test_model_options_report_only_what_was_given():
    from pixelguard.cli import options as opt

    model = opt.ModelOptions(input_shape="1,8,8", batch_size=64)
    assert model.given() == {"input_shape": "1,8,8", "batch_size": 64}
