"""``pixelguard evaluate``: a tiny pixel suite end to end."""

from __future__ import annotations

import json


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
    result = cli(
        "evaluate", "--model", "http://127.0.0.1:9/none", "--input-shape", "1,8,8",
        "--data", "digits", "--suite", "dense", "--out", tmp_path, code=2,
    )  # fmt: skip
    assert result.stderr.startswith("error: ")
