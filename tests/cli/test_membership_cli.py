"""``pixelguard membership``: reports, one-line errors with nothing written, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pixelguard.data import load_data
from pixelguard.workflows.training import train_on_dataset


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An overfitted digits model on disk, its members, non-members, shadow data, and
    non-members of another shape."""
    folder = tmp_path_factory.mktemp("membership")
    train = load_data("digits", split="train").sample(60, 0)
    test = load_data("digits", split="test")
    train_on_dataset(train, epochs=150, seed=0).save(folder / "model.pt")
    paths = {"model": folder / "model.pt"}
    arrays = {
        "members": (train.x, train.y),
        "non_members": (test.x[:200], test.y[:200]),
        "shadow": (test.x[200:320], test.y[200:320]),
        "bad": (test.x[:10, :, :7, :7], test.y[:10]),
    }
    for name, (x, y) in arrays.items():
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], x=x.numpy(), y=y.numpy())
    return paths


def _base(files: dict[str, Path], out: Path, non_members: str = "non_members") -> list[object]:
    return [
        "membership",
        "--model",
        files["model"],
        "--members",
        files["members"],
        "--non-members",
        files[non_members],
        "--out",
        out,
    ]


def test_loss_threshold_writes_json_and_html(cli, files, tmp_path):
    out = tmp_path / "run"
    result = cli(*_base(files, out), "--json")
    printed = json.loads(result.stdout)
    report = json.loads((out / "membership.json").read_text())
    assert printed["auc"] == report["auc"] > 0.6
    assert report["schema_version"] == "membership-1.0"
    assert report["attack"] == {
        "name": "loss-threshold",
        "params": {"signal": "loss", "calibration": "none"},
    }
    assert (report["n_members"], report["n_non_members"]) == (60, 200)
    low, high = report["operating_points"][1]["tpr_ci"]
    assert report["operating_points"][1]["target_fpr"] == 0.01 and low <= high
    assert report["operating_points"][0]["measurable"] is False
    assert report["members"]["n_images"] == 60 and report["model"]["spec"] == str(files["model"])
    html = (out / "report.html").read_text()
    assert "<svg" in html and report["verdict"]["text"].split(":")[0] in html
    assert "not measurable" in html
    scores = np.load(out / "scores.npz")
    assert scores["member_scores"].shape == (60,)
    assert "too few to measure a 0.1% false-positive rate" in result.stderr


def test_margin_signal_and_limit(cli, files, tmp_path):
    out = tmp_path / "run"
    cli(*_base(files, out), "--signal", "margin", "--limit", "50", "--quiet")
    report = json.loads((out / "membership.json").read_text())
    assert report["attack"]["params"] == {"signal": "margin", "calibration": "none"}
    assert (report["n_members"], report["n_non_members"]) == (50, 50)
    assert report["sample"] == {"limit": 50, "seed": 0}


def test_class_calibration_with_reference_data(cli, files, tmp_path):
    out = tmp_path / "run"
    args = [*_base(files, out), "--signal", "margin", "--calibration", "class"]
    result = cli(*args, code=2)
    assert "--reference-data" in result.stderr and not out.exists()
    cli(*args, "--reference-data", files["shadow"], "--quiet")
    report = json.loads((out / "membership.json").read_text())
    assert report["attack"]["params"]["calibration"] == "class"
    assert report["details"] == {"n_reference": 120}
    assert report["reference"]["n_images"] == 120
    result = cli(*_base(files, tmp_path / "two"), "--reference-data", files["shadow"], code=2)
    assert "--calibration class" in result.stderr


def test_members_and_non_members_of_different_shapes_fail_in_one_line(cli, files, tmp_path):
    out = tmp_path / "run"
    result = cli(*_base(files, out, "bad"), code=2)
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: members are images of shape 1x8x8 but non-members of shape 1x7x7"]
    assert not out.exists()


def test_shadow_attack_without_shadow_data_is_refused(cli, files, tmp_path):
    out = tmp_path / "run"
    result = cli(*_base(files, out), "--attack", "shadow", code=2)
    assert "--shadow-data" in result.stderr
    assert not out.exists()


def test_shadow_run_checkpoints_and_resumes(cli, files, tmp_path):
    out = tmp_path / "run"
    args = [
        *_base(files, out),
        "--attack",
        "shadow",
        "--shadow-data",
        files["shadow"],
        "--shadow-models",
        "2",
        "--shadow-arch",
        "mlp",
        "--shadow-epochs",
        "20",
        "--quiet",
    ]
    cli(*args)
    first = json.loads((out / "membership.json").read_text())
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == [
        "shadow-000.npz",
        "shadow-001.npz",
        "state.json",
    ]
    assert first["details"]["shadows_restored"] == 0
    cli(*args, "--resume")
    again = json.loads((out / "membership.json").read_text())
    assert again["details"]["shadows_restored"] == 2
    assert again["auc"] == first["auc"]
    result = cli(*args[:-1], "--shadow-epochs", "21", "--resume", code=2)
    assert "another shadow run" in result.stderr
