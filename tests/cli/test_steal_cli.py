"""``pixelguard steal``: the end-to-end job, its files, resume, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def victim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits small-cnn checkpoint, as `pixelguard train` writes it."""
    from typer.testing import CliRunner

    from pixelguard.cli.app import app

    path = tmp_path_factory.mktemp("victim") / "victim.pt"
    result = CliRunner().invoke(
        app, ["train", "--data", "digits", "--out", str(path), "--epochs", "8", "-q"]
    )
    assert result.exit_code == 0, result.output
    return path


def test_steal_writes_surrogate_report_and_curve(cli, victim: Path, tmp_path: Path) -> None:
    out = tmp_path / "surrogate.pt"
    result = cli(
        "steal",
        "--model",
        victim,
        "--query-data",
        "digits",
        "--budget",
        "600",
        "--rounds",
        "100,300",
        "--arch",
        "small-cnn",
        "--epochs",
        "15",
        "--out",
        out,
        "--transfer-images",
        "30",
        "--pixels",
        "3",
        "--sparse-rs-budget",
        "100",
    )
    assert "600 victim queries" in result.stdout
    assert "transfer sparse-pgd (surrogate -> victim)" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "report.html",
        "steal.json",
        "surrogate.pt",
    ]
    report = json.loads((tmp_path / "steal.json").read_text())
    curve = report["extraction"]["curve"]
    assert [p["queries"] for p in curve] == [100, 300, 600]
    assert report["extraction"]["queries"] == 600 and report["agreement"] > 0.85
    assert report["holdout"]["victim_queries"] == report["holdout"]["n_images"] > 0
    transfer = report["transfer"]
    assert "transfer attack" in transfer["note"]
    assert [a["attack"] for a in transfer["attacks"]] == ["pgd", "sparse-pgd"]
    assert transfer["sparse_rs_warm_start"]["budget"] == 100
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "Transfer attacks (from the surrogate)" in html
    # the surrogate is a pixelguard checkpoint: attack needs no model options
    attacked = cli(
        "attack", "--model", out, "--data", "digits", "--limit", "3", "--out", tmp_path / "atk"
    )
    assert attacked.exit_code == 0


def test_json_output_without_transfer(cli, victim: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.pt"
    result = cli(
        "steal",
        "--model",
        victim,
        "--query-data",
        "digits",
        "--budget",
        "200",
        "--method",
        "jacobian",
        "--epochs",
        "3",
        "--no-transfer",
        "--out",
        out,
        "--json",
    )
    data = json.loads(result.stdout)
    assert data["extraction"]["method"] == "jacobian" and data["extraction"]["queries"] == 200
    assert data["transfer"]["attacks"] == [] and data["transfer"]["sparse_rs_warm_start"] is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "0"], "--budget must be at least 1"),
        (["--budget", "100", "--arch", "resnet"], "resnet"),
        (["--budget", "100", "--query-data", "WRONG"], "query images have shape (1, 10, 10)"),
    ],
    ids=["zero-budget", "unknown-arch", "wrong-shape"],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cli, victim: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    wrong = tmp_path / "wrong.npz"
    x = np.random.default_rng(0).random((20, 1, 10, 10)).astype(np.float32)
    np.savez(wrong, x=x, y=np.arange(20) % 10)
    args = [
        "steal",
        "--model",
        victim,
        "--query-data",
        "digits",
        "--out",
        tmp_path / "out" / "s.pt",
    ]
    args += [str(wrong) if a == "WRONG" else a for a in extra]
    result = cli(*args, code=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert not (tmp_path / "out").exists()


def test_existing_checkpoint_needs_resume(cli, victim: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.pt"
    (tmp_path / "s.queries.npz").write_bytes(b"")
    result = cli(
        "steal", "--model", victim, "--query-data", "digits", "--budget", "10", "--out", out, code=2
    )
    assert "--resume" in result.stderr
    assert not out.exists()


MNIST = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "mnist"


@pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST files are not here")
def test_query_data_with_only_a_test_split_is_used_with_split_all(capsys) -> None:
    from pixelguard.cli.options import DataOptions
    from pixelguard.cli.steal import _load_query_data

    dataset = _load_query_data(DataOptions(split="all"), str(MNIST))
    assert dataset.x.shape == (10_000, 1, 28, 28)
    assert "no train split" in capsys.readouterr().out
