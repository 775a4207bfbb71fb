"""The pixelguard command line: outputs, exit codes and one-line errors."""

from __future__ import annotations

import importlib
import json
import pickle
import sys

import numpy as np
import pytest
from one_line_errors import assert_one_line_error

from pixelguard.cli import app as app_module
from pixelguard.report import SCHEMA_VERSION

MODEL = ["--input-shape", "1,8,8"]
TINY = ["--iterations", "30", "--limit", "5", "--quiet"]
"""Options that keep a CLI run of the default attack (sparse-bayes) well under a second."""


def _attack(model, out, *extra):
    return ["attack", "--model", model, *MODEL, "--data", "digits", "--out", out, *TINY, *extra]


def test_attack_writes_the_reports_and_prints_a_table(cli, model_factory, tmp_path):
    result = cli(*_attack(model_factory, tmp_path / "run", "--pixels", "3"))
    for name in ("results.json", "adversarial.npz", "examples.png"):
        assert (tmp_path / "run" / name).is_file()
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["attack"]["name"] == "sparse-bayes"
    assert data["attack"]["params"]["pixels"] == 3 and data["attack"]["params"]["steps"] == 30
    assert 1 <= data["n_attacked"] <= 5 and len(data["images"]) == data["n_attacked"]
    assert data["model"]["spec"] == model_factory
    assert data["model"]["options"] == {"input_shape": "1,8,8"}
    assert data["data"]["source"] == "digits (test split)"
    for label in ("clean accuracy", "success rate", "median queries", "median pixels", "time"):
        assert label in result.stdout
    assert result.stderr == ""


def test_attack_json_prints_the_summary(cli, model_factory, tmp_path):
    result = cli(*_attack(model_factory, tmp_path, "--json"))
    summary = json.loads(result.stdout)
    assert 1 <= summary["n_attacked"] <= 5 and 0.0 <= summary["success_rate"] <= 1.0
    assert summary["attack"] == "sparse-bayes" and len(summary["files"]) == 3


def test_attack_passes_generic_params(cli, model_factory, tmp_path):
    cli(*_attack(model_factory, tmp_path, "--param", "p_init=0.5", "--param", "local=0.25"))
    params = json.loads((tmp_path / "results.json").read_text())["attack"]["params"]
    assert params["p_init"] == 0.5 and params["local"] == 0.25


def test_targeted_attack_by_class_name(cli, model_factory, tmp_path):
    cli(*_attack(model_factory, tmp_path, "--target", "3"))
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["attack"]["target"] == 3
    assert all(row["target"] == 3 and row["label"] != 3 for row in data["images"])


def test_trained_checkpoint_needs_no_model_options(cli, tmp_path):
    model = tmp_path / "model.pt"
    result = cli("train", "--data", "digits", "--out", model, "--epochs", "2", "--quiet")
    assert model.is_file() and "test accuracy" in result.stdout
    cli("attack", "--model", model, "--data", "digits", "--out", tmp_path / "run", *TINY)
    assert 1 <= json.loads((tmp_path / "run" / "results.json").read_text())["n_attacked"] <= 5


def test_train_without_a_test_split_reports_validation_accuracy(cli, tmp_path, digits):
    x, y = digits
    np.savez(tmp_path / "d.npz", x=x[:300].numpy(), y=y[:300].numpy())
    result = cli(
        "train",
        "--data",
        tmp_path / "d.npz",
        "--out",
        tmp_path / "m.pt",
        "--epochs",
        "1",
        "--arch",
        "mlp",
    )
    assert "validation accuracy" in result.stdout and "test accuracy" not in result.stdout


def test_attacks_lists_every_registered_attack(cli):
    from pixelguard.attacks import list_attacks

    lines = cli("attacks").stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == list_attacks()
    assert any(line.startswith("pixel-de ") and "differential evolution" in line for line in lines)


@pytest.fixture()
def bad_files(tmp_path, digits):
    x, y = digits
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage that is not an array")
    np.save(tmp_path / "labels.npy", y[:10].numpy())
    np.save(tmp_path / "x.npy", x[:10].numpy())
    np.save(tmp_path / "labels9.npy", y[:9].numpy())
    with (tmp_path / "model.pkl").open("wb") as handle:
        pickle.dump({"not": "a model"}, handle)
    return tmp_path


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        ({"--model": "{tmp}/missing.pt"}, ["no such model file", "missing.pt"]),
        ({"--data": "{tmp}/missing.npy"}, ["no such file", "missing.npy"]),
        ({"--data": "{tmp}/corrupt.npy", "--labels": "{tmp}/labels.npy"}, ["corrupt.npy"]),
        ({"--data": "{tmp}/x.npy", "--labels": "{tmp}/labels9.npy"}, ["9 labels", "10 images"]),
        ({"--model": "{tmp}/model.pkl"}, ["--trust-pickle"]),
        ({"--attack": "nope"}, ["unknown attack 'nope'", "sparse-rs"]),
        ({"--target": "12"}, ["target class 12 is out of range"]),
        ({"--target": "cat"}, ["--target must be a class number or name"]),
        ({"--input-shape": "1,8"}, ["--input-shape must be C,H,W"]),
        ({"--param": "steps"}, ["--param must be key=value"]),
        ({"--param": "mutation=3"}, ["sparse-bayes has no option mutation"]),
        ({"--pixels": "0"}, ["pixels must be at least 1"]),
        ({"--split": "validation"}, ["split must be one of"]),
        ({"--layout": "chw"}, ["layout must be"]),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_bad_input_gives_one_error_line_and_exit_code_2(
    cli, model_factory, bad_files, change, fragments
):
    options = {
        "--model": model_factory,
        "--input-shape": "1,8,8",
        "--data": "digits",
        "--out": str(bad_files / "out"),
    }
    options.update({k: v.format(tmp=bad_files) for k, v in change.items()})
    args = ["attack", *[item for pair in options.items() for item in pair], *TINY]
    result = cli(*args, code=2)
    assert_one_line_error(result, *fragments)


def test_an_option_the_attack_lacks_is_refused(cli, model_factory, tmp_path):
    result = cli(*_attack(model_factory, tmp_path, "--attack", "corner-search"), code=2)
    assert_one_line_error(result, "corner-search has no iterations setting", "--iterations")


def test_debug_shows_the_traceback(cli, tmp_path):
    result = cli(
        "--debug",
        "attack",
        "--model",
        tmp_path / "missing.pt",
        "--data",
        "digits",
        "--out",
        tmp_path,
        code=1,
    )
    assert type(result.exception).__name__ == "ModelError"


def test_interrupt_exits_130_and_names_the_checkpoint(cli, model_factory, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # The command imports attack_dataset from its module when it runs (keeping --help fast).
    attack_run = importlib.import_module("pixelguard.evaluate.attack_run")
    monkeypatch.setattr(attack_run, "attack_dataset", interrupted)
    result = cli(*_attack(model_factory, tmp_path), code=130)
    assert "--resume" in result.stderr and str(tmp_path / "checkpoint") in result.stderr


def test_resume_with_other_settings_is_refused(cli, model_factory, tmp_path):
    first = cli(*_attack(model_factory, tmp_path, "--json"))
    again = cli(*_attack(model_factory, tmp_path, "--json", "--resume"))
    assert json.loads(again.stdout)["n_success"] == json.loads(first.stdout)["n_success"]
    result = cli(*_attack(model_factory, tmp_path, "--pixels", "2", "--resume"), code=2)
    assert_one_line_error(result, "belongs to a different run", "pixels: 1 -> 2")


def test_demo_quick_writes_per_budget_reports_and_reuses_its_model(cli, tmp_path):
    env = {"PIXELGUARD_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "demo"
    args = ("demo", "--quick", "--limit", "4", "--pixels", "1,3", "--out", out, "--quiet")
    first = cli(*args, env=env)
    assert "trained, cached in" in first.stdout and "clean accuracy" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["k1", "k3"]
    assert [r["params"]["pixels"] for r in summary["runs"]] == [1, 3]
    for k in ("k1", "k3"):
        assert (out / k / "results.json").is_file() and (out / k / "examples.png").is_file()
    second = cli(*args, env=env)
    assert "reused" in second.stdout

    cached = next((tmp_path / "cache" / "models").glob("*.pt"))
    cached.write_bytes(b"corrupt")
    third = cli(*args, env=env)
    assert "trained, cached in" in third.stdout and "warning:" in third.stderr


def test_main_turns_user_errors_into_exit_code_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "pixelguard",
            "attack",
            "--model",
            str(tmp_path / "no.pt"),
            "--data",
            "digits",
            "--out",
            str(tmp_path),
        ],
    )
    with pytest.raises(SystemExit) as info:
        app_module.main()
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("error: no such model file")


def test_version(cli):
    from pixelguard import __version__

    assert cli("--version").stdout.strip() == f"pixelguard {__version__}"


def test_commands_leave_the_logging_configuration_as_they_found_it(cli):
    import logging

    logger = logging.getLogger("pixelguard")
    before = (list(logger.handlers), logger.level, logger.propagate)
    cli("--verbose", "attacks")
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_progress_bars_only_on_a_terminal_and_follow_images_finished(monkeypatch):
    import io

    from tqdm import tqdm

    from pixelguard.cli.bars import images_progress, progress_bar

    with progress_bar("x", quiet=False) as bar:  # pytest's stderr is not a terminal
        assert bar is None and images_progress(bar) is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    with progress_bar("x", quiet=True) as bar:
        assert bar is None
    with tqdm(file=io.StringIO()) as bar:
        update = images_progress(bar)
        update(3, 10)
        update(7, 10)
        assert (bar.n, bar.total) == (7, 10)


def test_pixels_auto_runs_the_fewest_pixels_search(cli, model_factory, tmp_path):
    args = ["attack", "--model", model_factory, *MODEL, "--data", "digits", "--out", tmp_path]
    cli(
        *args,
        "--pixels",
        "auto",
        "--budget",
        "300",
        "--limit",
        "4",
        "--quiet",
        "--param",
        "max_pixels=10",
        "--param",
        "stage_steps=20",
    )
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["attack"]["name"] == "min-pixels" and data["attack"]["params"]["budget"] == 300
    fooled = [row["pixels_changed"] for row in data["images"] if row["success"]]
    assert sum(data["pixels_changed_histogram"].values()) == len(fooled)
    assert all(1 <= k <= 10 for k in fooled)
    assert max(row["queries"] for row in data["images"]) <= 300


def test_pixels_must_be_a_number_or_auto_and_auto_excludes_other_attacks(
    cli, model_factory, tmp_path
):
    assert_one_line_error(
        cli(*_attack(model_factory, tmp_path, "--pixels", "many"), code=2), "'auto'"
    )
    args = ["attack", "--model", model_factory, *MODEL, "--data", "digits", "--out", tmp_path]
    assert_one_line_error(
        cli(*args, "--attack", "pixel-de", "--pixels", "auto", code=2), "min-pixels"
    )


def test_short_attack_aliases(cli, model_factory, tmp_path):
    cli(*_attack(model_factory, tmp_path, "--attack", "de", "--pixels", "2"))
    assert json.loads((tmp_path / "results.json").read_text())["attack"]["name"] == "pixel-de"


def test_attacks_name_shows_settings_with_their_constraints(cli):
    result = cli("attacks", "sparse-rs")
    assert "steps" in result.stdout and "(must be at least 1)" in result.stdout
    assert "budget" in result.stdout and "when set" in result.stdout
    assert "unknown attack" in cli("attacks", "nope", code=2).stderr
