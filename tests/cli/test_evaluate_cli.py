"""``pixelguard evaluate``: a tiny pixel suite end to end."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import socket
from pathlib import Path

import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm
from typer.testing import CliRunner

from pixelguard.cli.app import app
from pixelguard.cli.evaluate import GATE_FAILED, _evaluation_progress
from pixelguard.data import load_data


def _evaluate(model_factory: str, out: Path, *extra: str | Path) -> list[str | Path]:
    """A small pixel suite on 8 random digits, writing into ``out``."""
    return [
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--suite", "pixel", "--pixels", "1,3", "--budget", "20", "--limit", "8",
        "--quiet", "--out", out, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, model_factory: str) -> Path:
    """The --out folder of :func:`_evaluate`, run once; copy it before resuming in it."""
    out = tmp_path_factory.mktemp("evaluate-cli") / "eval"
    result = CliRunner().invoke(app, [str(a) for a in _evaluate(model_factory, out)])
    assert result.exit_code == 0, result.stderr
    return out


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def _one_line_error(stderr: str, *fragments: str) -> None:
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr, (fragment, stderr)


def test_evaluate_writes_both_reports_and_prints_the_table(evaluated):
    data = json.loads((evaluated / "report.json").read_text())
    assert data["schema_version"] == "evaluation-1.1" and data["n_images"] == 8
    assert list(data["robust_accuracy"]) == ["pixels=1", "pixels=3"]
    assert (evaluated / "report.md").read_text().startswith("## pixelguard evaluation: pixel suite")


def test_the_report_says_what_was_evaluated(evaluated, model_factory):
    data = json.loads((evaluated / "report.json").read_text())
    assert data["model"]["spec"] == model_factory
    assert {key: data["data"][key] for key in ("spec", "split", "limit", "seed", "n_images")} == {
        "spec": "digits", "split": "test", "limit": 8, "seed": 0, "n_images": 8,
    }  # fmt: skip
    # --limit draws a seeded random sample, not the first images of the split.
    expected = load_data("digits").sample(8, 0).y.tolist()
    assert [image["label"] for image in data["images"]] == expected
    assert data["data"]["drawn_from"] == len(load_data("digits"))
    markdown = (evaluated / "report.md").read_text()
    page = (evaluated / "report.html").read_text()
    for fragment in ("digits, test split", "8 of 360, drawn at random (--limit 8)", model_factory):
        assert fragment in markdown and fragment in page


def test_the_summary_leads_with_the_headline_and_intervals(cli, evaluated, model_factory, tmp_path):
    out = _copy(evaluated, tmp_path / "again")
    result = cli(*_evaluate(model_factory, out, "--resume"))
    lines = result.stdout.splitlines()
    assert lines[0].startswith("pixel suite on model ") and "8 of 360" in lines[0]
    rows = [line.split() for line in lines[2:5]]
    assert [row[0] for row in rows] == ["clean", "pixels=1", "pixels=3"]
    assert all(row[2:4] == ["(95%", "CI"] and row[-1] == "n=8)" for row in rows)
    assert lines[-2].startswith("Robust accuracy ") and "half of clean" in lines[-2]
    assert lines[-1].startswith("wrote ") and "report.json" in lines[-1]


def test_dense_suite_of_a_model_without_gradients_is_one_error_line(cli, tmp_path):
    digits = load_digits()
    model = LogisticRegression(max_iter=200).fit(digits.data[:200] / 16, digits.target[:200])
    with (tmp_path / "model.pkl").open("wb") as handle:
        pickle.dump(model, handle)
    result = cli(
        "evaluate", "--model", tmp_path / "model.pkl", "--trust-pickle", "--input-shape", "1,8,8",
        "--data", "digits", "--suite", "dense", "--out", tmp_path / "eval", code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error: the dense suite runs Linf PGD, which needs gradients")
    assert not (tmp_path / "eval").exists()


def _timing_free(report: dict) -> dict:
    """report.json without wall times and creation time."""
    for key in ("wall_time", "created"):
        del report[key]
    for attack in report["attacks"]:
        del attack["seconds"]
    return report


def test_evaluate_resumes_its_checkpoint_and_refuses_another_run(cli, model_factory, tmp_path):
    out = tmp_path / "eval"
    args = (
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--pixels", "1", "--budget", "20", "--limit", "8", "--shard-size", "4", "--quiet",
        "--out", out,
    )  # fmt: skip
    cli(*args)
    first = json.loads((out / "report.json").read_text())
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["chunks_done"] == [0, 1] and state["identity"]["shard_size"] == 4
    resumed = cli(*args, "--resume")
    assert _timing_free(json.loads((out / "report.json").read_text())) == _timing_free(first)
    assert "pixels=1" in resumed.stdout
    refused = cli(*args, "--resume", "--pixels", "3", code=2)
    change = "suite (budgets[0]: 'pixels=1' -> 'pixels=3')"
    _one_line_error(refused.stderr, "--resume: the checkpoint in ", change, "without --resume")
    folder = str(out / "checkpoint")
    assert len(refused.stderr) - len(folder) < 200, "one short line, not the whole suite"
    other_suite = cli(*args, "--resume", "--suite", "full", code=2)
    _one_line_error(other_suite.stderr, "suite (name: 'pixel' -> 'full')")
    other_limit = cli(*args, "--resume", "--limit", "6", code=2)
    _one_line_error(other_limit.stderr, "data (limit: 8 -> 6)")


def test_an_unknown_backend_is_one_error_line(cli, model_factory, tmp_path):
    result = cli(
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--backend", "spark", "--out", tmp_path / "eval", code=2,
    )  # fmt: skip
    assert result.stderr == "error: backend must be one of local, ray, got 'spark'\n"
    assert not (tmp_path / "eval").exists()


def test_the_progress_bar_counts_images_and_shows_the_worst_robust_accuracy():
    with tqdm(file=io.StringIO()) as bar:
        update = _evaluation_progress(bar)
        assert update is not None
        update(0, 12, {})
        update(4, 12, {"pixels=1": 0.75, "pixels=3": 0.25})
        assert (bar.n, bar.total) == (4, 12)
        assert bar.postfix == "robust 25.0% @pixels=3"
    assert _evaluation_progress(None) is None


def test_evaluate_behind_a_defense_names_it_in_every_report(cli, model_factory, tmp_path):
    out = tmp_path / "eval"
    cli(
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--suite", "pixel", "--pixels", "3", "--budget", "20", "--limit", "6",
        "--defense", "median:3", "--quiet", "--out", out,
    )  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert data["defense"]["name"] == "median"
    assert data["defense"]["params"]["size"] == 3
    assert "black-box" in data["defense"]["adaptive_attacks"]
    assert "median" in (out / "report.md").read_text()
    assert "median" in (out / "report.html").read_text()
    # A resumed run behind another defense is a different run: refused, one line.
    result = cli(
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--suite", "pixel", "--pixels", "3", "--budget", "20", "--limit", "6",
        "--defense", "bit-depth:3", "--resume", "--quiet", "--out", out, code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_fail_under_exits_1_when_a_gate_fails_and_0_when_all_pass(
    cli, evaluated, model_factory, tmp_path
):
    robust = json.loads((evaluated / "report.json").read_text())["robust_accuracy"]["pixels=3"]
    assert robust < 1.0, "the test needs an image broken at pixels=3"
    out = _copy(evaluated, tmp_path / "gated")
    passed = cli(*_evaluate(model_factory, out, "--resume", "--fail-under", "pixels=3:0",
                            "--fail-under", "clean:0"))  # fmt: skip
    gate_pixels, gate_clean = passed.stderr.splitlines()
    assert gate_pixels == f"PASS pixels=3: robust accuracy {100 * robust:.1f}% >= 0.0%"
    assert gate_clean.startswith("PASS clean: clean accuracy ")
    failed = cli(
        *_evaluate(model_factory, out, "--resume", "--fail-under", "pixels=3:1",
                   "--fail-under", "pixels=1:0"),
        code=GATE_FAILED,
    )  # fmt: skip
    assert GATE_FAILED not in (0, 2)
    gate_fails, gate_passes = failed.stderr.splitlines()
    assert gate_fails == f"FAIL pixels=3: robust accuracy {100 * robust:.1f}% < 100.0%"
    assert gate_passes.startswith("PASS pixels=1: robust accuracy ")
    assert "wrote " in failed.stdout, "the reports are written before the gates are checked"


def test_a_gate_at_a_budget_the_suite_does_not_run_is_bad_input(cli, model_factory, tmp_path):
    out = tmp_path / "eval"
    result = cli(*_evaluate(model_factory, out, "--fail-under", "pixels=2:0.5"), code=2)
    _one_line_error(result.stderr, "--fail-under pixels=2", "pixels=1, pixels=3")
    assert not out.exists(), "refused before any attack ran"
    malformed = cli(*_evaluate(model_factory, out, "--fail-under", "pixels=1"), code=2)
    _one_line_error(malformed.stderr, "BUDGET:MIN")


def test_json_prints_the_summary_gates_and_files(cli, evaluated, model_factory, tmp_path):
    out = _copy(evaluated, tmp_path / "json")
    result = cli(*_evaluate(model_factory, out, "--resume", "--json", "--fail-under", "pixels=1:0"))
    summary = json.loads(result.stdout)
    report = json.loads((out / "report.json").read_text())
    assert summary["robust_accuracy"] == report["robust_accuracy"]
    low, high = summary["robust_accuracy_ci"]["pixels=1"]
    assert low <= summary["robust_accuracy"]["pixels=1"] <= high
    assert summary["headline"]["text"] == report["headline"]["text"]
    assert summary["gates"] == [
        {"budget": "pixels=1", "minimum": 0.0, "accuracy": report["robust_accuracy"]["pixels=1"],
         "passed": True}
    ]  # fmt: skip
    assert [Path(f).name for f in summary["files"]] == [
        "report.json", "report.md", "adversarial.npz", "report.html",
    ]  # fmt: skip


def test_out_naming_an_existing_file_is_one_error_line(cli, model_factory, evaluated, tmp_path):
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(b"not a folder")
    result = cli(*_evaluate(model_factory, model_file), code=2)
    _one_line_error(result.stderr, f"--out {model_file} is an existing file")
    compared = cli("compare", evaluated, evaluated, "--out", model_file, code=2)
    _one_line_error(compared.stderr, f"--out {model_file} is an existing file")


def test_a_ray_address_where_nothing_listens_is_one_error_line(cli, model_factory, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a free port: nothing listens there once it closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli(
        *_evaluate(model_factory, tmp_path / "eval", "--backend", "ray", "--ray-address",
                   f"127.0.0.1:{port}"),
        code=2,
    )  # fmt: skip
    _one_line_error(result.stderr, f"127.0.0.1:{port}", "ray start --head", "drop --ray-address")
