"""to_canonical and to_labels: layout and value-range detection, overrides, bad input."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

from pixelguard.data import to_canonical
from pixelguard.data.convert import to_labels
from pixelguard.errors import ConfigError, DataError, RangeError, ShapeError


def _uint8(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)


def test_uint8_nhwc_becomes_nchw_over_255() -> None:
    array = _uint8((2, 5, 6, 3))
    out = to_canonical(array)
    expected = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, expected)


def test_float_nchw_in_unit_range_is_kept_exactly() -> None:
    array = np.random.default_rng(1).random((2, 3, 4, 5), dtype=np.float32)
    out = to_canonical(array)
    assert torch.equal(out, torch.from_numpy(array))


def test_grey_nhw_gets_one_channel() -> None:
    array = _uint8((3, 4, 5))
    out = to_canonical(array)
    assert out.shape == (3, 1, 4, 5)
    assert torch.equal(out[:, 0], torch.from_numpy(array).float() / 255)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 1, 8, 8), (2, 1, 8, 8)),
        ((2, 8, 8, 1), (2, 1, 8, 8)),
        ((2, 3, 32, 32), (2, 3, 32, 32)),
        ((2, 32, 32, 3), (2, 3, 32, 32)),
        ((2, 1, 3, 3), (2, 1, 3, 3)),  # ambiguous; square H == W in NCHW wins
        ((2, 3, 5, 3), (2, 3, 3, 5)),  # ambiguous, not square: NHWC
    ],
)
def test_layout_detection(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    assert to_canonical(np.zeros(shape, dtype=np.uint8)).shape == expected


def test_ambiguous_layout_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pixelguard.data.convert"):
        to_canonical(np.zeros((2, 3, 5, 3), dtype=np.uint8), name="tiny.npy")
    assert "tiny.npy" in caplog.text and "layout=" in caplog.text


def test_layout_override() -> None:
    array = _uint8((2, 3, 4, 3))
    as_nchw = to_canonical(array, layout="nchw")
    as_nhwc = to_canonical(array, layout="nhwc")
    assert torch.equal(as_nchw, torch.from_numpy(array).float() / 255)
    assert torch.equal(as_nhwc, torch.from_numpy(array).permute(0, 3, 1, 2).float() / 255)


def test_layout_override_needs_channels_on_that_axis() -> None:
    with pytest.raises(ShapeError, match=r"NCHW puts 8 channels on axis 1.*\(2, 8, 8, 3\)"):
        to_canonical(np.zeros((2, 8, 8, 3), dtype=np.uint8), layout="nchw")


@pytest.mark.parametrize("shape", [(8, 8), (2, 3, 4, 5, 6), (5,)])
def test_wrong_ndim_is_a_shape_error_naming_the_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ShapeError, match=re.escape(str(shape))):
        to_canonical(np.zeros(shape, dtype=np.uint8))


def test_no_channel_axis_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"channel axis.*\(2, 4, 5, 6\)"):
        to_canonical(np.zeros((2, 4, 5, 6), dtype=np.uint8))


def test_four_channels_are_refused() -> None:
    with pytest.raises(ShapeError, match="1 or 3"):
        to_canonical(np.zeros((2, 8, 8, 4), dtype=np.uint8))


def test_integers_up_to_255_are_divided() -> None:
    array = np.array([[[0, 128], [255, 7]]], dtype=np.int32)
    out = to_canonical(array)
    assert torch.equal(out[0, 0], torch.tensor([[0, 128], [255, 7]], dtype=torch.float32) / 255)


def test_integers_above_255_are_refused_with_min_and_max() -> None:
    with pytest.raises(RangeError, match=r"\[0, 1000\]"):
        to_canonical(np.array([[[0, 1000]]], dtype=np.int32))


def test_float_0_255_is_divided_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    array = np.array([[[0.0, 51.0], [255.0, 127.5]]], dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="pixelguard.data.convert"):
        out = to_canonical(array)
    assert torch.equal(out[0, 0], torch.from_numpy(array[0]) / 255)
    assert "value_range" in caplog.text


def test_float64_is_converted_to_float32() -> None:
    array = np.array([[[0.25, 0.5]]], dtype=np.float64)
    out = to_canonical(array)
    assert out.dtype == torch.float32
    assert torch.equal(out[0, 0], torch.tensor([[0.25, 0.5]]))


@pytest.mark.parametrize("bad", [-0.5, 300.0])
def test_out_of_range_floats_report_min_and_max(bad: float) -> None:
    array = np.array([[[0.0, bad]]], dtype=np.float32)
    with pytest.raises(RangeError, match=rf"\[{min(0, bad):g}, {max(0, bad):g}\]"):
        to_canonical(array, name="scores.npy")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_range_errors(bad: float) -> None:
    with pytest.raises(RangeError, match="NaN or infinite"):
        to_canonical(np.array([[[0.0, bad]]], dtype=np.float32))


def test_value_range_overrides() -> None:
    dark = np.array([[[0.0, 1.0]]], dtype=np.float32)
    assert torch.equal(to_canonical(dark, value_range="0-255")[0, 0], torch.tensor([[0, 1 / 255]]))
    binary = np.array([[[0, 1]]], dtype=np.uint8)
    assert torch.equal(to_canonical(binary, value_range="0-1")[0, 0], torch.tensor([[0.0, 1.0]]))


def test_value_range_override_is_validated() -> None:
    with pytest.raises(RangeError, match=r"value_range='0-1' expects \[0, 1\]"):
        to_canonical(np.array([[[0, 2]]], dtype=np.uint8), value_range="0-1")


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 2, 2), dtype=bool),
        np.zeros((1, 2, 2), dtype=np.complex64),
        np.zeros((1, 2, 2), dtype=object),
    ],
)
def test_non_numeric_dtypes_are_data_errors(array: np.ndarray) -> None:
    with pytest.raises(DataError, match="dtype"):
        to_canonical(array)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="layout"):
        to_canonical(np.zeros((1, 2, 2)), layout="chw")
    with pytest.raises(ConfigError, match="value_range"):
        to_canonical(np.zeros((1, 2, 2)), value_range="0-65535")


def test_torch_input_is_accepted() -> None:
    out = to_canonical(torch.full((1, 2, 2, 3), 255, dtype=torch.uint8))
    assert torch.equal(out, torch.ones(1, 3, 2, 2))


def test_labels_conversion() -> None:
    assert torch.equal(to_labels(np.array([[2], [0]], dtype=np.uint8), 2), torch.tensor([2, 0]))
    assert to_labels(np.array([1.0, 3.0]), 2).dtype == torch.int64


@pytest.mark.parametrize(
    ("labels", "error", "match"),
    [
        (np.array([0, 1, 2]), ShapeError, "3 labels for 2 images"),
        (np.array([0, -1]), RangeError, ">= 0"),
        (np.array([0.5, 1.0]), RangeError, "whole numbers"),
        (np.array([True, False]), RangeError, "dtype bool"),
        (np.zeros((2, 3)), ShapeError, r"1-D.*\(2, 3\)"),
    ],
)
def test_bad_labels(labels: np.ndarray, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        to_labels(labels, 2, name="labels.npy")
