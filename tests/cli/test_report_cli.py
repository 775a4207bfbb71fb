"""``pixelguard report`` and ``pixelguard compare`` on a small evaluation run by the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pixelguard.cli.app import app

DEFENSE = {"name": "median-filter", "params": {"size": 3}, "adaptive_attacks": ["bpda", "eot"]}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, model_factory: str) -> Path:
    """``pixelguard evaluate --suite full`` on 12 digits; copy before changing it."""
    out = tmp_path_factory.mktemp("cli-evaluation") / "plain"
    result = CliRunner().invoke(app, [
        "evaluate", "--model", model_factory, "--input-shape", "1,8,8", "--data", "digits",
        "--suite", "full", "--pixels", "1,3", "--eps", "0.1", "--budget", "100",
        "--limit", "12", "--quiet", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def test_evaluate_writes_the_page_and_the_arrays(evaluated):
    for name in ("report.json", "report.md", "adversarial.npz", "report.html"):
        assert (evaluated / name).is_file(), name


def test_report_rerenders_the_same_page_from_files(cli, evaluated, tmp_path):
    folder = _copy(evaluated, tmp_path / "again")
    (folder / "report.html").unlink()
    (folder / "report.md").unlink()
    result = cli("report", folder)
    assert (folder / "report.html").read_text() == (evaluated / "report.html").read_text()
    assert (folder / "report.md").read_text() == (evaluated / "report.md").read_text()
    assert result.stdout.startswith("Robust accuracy ") and "half of clean" in result.stdout
    assert "report.html, report.md" in result.stdout and result.stderr == ""


def test_report_without_the_arrays_renders_all_but_the_images(cli, evaluated, tmp_path):
    folder = _copy(evaluated, tmp_path / "no-arrays")
    (folder / "adversarial.npz").unlink()
    result = cli("report", folder)
    page = (folder / "report.html").read_text()
    assert "<img " not in page and "adversarial.npz is missing" in page
    assert page.count("<svg ") >= 4
    assert result.stderr.startswith("note: adversarial.npz is missing")


def test_compare_prints_the_change_and_writes_both_files(cli, evaluated, tmp_path):
    defended = _copy(evaluated, tmp_path / "defended")
    data = json.loads((defended / "report.json").read_text())
    data["robust_accuracy"]["pixels=3"] = 1.0
    data["defense"] = DEFENSE
    (defended / "report.json").write_text(json.dumps(data))
    before = json.loads((evaluated / "report.json").read_text())["robust_accuracy"]["pixels=3"]
    change = f"{100 * (1.0 - before):+.1f} pts"

    result = cli("compare", evaluated, defended, "--out", tmp_path / "cmp")
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["plain", "defended", "change"]
    assert any(row.startswith("robust at pixels=3") and row.endswith(change) for row in rows)
    assert "defense of defended: median-filter (size=3); adaptive attacks: bpda, eot" in rows
    assert rows[-1] == f"wrote {tmp_path / 'cmp'}/: compare.md, compare.html"
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "## pixelguard comparison: plain vs defended" in markdown and change in markdown
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert change in page and "median-filter" in page and "<svg " in page

    named = cli("compare", evaluated, defended, "--names", "before,after")
    assert named.stdout.splitlines()[0].split() == ["before", "after", "change"]
    assert not (tmp_path / "compare.md").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "has no report.json"),
        ("bad-json", "is not valid JSON"),
        (
            "old-schema",
            "has schema_version '1.0'; this pixelguard reads 'evaluation-1.0' and 'evaluation-1.1'",
        ),
    ],
)
def test_report_errors_are_one_line_and_exit_2(cli, tmp_path, setup, message):
    folder = tmp_path / "eval"
    if setup != "missing":
        folder.mkdir()
    if setup == "bad-json":
        (folder / "report.json").write_text("{not json")
    if setup == "old-schema":
        (folder / "report.json").write_text('{"schema_version": "1.0"}')
    for command in (["report", folder], ["compare", folder, folder]):
        result = cli(*command, code=2)
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_compare_rejects_bad_names(cli, evaluated):
    result = cli("compare", evaluated, evaluated, "--names", "one", code=2)
    assert result.stderr == "error: --names must be two names separated by a comma, got 'one'\n"


def test_compare_warns_when_the_two_sides_are_not_like_with_like(cli, evaluated, tmp_path):
    other = _copy(evaluated, tmp_path / "train-split")
    data = json.loads((other / "report.json").read_text())
    data["data"]["split"] = "train"
    data["data"]["seed"] = 7
    (other / "report.json").write_text(json.dumps(data))
    result = cli("compare", evaluated, other, "--out", tmp_path / "cmp")
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: not like with like: the splits differ: test vs train",
        "warning: not like with like: the seeds differ: 0 vs 7",
    ]
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "not like with like**: the splits differ: test vs train." in markdown
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "not like with like: the splits differ: test vs train." in page
    defended = _copy(evaluated, tmp_path / "other-model")
    data = json.loads((defended / "report.json").read_text())
    data["model"]["spec"], data["defense"] = "other.pt", DEFENSE
    (defended / "report.json").write_text(json.dumps(data))
    alike = cli("compare", evaluated, defended)
    assert "not like with like" not in alike.stdout, "other models are the point of comparing"
