"""The model options of every command: --batch-size auto, --device, --threads, --max-memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from one_line_errors import assert_one_line_error

from pixelguard.cli import options as opt
from pixelguard.models.loader import DEFAULT_THREADS

QUICK = ["--data", "digits", "--iterations", "10", "--limit", "3", "--quiet"]
"""A sparse-rs run over three digits: well under a second."""


def _attack(model: str, out: Path, *extra: str) -> list[str]:
    return ["attack", "--model", model, "--input-shape", "1,8,8", "--out", str(out), *QUICK, *extra]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line(cli, model_factory, tmp_path):
    result = cli(*_attack(model_factory, tmp_path / "run", "--device", "cuda"), code=2)
    assert_one_line_error(result, "device cuda", "no CUDA GPU", "--device cpu")
    assert not (tmp_path / "run" / "results.json").exists()


def test_an_unknown_device_is_one_line(cli, model_factory, tmp_path):
    result = cli(*_attack(model_factory, tmp_path, "--device", "gpu0"), code=2)
    assert_one_line_error(result, "device must be auto, cpu, cuda or cuda:N")


def test_max_memory_below_one_image_is_one_line_with_the_size(cli, model_factory, tmp_path):
    result = cli(*_attack(model_factory, tmp_path, "--max-memory", "1K"), code=2)
    err = assert_one_line_error(result, "one 1x8x8 image needs", "KiB", "budget of 1.0 KiB")
    assert "--max-memory" in err


@pytest.mark.parametrize(
    ("option", "value", "fragment"),
    [
        ("--max-memory", "lots", "must be a size such as 512M"),
        ("--batch-size", "fast", "--batch-size must be a positive whole number or auto"),
        ("--batch-size", "0", "--batch-size must be a positive whole number or auto"),
        ("--threads", "0", "threads must be a positive whole number"),
    ],
)
def test_bad_model_option_values_are_one_line(
    cli, model_factory, tmp_path, option, value, fragment
):
    result = cli(*_attack(model_factory, tmp_path, option, value), code=2)
    assert_one_line_error(result, fragment)


def test_threads_batch_size_and_max_memory_run(cli, model_factory, tmp_path):
    threads = torch.get_num_threads()
    try:
        args = ("--threads", "1", "--batch-size", "7", "--max-memory", "64M", "--device", "cpu")
        result = cli(*_attack(model_factory, tmp_path, *args))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert result.stderr == ""
    data = json.loads((tmp_path / "results.json").read_text())
    given = data["model"]["options"]
    assert given["threads"] == "1" and given["batch_size"] == "7" and given["max_memory"] == "64M"


def test_the_default_batch_size_is_measured_once_and_cached(cli, model_factory, tmp_path):
    cache = tmp_path / "cache"
    env = {"PIXELGUARD_CACHE": str(cache)}
    cli(*_attack(model_factory, tmp_path / "one"), env=env)
    entries = json.loads((cache / "calibration.json").read_text())["entries"]
    # --threads auto: one calibration at 1 thread and one at torch's default
    assert len(entries) == len({1, DEFAULT_THREADS})
    assert {entry["threads"] for entry in entries.values()} == {1, DEFAULT_THREADS}
    assert all(str(entry["batch_size"]) in entry["throughput"] for entry in entries.values())
    cli(*_attack(model_factory, tmp_path / "two"), env=env)
    again = json.loads((cache / "calibration.json").read_text())["entries"]
    assert again.keys() == entries.keys()
    assert all(
        again[key]["saved"] == entries[key]["saved"] for key in entries
    )  # not measured again


def test_model_options_load_passes_the_new_options(monkeypatch):
    seen = {}

    def fake_load_model(spec, **kwargs):
        seen.update(kwargs)
        return "model"

    monkeypatch.setattr("pixelguard.models.loader.load_model", fake_load_model)
    options = opt.ModelOptions(batch_size="16", device="cpu", threads=2, max_memory="2G")
    assert options.load("model.pt") == "model"
    assert seen["batch_size"] == 16 and seen["device"] == "cpu"
    assert seen["threads"] == 2 and seen["max_memory"] == "2G"
    opt.ModelOptions().load("model.pt")
    assert seen["batch_size"] == "auto" and seen["device"] == "auto"
    assert seen["threads"] == "auto" and seen["max_memory"] is None
    assert opt.ModelOptions().given() == {}
