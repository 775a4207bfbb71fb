"""``pixelguard scan-data``: flags, scores against the mask, reports, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from pixelguard.cli.app import Command, handle_errors
from pixelguard.cli.scan_data import scan_data_command
from pixelguard.data.base import Dataset
from pixelguard.poisoning.backdoor import PoisonedData
from pixelguard.poisoning.triggers import parse_trigger
from pixelguard.workflows.training import train_on_dataset

TARGET, SOURCE, N_POISON = 0, 7, 50

app = typer.Typer()
app.command("scan-data", cls=Command)(handle_errors(scan_data_command))


@app.callback()
def _root() -> None:
    """A group, so the command is invoked by name as under ``pixelguard``."""


def invoke(*args: str | Path, code: int = 0):
    result = CliRunner().invoke(app, ["scan-data", *[str(a) for a in args]])
    assert result.exit_code == code, (
        f"exit {result.exit_code} != {code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        f"\nexception: {result.exception!r}"
    )
    return result


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory, digits) -> tuple[Path, Path, Path, PoisonedData]:
    """A poisoned digits .npz (7s with a 2x2 corner square labelled 0), the clean held-out
    digits, and a small CNN checkpoint trained on the poisoned images."""
    folder = tmp_path_factory.mktemp("scan")
    x, y = digits
    train, test = (
        Dataset(x[:1500], y[:1500], None, "digits"),
        Dataset(x[1500:], y[1500:], None, "held-out"),
    )
    trigger = parse_trigger("square:2@bottom-right,margin=0", (1, 8, 8))
    generator = torch.Generator().manual_seed(0)
    eligible = torch.nonzero(train.y == SOURCE).flatten()
    chosen = eligible[torch.randperm(eligible.numel(), generator=generator)[:N_POISON]]
    xp, yp = train.x.clone(), train.y.clone()
    xp[chosen] = trigger.apply(xp[chosen])
    yp[chosen] = TARGET
    mask = torch.zeros(len(train), dtype=torch.bool)
    mask[chosen] = True
    data = PoisonedData(
        Dataset(xp, yp, None, "digits"), mask, train.y.clone(), trigger, TARGET, "all-to-one",
        N_POISON / len(train), 0,
    )  # fmt: skip
    npz = data.save(folder / "poisoned.npz")
    clean = folder / "test.npz"
    np.savez(clean, x=test.x.numpy(), y=test.y.numpy())
    model = train_on_dataset(data.dataset, epochs=15, seed=0).save(folder / "model.pt")
    return npz, clean, model, data


def test_spectral_scan_writes_flags_scores_and_report(poisoned, tmp_path) -> None:
    npz, clean, model, data = poisoned
    out = tmp_path / "run"
    result = invoke(
        "--model", model, "--data", npz, "--method", "spectral", "--out", out, "--quiet"
    )
    assert "spectral flagged" in result.stdout and "wrote" in result.stdout
    scan = json.loads((out / "scan.json").read_text())
    assert scan["schema_version"] == "pixelguard-scan/1"
    assert scan["method"] == "spectral" and scan["settings"]["removal_factor"] == 1.5
    flagged = torch.zeros(scan["n_images"], dtype=torch.bool)
    flagged[scan["flagged_indices"]] = True
    assert int(flagged.sum()) == scan["n_flagged"] == sum(c["n_flagged"] for c in scan["classes"])
    # The scores in scan.json are those of the flags against the npz's own mask.
    tp = int((flagged & data.mask).sum())
    assert scan["metrics"]["true_positives"] == tp
    assert scan["metrics"]["precision"] == pytest.approx(tp / scan["n_flagged"], abs=1e-6)
    assert scan["metrics"]["recall"] == pytest.approx(tp / N_POISON, abs=1e-6)
    assert scan["metrics"]["recall"] >= 0.9
    assert scan["poison"]["trigger"] == "square:2@bottom-right,margin=0"
    assert scan["retrain"] is None
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == min(scan["n_flagged"], 48)
    assert "poisoned" in html and scan["headline"].split(":")[0] in html


def test_activation_clustering_with_retraining_measures_the_backdoor(poisoned, tmp_path) -> None:
    npz, clean, model, _ = poisoned
    out = tmp_path / "ac"
    result = invoke(
        "--model", model, "--data", npz, "--method", "activation-clustering",
        "--size-threshold", "0.3", "--retrain", "--epochs", "3", "--test-data", clean,
        "--out", out, "--json", "--quiet",
    )  # fmt: skip
    body = json.loads(result.stdout)
    assert body["settings"]["size_threshold"] == 0.3 and body["settings"]["seed"] == 0
    assert body["files"] == [str(out / "scan.json"), str(out / "report.html")]
    retrain = body["retrain"]
    assert retrain["n_kept"] + retrain["n_removed"] == body["n_images"]
    assert retrain["n_removed"] == body["n_flagged"] and retrain["epochs"] == 3
    assert 0.0 <= retrain["attack_success_rate"] <= 1.0 and retrain["clean_accuracy"] > 0.5
    assert body["test_data"]["n_images"] == retrain["n_clean"] == body["before"]["n_clean"]
    assert retrain["n_triggered"] == body["before"]["n_triggered"] < retrain["n_clean"]
    assert 0.0 <= body["before"]["attack_success_rate"] <= 1.0


def test_plain_npz_has_no_scores(poisoned, tmp_path) -> None:
    _, clean, model, _ = poisoned
    out = tmp_path / "plain"
    invoke("--model", model, "--data", clean, "--out", out, "--quiet")
    scan = json.loads((out / "scan.json").read_text())
    assert scan["poison_mask_known"] is False and scan["metrics"] is None and scan["poison"] is None
    assert "poisoned" not in scan["headline"]


def test_a_model_without_readable_features_is_refused_before_writing(poisoned, tmp_path) -> None:
    npz, _, _, _ = poisoned
    factory = tmp_path / "factory.py"
    factory.write_text(
        "import numpy as np\n\n\ndef make_model():\n"
        "    return lambda x: np.tile(np.eye(10)[0], (len(x), 1))\n"
    )
    out = tmp_path / "never"
    result = invoke(
        "--model", f"{factory}:make_model", "--input-shape", "1,8,8", "--data", npz, "--out", out,
        code=2,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "exposes no hidden layer" in lines[0] and "torch" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "spectral", "--size-threshold", "0.2"], "--size-threshold does not apply"),
        (["--method", "isolation-forest"], "--method must be one of"),
        (["--method", "spectral", "--epsilon", "2"], "epsilon must be in"),
        (["--method", "spectral", "--scan-param", "bogus=1"], "spectral takes the settings"),
    ],
)
def test_bad_settings_exit_2_without_output(poisoned, tmp_path, args, message) -> None:
    npz, _, model, _ = poisoned
    out = tmp_path / "bad"
    result = invoke("--model", model, "--data", npz, "--out", out, *args, code=2)
    assert message in result.stderr and not out.exists()


def test_registered_under_pixelguard() -> None:
    from pixelguard.cli.app import app as pixelguard_app

    result = CliRunner().invoke(pixelguard_app, ["scan-data", "--help"])
    assert result.exit_code == 0
    assert "--method" in result.stdout and "--retrain" in result.stdout
