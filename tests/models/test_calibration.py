"""Batch-size calibration: the sweep, the memory cap, the cache, and load_model's "auto"."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pixelguard.errors import ConfigError
from pixelguard.models import (
    CallableClassifier,
    OnnxClassifier,
    TorchClassifier,
    calibration,
    load_model,
)
from pixelguard.models.base import (
    memory_budget,
    model_device,
    preferred_batch_size,
    resolve_device,
)
from pixelguard.models.calibration import (
    CACHE_FILE,
    Calibration,
    cache_dir,
    calibrate,
    choose_batch_size,
    estimate_bytes_per_image,
    format_bytes,
    measure_batch_sizes,
    parse_memory,
)
from pixelguard.models.queries import QueryCounter


def tiny_cnn(seed: int = 0) -> nn.Module:
    """An 8x8 grey-image CNN of the digits' size; any image size works (global pooling)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32, 10),
        )


class Counting(nn.Module):
    """Wraps a module and counts its forward calls."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


class Overhead(nn.Module):
    """Each call costs a fixed 5 ms (as a remote or launch-bound model), so throughput
    grows with the batch size; each image makes a 64-channel copy of itself (activations)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.005)
        wide = x.repeat(1, 64, 1, 1)  # (n, 64, H, W): 64 times the image
        return self.head(wide.mean(dim=(2, 3)))


def test_the_sweep_picks_one_of_the_sizes_it_measured() -> None:
    clf = TorchClassifier(tiny_cnn(), (1, 8, 8))
    result = measure_batch_sizes(clf, max_batch=64)
    sizes = list(result.throughput)
    assert sizes == [2**i for i in range(len(sizes))] and sizes[-1] <= 64
    assert result.batch_size in result.throughput and result.batch_size >= 1
    assert all(rate > 0 for rate in result.throughput.values())
    assert result.max_batch == 64 and result.stopped in ("cap", "fell", "slow", "time")
    assert result.bytes_per_image >= 4 * 64  # at least the image itself
    assert result.threads == torch.get_num_threads() and result.device == "cpu"
    assert not result.cached


def test_a_memory_budget_caps_a_model_that_would_take_larger_batches() -> None:
    clf = TorchClassifier(Overhead(), (1, 32, 32))
    per_image = estimate_bytes_per_image(clf)
    assert per_image >= 64 * 32 * 32 * 4  # the 64-channel copy is seen
    unbounded = measure_batch_sizes(clf, max_batch=16)
    assert unbounded.batch_size == 16  # a fixed cost per call: the largest batch wins
    capped = measure_batch_sizes(clf, max_batch=16, max_memory=int(3.5 * per_image))
    assert capped.max_batch == 3 and list(capped.throughput) == [1, 2, 3]
    assert capped.batch_size == 3 < unbounded.batch_size


def test_an_image_over_the_budget_even_alone_is_a_config_error() -> None:
    clf = TorchClassifier(tiny_cnn(), (1, 8, 8))
    needed = estimate_bytes_per_image(clf)
    with pytest.raises(ConfigError) as caught:
        measure_batch_sizes(clf, max_memory=1024)
    message = str(caught.value)
    assert "\n" not in message and "one 1x8x8 image needs" in message
    assert format_bytes(needed) in message and "1.0 KiB" in message and "--max-memory" in message


def test_a_huge_image_is_stopped_before_it_exhausts_memory(monkeypatch) -> None:
    clf = TorchClassifier(Overhead(), (1, 256, 256))  # 256 KiB, and 64 times that inside
    with pytest.raises(ConfigError, match=r"needs 16\.\d MiB .* budget of 1\.0 MiB"):
        estimate_bytes_per_image(clf, max_memory=1 << 20)
    # measuring stops at a ceiling (by default the larger of 4 x budget and budget + 1 GiB)
    monkeypatch.setattr(calibration, "_ceiling", lambda budget: 4 * budget)
    with pytest.raises(ConfigError, match=r"needs more than 4\.0 MiB .* budget of 1\.0 MiB"):
        estimate_bytes_per_image(clf, max_memory=1 << 20)


def test_the_cache_reuses_a_measurement_of_the_same_model(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    counting = Counting(tiny_cnn())
    first = calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=32)
    assert counting.calls > 3 and not first.cached and cache.is_file()
    before = counting.calls
    again = calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=32)
    assert counting.calls == before  # not a single forward call
    assert again.cached and again.batch_size == first.batch_size
    assert again.throughput == pytest.approx(first.throughput, rel=1e-3)
    # a lower cap picks among the cached sizes, still without measuring
    lower = calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=2)
    assert counting.calls == before and lower.batch_size <= 2


def test_another_model_shape_or_thread_count_is_measured_again(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    counting = Counting(tiny_cnn())
    calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=8)
    other = Counting(tiny_cnn(seed=1))  # same architecture, other weights
    calibrate(TorchClassifier(other, (1, 8, 8)), cache=cache, max_batch=8)
    assert other.calls > 0
    before = counting.calls
    calibrate(TorchClassifier(counting, (1, 16, 16)), cache=cache, max_batch=8)
    assert counting.calls > before
    before = counting.calls
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=8)
    finally:
        torch.set_num_threads(threads)
    assert counting.calls > before
    before = counting.calls
    calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=8)
    assert counting.calls == before  # the first entry is still there


def test_a_larger_cap_than_the_cached_sweep_reached_is_measured(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    counting = Counting(tiny_cnn())
    small = calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=2)
    assert small.stopped == "cap" and small.max_batch == 2
    before = counting.calls
    calibrate(TorchClassifier(counting, (1, 8, 8)), cache=cache, max_batch=8)
    assert counting.calls > before


def test_a_corrupt_cache_is_measured_again_and_rewritten(tmp_path: Path) -> None:
    cache = tmp_path / "calibration.json"
    cache.write_text("{not json")
    result = calibrate(TorchClassifier(tiny_cnn(), (1, 8, 8)), cache=cache, max_batch=4)
    assert not result.cached and '"entries"' in cache.read_text()


def test_a_224_pixel_cnn_calibrates_within_its_caps() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 1000),
        )
    clf = TorchClassifier(net, (3, 224, 224))
    result = calibrate(clf, cache=False)
    # the sweep ends by one of its rules, within the memory cap (its time is the benchmarks')
    assert result.stopped in ("cap", "fell", "slow", "time")
    assert max(result.throughput) <= result.max_batch
    assert result.batch_size in result.throughput
    # input (600 KiB) plus the first conv's output (800 KiB) are alive at once
    assert 1 << 20 < result.bytes_per_image < 8 << 20


def test_load_model_auto_sets_the_calibrated_batch_size(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIXELGUARD_CACHE", str(tmp_path))
    model = load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size="auto")
    assert isinstance(model, TorchClassifier)
    calibration = model.calibration  # type: ignore[attr-defined]
    assert isinstance(calibration, Calibration)
    assert model.batch_size == calibration.batch_size
    assert preferred_batch_size(model) == calibration.batch_size
    assert preferred_batch_size(QueryCounter(model, 1)) == calibration.batch_size
    assert (tmp_path / CACHE_FILE).is_file() and cache_dir() == tmp_path
    again = load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size="AUTO")
    assert again.calibration.cached  # type: ignore[attr-defined]
    fixed = load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size=7)
    assert fixed.batch_size == 7 and preferred_batch_size(fixed) == 7  # type: ignore[attr-defined]
    assert not hasattr(fixed, "calibration")
    assert load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size="7").batch_size == 7  # type: ignore[attr-defined]
    for bad in ("fast", 0, -1, "1.5"):
        with pytest.raises(ConfigError, match="batch_size must be a positive whole number or auto"):
            load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size=bad)


def test_adapters_built_directly_keep_an_int_batch_size() -> None:
    assert TorchClassifier(tiny_cnn(), (1, 8, 8)).batch_size == 128
    with pytest.raises(ConfigError, match="batch_size='auto' is load_model's"):
        TorchClassifier(tiny_cnn(), (1, 8, 8), batch_size="auto")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_memory must be a positive"):
        TorchClassifier(tiny_cnn(), (1, 8, 8), max_memory=0)


def test_load_model_max_memory_sets_the_budget_and_lowers_a_fixed_batch() -> None:
    model = load_model(tiny_cnn(), input_shape=(1, 8, 8), max_memory="512M")
    assert model.max_memory == 512 << 20 and memory_budget(model) == 512 << 20  # type: ignore[attr-defined]
    assert memory_budget(QueryCounter(model, 1)) == 512 << 20
    per_image = estimate_bytes_per_image(TorchClassifier(tiny_cnn(), (1, 8, 8)))
    small = load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size=64, max_memory=5 * per_image)
    assert small.batch_size == 5  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"needs .* over the memory budget of 100 B"):
        load_model(tiny_cnn(), input_shape=(1, 8, 8), max_memory=100)
    with pytest.raises(ConfigError, match="max_memory must be a size"):
        load_model(tiny_cnn(), input_shape=(1, 8, 8), max_memory="lots")


def test_callables_calibrate_without_a_disk_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIXELGUARD_CACHE", str(tmp_path))
    calls = []

    def fn(a: np.ndarray) -> np.ndarray:
        calls.append(len(a))
        return a.reshape(len(a), -1)[:, :3]

    model = load_model(fn, input_shape=(1, 2, 2), batch_size="auto")
    assert isinstance(model, CallableClassifier)
    assert model.batch_size in model.calibration.throughput  # type: ignore[attr-defined]
    assert calls and not (tmp_path / CACHE_FILE).exists()


def test_threads_option_sets_torchs_thread_count() -> None:
    threads = torch.get_num_threads()
    try:
        load_model(tiny_cnn(), input_shape=(1, 8, 8), threads=threads + 1)
        assert torch.get_num_threads() == threads + 1
    finally:
        torch.set_num_threads(threads)
    for bad in (0, "two"):
        with pytest.raises(ConfigError, match="threads must be a positive whole number or auto"):
            load_model(tiny_cnn(), input_shape=(1, 8, 8), threads=bad)  # type: ignore[arg-type]


def test_threads_auto_keeps_the_faster_thread_count(monkeypatch, tmp_path: Path) -> None:
    """Both counts are calibrated (and cached each), the faster one is set and its
    calibration used; a second load measures nothing."""
    import pixelguard.models.loader as loader

    monkeypatch.setenv("PIXELGUARD_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "DEFAULT_THREADS", 2)
    threads = torch.get_num_threads()
    try:
        model = load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size="auto", threads="auto")
        chosen = model.calibration  # type: ignore[attr-defined]
        assert chosen.threads == torch.get_num_threads() in (1, 2)
        assert model.batch_size == chosen.batch_size  # type: ignore[attr-defined]
        cached = json.loads((tmp_path / CACHE_FILE).read_text())
        assert len(cached["entries"]) == 2, "one calibration per thread count"
        again = load_model(tiny_cnn(), input_shape=(1, 8, 8), batch_size="auto", threads="AUTO")
        assert again.calibration.cached and torch.get_num_threads() == chosen.threads  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("1K", 1024),
        ("64kb", 64 << 10),
        ("4096", 4096),
        (" 3 MB ", 3 << 20),
        (100, 100),
    ],
)
def test_memory_sizes_parse(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "2X", "-1G", "0", "1e9", "G"])
def test_bad_memory_sizes_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="max_memory"):
        parse_memory(text)


def test_format_bytes_and_choice_ties() -> None:
    assert format_bytes(100) == "100 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(int(2.3 * (1 << 30))) == "2.3 GiB"
    assert choose_batch_size({1: 50.0, 2: 70.0, 4: 82.0, 8: 55.0}) == 4
    assert choose_batch_size({64: 1000.0, 128: 990.0, 256: 900.0}) == 128  # within 2%


def test_devices_resolve_against_this_machine() -> None:
    assert resolve_device(None) is None and resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu please")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
                resolve_device(name)
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            load_model(tiny_cnn(), input_shape=(1, 8, 8), device="cuda")
    model = load_model(tiny_cnn(), input_shape=(1, 8, 8), device="auto")
    assert model_device(QueryCounter(model, 1)) == torch.device(resolve_device("auto"))


# -- ONNX ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tiny_cnn().eval(),
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["scores"],
            dynamic_axes={"x": {0: "n"}, "scores": {0: "n"}},
        )
    return path


def test_onnx_models_calibrate_from_their_graph_and_cache_by_file(
    cnn_onnx: Path, tmp_path: Path
) -> None:
    model = OnnxClassifier(cnn_onnx)
    # the input (256 B) and the conv output (8 x 256 B) are alive at once
    assert 8 * 256 <= estimate_bytes_per_image(model) < 64 * 256
    cache = tmp_path / "calibration.json"
    first = calibrate(model, cache=cache, max_batch=16)
    assert first.device == "onnxruntime CPUExecutionProvider"
    again = calibrate(OnnxClassifier(cnn_onnx), cache=cache, max_batch=16)
    assert again.cached and again.batch_size == first.batch_size
    loaded = load_model(cnn_onnx, batch_size="auto", max_memory="64M", threads=1)
    assert loaded.batch_size in loaded.calibration.throughput  # type: ignore[attr-defined]
    assert loaded.max_memory == 64 << 20  # type: ignore[attr-defined]
    torch.set_num_threads(1)  # the test session's


def test_onnx_on_cuda_needs_the_cuda_provider(cnn_onnx: Path) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed")
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        load_model(cnn_onnx, device="cuda")
    with pytest.raises(ConfigError, match="ONNX models run on auto, cpu, cuda or cuda:N"):
        load_model(cnn_onnx, device="tpu")
    assert load_model(cnn_onnx, device="auto").providers == ["CPUExecutionProvider"]  # type: ignore[attr-defined]
