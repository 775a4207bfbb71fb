"""``pixelguard poison`` and training on what it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pixelguard.poisoning.backdoor import read_poison_info


def test_poison_then_train_reports_the_backdoor(cli, tmp_path):
    poisoned = tmp_path / "poisoned.npz"
    result = cli(
        "poison",
        "--data",
        "digits",
        "--trigger",
        "square:2@bottom-right",
        "--rate",
        "0.1",
        "--target",
        "7",
        "--out",
        poisoned,
    )
    assert "poisoned" in result.stdout and "(10.0%)" in result.stdout
    info = read_poison_info(poisoned)
    assert info is not None and info.target == 7
    with np.load(poisoned) as archive:
        assert archive["x"].shape[0] == info.mask.numel()
        assert set(np.unique(archive["y"][archive["poison_mask"]])) == {7}
    model = tmp_path / "model.pt"
    result = cli(
        "train",
        "--data",
        poisoned,
        "--test-data",
        "digits",
        "--epochs",
        "12",
        "--lr",
        "3e-3",
        "--out",
        model,
        "--quiet",
    )
    assert "attack success rate" in result.stdout
    checkpoint = torch.load(model, weights_only=True)
    backdoor = checkpoint["metrics"]["backdoor"]
    assert backdoor["attack_success_rate"] > 0.8
    assert backdoor["clean_accuracy"] > 0.8
    assert backdoor["trigger"] == "square:2@bottom-right"


def test_poison_json_and_all_to_all(cli, tmp_path):
    result = cli(
        "poison",
        "--data",
        "digits",
        "--trigger",
        "pixels:3,seed=4",
        "--rate",
        "0.05",
        "--mode",
        "all-to-all",
        "--out",
        tmp_path / "p.npz",
        "--json",
    )
    summary = json.loads(result.stdout)
    assert summary["mode"] == "all-to-all" and summary["target"] is None
    assert summary["n_poisoned"] == round(0.05 * summary["n_images"])


def test_clean_label_trains_its_own_clean_model(cli, tmp_path):
    result = cli(
        "poison",
        "--data",
        "digits",
        "--trigger",
        "square:2",
        "--rate",
        "0.02",
        "--target",
        "1",
        "--mode",
        "clean-label",
        "--eps",
        "16/255",
        "--steps",
        "5",
        "--out",
        tmp_path / "p.npz",
        "--json",
        "--quiet",
    )
    summary = json.loads(result.stdout)
    assert summary["clean_model"]["arch"] == "small-cnn"
    assert summary["eps"] == pytest.approx(16 / 255)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trigger", "blob:3", "--rate", "0.1", "--target", "1"], "does not parse"),
        (["--trigger", "square:9", "--rate", "0.1", "--target", "1"], "does not fit"),
        (["--trigger", "square:2", "--rate", "1.5", "--target", "1"], "between 0 and 1"),
        (["--trigger", "square:2", "--rate", "0.1", "--target", "12"], "target class"),
        (["--trigger", "square:2", "--rate", "0.1", "--target", "cat"], "--target must be"),
        (["--trigger", "square:2", "--rate", "0.1", "--target", "1", "--mode", "x"], "mode"),
    ],
)
def test_bad_poisoning_input_is_one_line_and_writes_nothing(cli, tmp_path, args, message):
    out = tmp_path / "p.npz"
    result = cli("poison", "--data", "digits", *args, "--out", out, code=2)
    assert message in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert not out.exists()


def test_out_must_be_an_npz(cli, tmp_path):
    args = ["--trigger", "square:2", "--rate", "0.1", "--target", "1"]
    result = cli("poison", "--data", "digits", *args, "--out", tmp_path / "p.txt", code=2)
    assert ".npz" in result.stderr


def test_detect_strip_against_a_trigger(cli, tmp_path, backdoored_digits):
    from pixelguard.workflows.training import TrainedModel

    model, trigger, target = backdoored_digits
    path = TrainedModel(model.module, "small-cnn", (1, 8, 8), None, 10, {}).save(
        tmp_path / "backdoored.pt"
    )
    out = tmp_path / "detect"
    result = cli(
        "detect",
        "--model",
        path,
        "--data",
        "digits",
        "--detector",
        "strip",
        "--detector-param",
        "samples=16",
        "--trigger",
        trigger,
        "--target",
        str(target),
        "--fpr",
        "0.05",
        "--pixels",
        "3",
        "--budget",
        "300",
        "--out",
        out,
    )
    assert f"against the trigger {trigger}" in result.stdout
    assert "adaptive detection" in result.stdout
    report = json.loads((out / "detection.json").read_text())
    assert report["attack"]["params"] == {"trigger": trigger, "target": 7}
    assert report["attack"]["adaptive"]["name"] == "sparse-bayes"
    assert report["auroc"] > 0.7
    point = report["operating_points"][0]
    assert point["detection_rate"] > 0.15
    assert point["adaptive"]["detection_rate"] <= point["detection_rate"]


def test_detect_target_needs_a_trigger(cli, tmp_path, model_factory):
    result = cli(
        "detect",
        "--model",
        model_factory,
        "--input-shape",
        "1,8,8",
        "--data",
        "digits",
        "--detector",
        "strip",
        "--target",
        "7",
        "--out",
        tmp_path / "d",
        code=2,
    )
    assert "--target goes with --trigger" in result.stderr
