"""``attack --target`` by number or name at 1,000 classes (``--class-names FILE``), and the
line that says which one-pixel search ran (the exact corner scan, or sparse random search
when the scan costs more than the budget)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from one_line_errors import assert_one_line_error

from pixelguard.attacks import create_attack
from pixelguard.cli.attack_options import single_pixel_search_text

IMAGENET_NAMES = Path(__file__).resolve().parents[2] / "benchmarks" / "imagenet_classes.txt"
QUICK = ["--limit", "3", "--quiet"]

FACTORY = """\
import torch
from torch import nn


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1000))
"""
"""A 1,000-class linear model on tiny RGB images, as ``file.py:make_model``."""


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A 1,000-class model (``file.py:make_model``) and four images it classifies as their
    labels (``.npz``, no class names: ImageNet-style models carry none)."""
    import pixelguard

    folder = tmp_path_factory.mktemp("imagenet-like")
    (folder / "factory.py").write_text(FACTORY)
    spec = f"{folder / 'factory.py'}:make_model"
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, (4, 3, 8, 8)) / 255).astype(np.float32)
    model = pixelguard.load_model(spec, input_shape=(3, 8, 8))
    import torch

    y = model.predict(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert not (y == 948).any()
    np.savez(folder / "data.npz", x=x, y=y)
    return spec, folder / "data.npz"


def _attack_imagenet(cli, imagenet_like, out: Path, *extra: str, code: int = 0):
    spec, data = imagenet_like
    return cli(
        "attack",
        "--model",
        spec,
        "--data",
        data,
        "--out",
        out,
        "--budget",
        "600",
        "--quiet",
        *extra,
        code=code,
    )


def test_target_by_name_from_a_names_file(cli, imagenet_like, tmp_path) -> None:
    names = ["--class-names", str(IMAGENET_NAMES)]
    _attack_imagenet(cli, imagenet_like, tmp_path / "r", *names, "--target", "Granny Smith")
    data = _results(tmp_path / "r")
    assert data["attack"]["target"] == 948
    assert data["data"]["class_names"][948] == "Granny Smith"
    assert all(row["target"] == 948 for row in data["images"])


def test_an_unknown_target_name_lists_the_nearest_names_only(cli, imagenet_like, tmp_path):
    names = ["--class-names", str(IMAGENET_NAMES)]
    result = _attack_imagenet(cli, imagenet_like, tmp_path, *names, "--target", "granny", code=2)
    err = assert_one_line_error(result, "got 'granny'", "948 'Granny Smith'", "0-999")
    assert "tench" not in err and len(err) < 300


def test_a_target_name_without_names_asks_for_them(cli, imagenet_like, tmp_path) -> None:
    result = _attack_imagenet(cli, imagenet_like, tmp_path, "--target", "Granny Smith", code=2)
    assert_one_line_error(result, "no class names are known", "--class-names")


@pytest.mark.parametrize("target", ["1000", "-1"])
def test_a_target_number_out_of_range(cli, imagenet_like, tmp_path, target: str) -> None:
    result = _attack_imagenet(cli, imagenet_like, tmp_path, f"--target={target}", code=2)
    assert_one_line_error(result, f"--target class {int(target)} is out of range", "0-999")


def test_a_names_file_of_another_length_is_refused(cli, imagenet_like, tmp_path) -> None:
    short = tmp_path / "names.txt"
    lines = IMAGENET_NAMES.read_text().splitlines()
    short.write_text("\n".join([*lines, "one more"]) + "\n")
    result = _attack_imagenet(cli, imagenet_like, tmp_path / "r", "--class-names", short, code=2)
    assert_one_line_error(result, "1,001 names", "the model has 1,000 classes")
    gap = tmp_path / "gap.txt"
    gap.write_text("\n".join([*lines[:10], "", *lines[10:]]) + "\n")
    result = _attack_imagenet(cli, imagenet_like, tmp_path / "r", "--class-names", gap, code=2)
    assert_one_line_error(result, "line 11 is blank")


def test_the_exact_scan_line_when_the_budget_covers_it(cli, model_factory, tmp_path) -> None:
    result = cli("attack", "--model", model_factory, "--data", "digits", "--out", tmp_path, *QUICK)
    assert "k=1: exact corner scan (128 queries at 1x8x8)" in result.stdout
    assert all(row["queries"] <= 128 for row in _results(tmp_path)["images"])


def test_the_sparse_search_line_when_the_scan_is_over_budget(cli, model_factory, tmp_path):
    args = ["attack", "--model", model_factory, "--data", "digits", "--out", tmp_path, *QUICK]
    result = cli(*args, "--budget", "100", "--json")
    summary = json.loads(result.stdout)
    assert summary["single_pixel_search"] == (
        "k=1: sparse random search (the exact corner scan needs 128 queries at 1x8x8, "
        "over the budget of 100)"
    )
    result = cli(*args, "--iterations", "30")
    assert "over the budget of 30)" in result.stdout
    assert "k=1" not in cli(*args, "--pixels", "3", "--iterations", "30").stdout


def test_the_fewest_pixels_search_says_how_it_starts(cli, model_factory, tmp_path) -> None:
    args = ["attack", "--model", model_factory, "--data", "digits", "--out", tmp_path, *QUICK]
    result = cli(*args, "--pixels", "auto", "--budget", "600")
    assert "1 pixel first: exact corner scan (128 queries at 1x8x8" in result.stdout


def test_the_scan_text_at_imagenet_size() -> None:
    shape = (3, 224, 224)
    default = single_pixel_search_text(create_attack("sparse-rs", pixels=1), shape)
    assert default == (
        "k=1: sparse random search (the exact corner scan needs 401,408 queries at "
        "3x224x224, over the budget of 10,000)"
    )
    big = create_attack("sparse-rs", pixels=1, budget=500_000)
    assert single_pixel_search_text(big, shape) == (
        "k=1: exact corner scan (401,408 queries at 3x224x224)"
    )
    off = create_attack("sparse-rs", pixels=1, exact_single_pixel=False)
    assert "exact_single_pixel=False" in str(single_pixel_search_text(off, (1, 8, 8)))
    assert single_pixel_search_text(create_attack("pixel-de", pixels=1), shape) is None
    fewest = single_pixel_search_text(create_attack("min-pixels"), shape)
    assert fewest is not None and "over a quarter of the budget of 10,000" in fewest
