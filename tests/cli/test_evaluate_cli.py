"""``pixelguard evaluate``: a tiny pixel suite end to end."""

from __future__ import annotations

import io
import json
import pickle

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from pixelguard.cli.evaluate import _evaluation_progress


def test_evaluate_writes_both_reports_and_prints_the_table(cli, model_factory, tmp_path):
    out = tmp_path / "eval"
    result = cli(
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--suite", "pixel", "--pixels", "1,3", "--budget", "20", "--limit", "8",
        "--quiet", "--out", out,
    )  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert data["schema_version"] == "evaluation-1.0" and data["n_images"] == 8
    assert list(data["robust_accuracy"]) == ["pixels=1", "pixels=3"]
    assert (out / "report.md").read_text().startswith("## pixelguard evaluation: pixel suite")
    for fragment in ("robust accuracy", "pixels=1", "pixels=3", "report.json"):
        assert fragment in result.stdout


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


def test_evaluate_resumes_its_checkpoint_and_refuses_another_suite(cli, model_factory, tmp_path):
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
    change = "suite (entries[0].budget_label: 'pixels=1' -> 'pixels=3'"
    assert refused.stderr.startswith("error: the checkpoint in ") and change in refused.stderr
    assert refused.stderr.count("\n") == 1


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
