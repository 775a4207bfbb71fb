"""The shared image transforms on hand-made cases."""

from __future__ import annotations

import pytest
import torch

from pixelguard.defenses.filters import (
    jpeg_compress,
    local_median,
    median_deviation,
    parse_squeezer,
    reduce_bit_depth,
    remove_outliers,
)
from pixelguard.errors import ConfigError, ShapeError


def _isolated_pixel(value: float = 1.0, background: float = 0.2) -> torch.Tensor:
    x = torch.full((1, 1, 6, 6), background)
    x[0, 0, 2, 3] = value
    return x


def test_median_removes_an_isolated_bright_pixel() -> None:
    x = _isolated_pixel()
    assert torch.equal(local_median(x, 3), torch.full_like(x, 0.2))


def test_median_keeps_a_thick_bar() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:5, :] = 1.0  # a three-row bar survives a 3x3 median
    assert torch.equal(local_median(x, 3), x)


def test_median_works_per_channel_and_for_even_windows() -> None:
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    out = local_median(x, 3)
    for c in range(3):
        assert torch.equal(out[:, c : c + 1], local_median(x[:, c : c + 1], 3))
    manual = torch.tensor([x[0, 0, 1:3, 1:3].flatten().sort().values[1].item()])
    assert torch.allclose(local_median(x, 2)[0, 0, 1, 1], manual)


def test_median_matches_a_loop_over_windows_in_the_interior() -> None:
    x = torch.rand(1, 1, 7, 7, generator=torch.Generator().manual_seed(1))
    out = local_median(x, 3)
    for i in range(1, 6):
        for j in range(1, 6):
            assert out[0, 0, i, j] == x[0, 0, i - 1 : i + 2, j - 1 : j + 2].median()


def test_median_gradient_flows_only_to_the_selected_element() -> None:
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    out = local_median(x, 3)
    (grad,) = torch.autograd.grad(out[0, 0, 2, 2], x)
    assert int((grad != 0).sum()) == 1
    assert x[grad != 0].item() == pytest.approx(out[0, 0, 2, 2].item())


def test_median_rejects_windows_that_do_not_fit() -> None:
    with pytest.raises(ShapeError):
        local_median(torch.zeros(1, 1, 2, 2), 5)
    with pytest.raises(ConfigError):
        local_median(torch.zeros(1, 1, 4, 4), 1)


def test_outlier_removal_replaces_only_outliers_in_every_channel() -> None:
    x = torch.full((1, 3, 6, 6), 0.2)
    x[0, 1, 2, 3] = 1.0  # outlier in one channel
    x[0, :, 4, 4] = 0.45  # a small deviation, kept
    out = remove_outliers(x, 3, 0.5)
    expected = x.clone()
    expected[0, 1, 2, 3] = 0.2
    assert torch.equal(out, expected)


def test_median_deviation_peaks_at_the_isolated_pixel() -> None:
    dev = median_deviation(_isolated_pixel(), 3)
    assert dev.shape == (1, 6, 6)
    assert dev[0, 2, 3].item() == pytest.approx(0.8)
    assert int((dev > 0).sum()) == 1


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_bit_depth_has_two_to_the_bits_levels(bits: int) -> None:
    x = torch.linspace(0, 1, 1001).view(1, 1, 7, 143)
    out = reduce_bit_depth(x, bits)
    levels = out.unique()
    assert levels.numel() == 2**bits
    assert torch.allclose(levels, torch.linspace(0, 1, 2**bits))
    assert float((out - x).abs().max()) <= 0.5 / (2**bits - 1) + 1e-6


def _smooth(channels: int) -> torch.Tensor:
    ramp = torch.linspace(0.1, 0.9, 16)
    img = (ramp.view(1, -1) + ramp.view(-1, 1)) / 2
    return img.expand(2, channels, 16, 16).contiguous()


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trip_is_close_on_smooth_images(channels: int) -> None:
    x = _smooth(channels)
    out = jpeg_compress(x, 90)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float((out - x).abs().mean()) < 0.01
    assert float((jpeg_compress(x, 10) - x).abs().mean()) > float((out - x).abs().mean())


def test_jpeg_rejects_two_channel_images() -> None:
    with pytest.raises(ShapeError):
        jpeg_compress(torch.zeros(1, 2, 8, 8), 75)


def test_parse_squeezer_builds_the_named_transforms() -> None:
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(parse_squeezer("median3")(x), local_median(x, 3))
    assert torch.equal(parse_squeezer("bits4")(x), reduce_bit_depth(x, 4))
    assert torch.equal(parse_squeezer("jpeg50")(x), jpeg_compress(x, 50))
    for bad in ("median1", "bits9", "jpeg0", "blur3", "bits"):
        with pytest.raises(ConfigError):
            parse_squeezer(bad)
