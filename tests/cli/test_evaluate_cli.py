"""``pixelguard evaluate``: a tiny pixel suite end to end."""

from __future__ import annotations

import json
import pickle

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression


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
