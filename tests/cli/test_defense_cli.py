"""``pixelguard harden``, ``detect`` and ``certify``, and ``attack --defense``, end to end."""

from __future__ import annotations

import json

import pytest
import torch

from pixelguard.models.base import InputSpec
from pixelguard.models.loader import load_model
from pixelguard.models.zoo import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, digits_model) -> str:
    """The session's digits CNN as a pixelguard checkpoint."""
    path = tmp_path_factory.mktemp("checkpoint") / "digits.pt"
    save_checkpoint(
        path,
        digits_model.module,
        arch="small-cnn",
        arch_params={"in_channels": 1, "num_classes": 10, "image_size": [8, 8]},
        input_shape=(1, 8, 8),
        class_names=None,
        spec=InputSpec(),
        metrics={},
    )
    return str(path)


# --- harden --------------------------------------------------------------------------


def test_harden_writes_a_loadable_checkpoint_and_both_evaluations(cli, checkpoint, tmp_path):
    out, reports = tmp_path / "hardened.pt", tmp_path / "reports"
    result = cli(
        "harden", "--model", checkpoint, "--data", "digits", "--against", "pixels:1",
        "--out", out, "--epochs", "1", "--attack-steps", "2", "--limit", "10", "--budget", "20",
        "--report-dir", reports, "--quiet",
    )  # fmt: skip
    hardened = load_model(str(out))
    assert hardened.predict(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    _, meta = load_checkpoint(out)
    assert meta["metrics"]["hardening"]["against"] == "pixels:1"
    summary = json.loads((reports / "hardening.json").read_text())
    assert summary["against"] == "pixels:1" and summary["budget"] == "pixels=1"
    for name in ("before", "after"):
        assert 0.0 <= summary[name]["robust_accuracy"] <= summary[name]["clean_accuracy"] <= 1.0
        assert json.loads((reports / name / "report.json").read_text())["n_images"] == 10
    assert summary["training"]["history"][0]["epoch"] == 1
    assert not out.with_suffix(".harden-state.pt").exists()
    for fragment in (
        "hardened small-cnn against pixels:1",
        "before",
        "after",
        "robust at pixels=1",
    ):
        assert fragment in result.stdout


@pytest.mark.parametrize("against", ["pixels", "pixels:0", "l1:3", "linf:5"])
def test_a_bad_against_spec_is_one_error_line(cli, checkpoint, tmp_path, against):
    result = cli(
        "harden", "--model", checkpoint, "--data", "digits", "--against", against,
        "--out", tmp_path / "m.pt", code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "m.pt").exists()


def test_harden_needs_a_pixelguard_checkpoint(cli, model_factory, tmp_path):
    result = cli(
        "harden", "--model", model_factory, "--data", "digits", "--against", "pixels:1",
        "--out", tmp_path / "m.pt", code=2,
    )  # fmt: skip
    assert "pixelguard checkpoint" in result.stderr and result.stderr.count("\n") == 1


# --- detect --------------------------------------------------------------------------


def test_detect_reports_plain_and_adaptive_detection(cli, checkpoint, tmp_path):
    out = tmp_path / "detect"
    result = cli(
        "detect", "--model", checkpoint, "--data", "digits", "--detector", "isolated-pixels",
        "--pixels", "3", "--param", "steps=100", "--limit", "40", "--quiet", "--out", out,
    )  # fmt: skip
    report = json.loads((out / "detection.json").read_text())
    assert report["schema_version"] == "detection-1.0"
    assert report["detector"]["detector"] == "isolated-pixel"
    assert report["split"]["n_fit"] == 180 and report["split"]["n_test"] == 40
    assert report["n_adversarial"] > 0 and 0.0 <= report["auroc"] <= 1.0
    assert [p["target_fpr"] for p in report["operating_points"]] == [0.01, 0.05]
    for point in report["operating_points"]:
        for key in ("precision", "recall", "f1", "fpr", "detection_rate"):
            assert 0.0 <= point[key] <= 1.0
        adaptive = point["adaptive"]
        assert adaptive["n_attacked"] == report["n_attacked"]
        assert adaptive["detection_rate"] is None or 0.0 <= adaptive["detection_rate"] <= 1.0
    for fragment in ("AUROC", "precision", "adaptive detection", "detection.json"):
        assert fragment in result.stdout


def test_detect_without_adaptive_attacker(cli, checkpoint, tmp_path):
    out = tmp_path / "detect"
    cli(
        "detect", "--model", checkpoint, "--data", "digits", "--detector", "feature-squeezing",
        "--pixels", "2", "--param", "steps=50", "--limit", "20", "--fpr", "0.05",
        "--no-adaptive", "--quiet", "--out", out,
    )  # fmt: skip
    (point,) = json.loads((out / "detection.json").read_text())["operating_points"]
    assert point["adaptive"] is None and point["target_fpr"] == 0.05


def test_detect_takes_detector_settings(cli, checkpoint, tmp_path):
    out = tmp_path / "detect"
    cli(
        "detect", "--model", checkpoint, "--data", "digits", "--detector", "feature-squeezing",
        "--detector-param", "squeezers=median2,bits3", "--pixels", "2", "--param", "steps=50",
        "--limit", "20", "--fpr", "0.05", "--no-adaptive", "--quiet", "--out", out,
    )  # fmt: skip
    detector = json.loads((out / "detection.json").read_text())["detector"]
    assert detector["squeezers"] == ["median2", "bits3"]


@pytest.mark.parametrize(
    ("setting", "message"),
    [("top", "--detector-param must be key=value"), ("depth=2", "invalid detector parameters")],
)
def test_a_bad_detector_setting_is_one_error_line(cli, checkpoint, tmp_path, setting, message):
    result = cli(
        "detect", "--model", checkpoint, "--data", "digits", "--detector", "isolated-pixel",
        "--detector-param", setting, "--out", tmp_path / "d", code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error:") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_detect_with_a_gradient_attack_and_adaptive_is_one_error_line(cli, checkpoint, tmp_path):
    result = cli(
        "detect", "--model", checkpoint, "--data", "digits", "--detector", "isolated-pixels",
        "--attack", "sparse-pgd", "--out", tmp_path / "d", code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error: sparse-pgd needs gradients")


# --- certify -------------------------------------------------------------------------


def test_certify_trains_a_base_then_certifies_with_it(cli, tmp_path):
    base, first, second = tmp_path / "base.pt", tmp_path / "cert", tmp_path / "cert2"
    result = cli(
        "certify", "--train-base", base, "--keep", "20", "--epochs", "2", "--data", "digits",
        "--samples", "100", "--limit", "20", "--quiet", "--out", first,
    )  # fmt: skip
    report = json.loads((first / "certify.json").read_text())
    assert report["schema_version"] == "certification-1.0" and report["n_images"] == 20
    assert report["certifier"]["keep"] == 20 and report["pixels"] == 64
    radii = [image["radius"] for image in report["images"] if image["radius"] is not None]
    assert radii and all(r >= 0 for r in radii)
    assert report["median_radius"] is not None and report["median_radius"] >= 0
    curve = [point["certified_accuracy"] for point in report["certified_accuracy"]]
    assert curve[0] <= report["clean_accuracy"] and curve == sorted(curve, reverse=True)
    assert "median radius" in result.stdout
    cli("certify", "--model", base, "--data", "digits", "--samples", "100", "--limit", "20",
        "--quiet", "--out", second)  # fmt: skip
    assert json.loads((second / "certify.json").read_text())["images"] == report["images"]
    mismatch = cli("certify", "--model", base, "--keep", "10", "--data", "digits",
                   "--out", second, code=2)  # fmt: skip
    assert "keep=20" in mismatch.stderr


def test_certify_needs_exactly_one_base(cli, checkpoint, tmp_path):
    assert "either" in cli("certify", "--data", "digits", "--out", tmp_path, code=2).stderr
    result = cli("certify", "--model", checkpoint, "--data", "digits", "--out", tmp_path, code=2)
    assert "not a randomized-ablation base" in result.stderr


# --- attack --defense ----------------------------------------------------------------


def test_attack_hits_the_defended_model_and_records_the_defense(cli, checkpoint, tmp_path):
    out = tmp_path / "attack"
    cli(
        "attack", "--model", checkpoint, "--data", "digits", "--attack", "sparse-rs",
        "--pixels", "1", "--budget", "30", "--limit", "5", "--defense", "median:3",
        "--quiet", "--out", out,
    )  # fmt: skip
    defense = json.loads((out / "results.json").read_text())["model"]["defense"]
    assert defense == {
        "name": "median",
        "params": {"size": 3},
        "adaptive_attacks": ["bpda", "black-box"],
    }
    result = cli(
        "attack", "--model", checkpoint, "--data", "digits", "--defense", "median:size=3,foo=1",
        "--out", out, code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error: defense median has no setting 'foo'")


# --- detect: the --limit subset and the intervals ------------------------------------


def _detect(cli, checkpoint, out, *extra, code=0):
    return cli(
        "detect", "--model", checkpoint, "--data", "digits", "--detector", "isolated-pixels",
        "--pixels", "2", "--param", "steps=20", "--no-adaptive", "--quiet", "--out", out, *extra,
        code=code,
    )  # fmt: skip


def test_detect_reports_the_intervals_and_warns_on_a_tiny_held_out_set(cli, checkpoint, tmp_path):
    result = _detect(cli, checkpoint, tmp_path / "d", "--limit", "30", "--fpr", "0.01,0.05")
    report = json.loads((tmp_path / "d" / "detection.json").read_text())
    assert report["split"]["limit"] == 30 and report["split"]["n_test"] == 30
    assert report["intervals"] == {"method": "clopper-pearson", "confidence": 0.95}
    for point in report["operating_points"]:
        low, high = point["fpr_ci"]
        assert 0.0 <= low <= point["fpr"] <= high <= 1.0
        assert high > 0.1, "30 clean images cannot pin a false-positive rate below 10%"
        low, high = point["detection_rate_ci"]
        assert 0.0 <= low <= point["detection_rate"] <= high <= 1.0
    assert result.stdout.count("(95% CI ") == 4 and result.stdout.count("30 clean images)") == 2
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith("warning: 30 held-out clean images are too few to measure")
    assert "a false-positive rate of 0.01 " in warning, "30 images suffice for 5%, not for 1%"


def test_detect_limit_is_reproducible_with_its_seed(cli, checkpoint, tmp_path):
    reports = []
    for name in ("a", "b"):
        _detect(cli, checkpoint, tmp_path / name, "--limit", "25", "--fpr", "0.2", "--seed", "3")
        report = json.loads((tmp_path / name / "detection.json").read_text())
        reports.append({k: v for k, v in report.items() if k != "wall_time"})
    assert reports[0] == reports[1] and reports[0]["split"]["seed"] == 3


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_a_bad_detect_limit_is_one_error_line(cli, checkpoint, tmp_path, limit):
    result = _detect(cli, checkpoint, tmp_path / "d", "--limit", limit, code=2)
    assert result.stderr.startswith("error: limit must be a positive number of images")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "detection.json").exists()
