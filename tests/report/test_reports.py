"""results.json schema, adversarial.npz arrays and the examples PNG."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import pixelguard
from pixelguard.attacks.pixel_de import PixelDE
from pixelguard.errors import ConfigError, ShapeError
from pixelguard.evaluate import attack_dataset
from pixelguard.report import (
    SCHEMA_VERSION,
    write_adversarial_npz,
    write_examples_png,
    write_results_json,
    write_run_reports,
    write_summary_json,
)
from pixelguard.report.examples import CHANGED, grid_size

MODEL_INFO = {"spec": "model.pt", "input_shape": [1, 8, 8], "options": {}}
DATA_INFO = {"spec": "digits", "split": "test"}
TOP_LEVEL = {
    "schema_version",
    "pixelguard_version",
    "created",
    "attack",
    "model",
    "data",
    "n_images",
    "clean_accuracy",
    "n_correct",
    "n_already_target",
    "n_attacked",
    "success_rate",
    "median_queries",
    "median_pixels_changed",
    "wall_time",
    "warnings",
    "wire",
    "images",
}
PER_IMAGE = {
    "index",
    "label",
    "pred_before",
    "pred_after",
    "success",
    "queries",
    "pixels_changed",
    "confidence_before",
    "confidence_after",
    "l2",
    "linf",
}


def test_results_json_has_the_schema_fields(tmp_path, run):
    path = write_results_json(
        tmp_path / "out" / "results.json", run, model_info=MODEL_INFO, data_info=DATA_INFO
    )
    data = json.loads(path.read_text())
    assert set(data) >= TOP_LEVEL
    assert data["schema_version"] == SCHEMA_VERSION == "1.1"
    assert data["pixelguard_version"] == pixelguard.__version__
    assert data["attack"]["name"] == "pixel-de" and data["attack"]["params"]["pixels"] == 3
    assert data["attack"]["seed"] == 0 and data["attack"]["budget"] is None
    assert PixelDE(**data["attack"]["params"]) == PixelDE(pixels=3, population=20, generations=3)
    assert data["warnings"] == [] and data["wire"] is None and data["n_already_target"] == 0
    assert data["model"] == MODEL_INFO and data["data"] == DATA_INFO
    assert data["n_attacked"] == len(data["images"]) == 10
    assert data["success_rate"] == pytest.approx(sum(r["success"] for r in data["images"]) / 10)
    fooled = [r["pixels_changed"] for r in data["images"] if r["success"]]
    assert data["median_pixels_changed"] == pytest.approx(float(np.median(fooled)))
    for row in data["images"]:
        assert set(row) >= PER_IMAGE and "target" not in row
        assert row["success"] == (row["pred_after"] != row["label"])
    assert [r["index"] for r in data["images"]] == run.indices.tolist()
    assert not list(path.parent.glob(".*tmp")), "the temporary file is renamed away"


def test_adversarial_npz_holds_canonical_arrays(tmp_path, run, held_out_digits):
    path = write_adversarial_npz(tmp_path / "adversarial.npz", run, held_out_digits.x)
    with np.load(path) as arrays:
        assert set(arrays.files) == {"x", "x_adv", "y", "success", "index"}
        assert arrays["x"].shape == arrays["x_adv"].shape == (10, 1, 8, 8)
        assert arrays["x"].dtype == arrays["x_adv"].dtype == np.float32
        np.testing.assert_array_equal(arrays["x"], held_out_digits.x[run.indices].numpy())
        np.testing.assert_array_equal(arrays["index"], run.indices.numpy())
        failed = ~arrays["success"]
        np.testing.assert_array_equal(arrays["x_adv"][failed], arrays["x"][failed])
        assert arrays["x_adv"].min() >= 0.0 and arrays["x_adv"].max() <= 1.0


def test_reports_refuse_images_that_are_not_the_runs_dataset(tmp_path, run, held_out_digits):
    with pytest.raises(ShapeError, match="397 dataset images"):
        write_adversarial_npz(tmp_path / "a.npz", run, held_out_digits.x[:50])


@pytest.mark.parametrize("max_examples", [12, 4, 1])
def test_examples_png_has_the_expected_size(tmp_path, run, held_out_digits, max_examples):
    path = write_examples_png(
        tmp_path / "examples.png", run, held_out_digits.x, max_examples=max_examples
    )
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        shown = min(max_examples, run.n_attacked)
        assert image.size == grid_size((1, 8, 8), shown)
        pixels = np.asarray(image)
    red = np.all(pixels == np.array(CHANGED, dtype=np.uint8), axis=-1)
    assert red.any(), "changed pixels of the first (fooled) example are drawn in red"


def test_examples_png_upscales_each_image_to_about_96_pixels():
    width, height = grid_size((1, 8, 8), 3)
    assert width >= 9 * 96 and height >= 96
    assert grid_size((3, 32, 32), 3) == (width, height)


def test_examples_png_of_an_empty_run(tmp_path, digits_model, held_out_digits):
    fours = held_out_digits.subset(held_out_digits.y == 4)
    empty = attack_dataset(digits_model, fours, PixelDE(population=20, generations=1), target=4)
    path = write_examples_png(tmp_path / "empty.png", empty, fours.x)
    with Image.open(path) as image:
        assert image.size == grid_size((1, 8, 8), 0)


def test_examples_png_rejects_no_examples(tmp_path, run, held_out_digits):
    with pytest.raises(ConfigError, match="max_examples"):
        write_examples_png(tmp_path / "x.png", run, held_out_digits.x, max_examples=0)


def test_write_run_reports_writes_all_three_files(tmp_path, run, held_out_digits):
    reports = write_run_reports(
        tmp_path / "run", run, held_out_digits.x, model_info=MODEL_INFO, data_info=DATA_INFO
    )
    assert [p.name for p in reports.paths()] == ["results.json", "adversarial.npz", "examples.png"]
    assert all(p.is_file() and p.parent == tmp_path / "run" for p in reports.paths())


def test_the_readme_quick_start_works(tmp_path, digits_model, capsys):
    net = digits_model.module
    data = pixelguard.load_data("digits")
    run = pixelguard.attack_dataset(
        pixelguard.load_model(net, input_shape=(1, 8, 8)),
        data,
        pixelguard.create_attack("sparse-rs", pixels=3),
        limit=20,
    )
    print(run.summary())
    reports = pixelguard.write_run_reports(tmp_path, run, data.x)
    assert "'n_attacked': 20" in capsys.readouterr().out
    results = json.loads(reports.results.read_text())
    assert results["model"] == {"spec": None, "input_shape": [1, 8, 8]}
    assert results["data"] == {
        "spec": None,
        "source": data.source,
        "n_images": len(data),
        "image_shape": [1, 8, 8],
        "class_names": data.class_names,
    }
    assert all(path.is_file() for path in reports.paths())


def test_summary_json_lists_every_run(tmp_path, run):
    path = write_summary_json(
        tmp_path / "summary.json",
        {"k3": run, "again": run},
        model_info=MODEL_INFO,
        data_info=DATA_INFO,
    )
    data = json.loads(path.read_text())
    assert [r["name"] for r in data["runs"]] == ["k3", "again"]
    assert data["runs"][0]["success_rate"] == pytest.approx(run.success_rate, abs=1e-6)
    assert data["schema_version"] == SCHEMA_VERSION


def test_colour_images_are_drawn(tmp_path, run):
    """RGB runs draw as well as grey ones (the grid only depends on the image size)."""
    colour = torch.rand(run.n_images, 3, 8, 8)
    result = dataclasses.replace(run.result, x_adv=colour[run.indices])
    fake = dataclasses.replace(run, result=result, class_names=None)
    path = write_examples_png(tmp_path / "rgb.png", fake, colour, class_names=["zero"] * 10)
    with Image.open(path) as image:
        assert image.size == grid_size((3, 8, 8), 10)
