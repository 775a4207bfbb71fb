"""load_npy: .npy with a labels file, .npz archives, and every way they can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pixelguard.data import load_npy
from pixelguard.errors import DataError, RangeError, ShapeError

IMAGES = np.random.default_rng(0).integers(0, 256, size=(4, 5, 6, 3), dtype=np.uint8)
LABELS = np.array([3, 0, 1, 3], dtype=np.int64)


def _save(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_uint8_nhwc_npy_with_labels(tmp_path: Path) -> None:
    images = _save(tmp_path / "x.npy", IMAGES)
    labels = _save(tmp_path / "y.npy", LABELS)
    data = load_npy(images, labels)
    assert torch.equal(data.x, torch.from_numpy(IMAGES).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(data.y, torch.from_numpy(LABELS))
    assert data.class_names is None and data.num_classes == 4
    assert str(images) in data.source


def test_float_nchw_npz(tmp_path: Path) -> None:
    images = np.random.default_rng(1).random((3, 1, 7, 7), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=images, y=np.array([0, 1, 0], dtype=np.uint8))
    data = load_npy(tmp_path / "d.npz")
    assert torch.equal(data.x, torch.from_numpy(images))
    assert data.y.tolist() == [0, 1, 0] and data.y.dtype == torch.int64


def test_npz_with_images_and_labels_keys_and_overrides(tmp_path: Path) -> None:
    images = np.full((2, 3, 2, 2), 255.0, dtype=np.float32)
    np.savez_compressed(tmp_path / "d.npz", images=images, labels=np.array([1, 0]))
    data = load_npy(tmp_path / "d.npz", value_range="0-255", layout="nchw")
    assert torch.equal(data.x, torch.ones(2, 3, 2, 2))


def test_labels_file_replaces_npz_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=IMAGES)
    data = load_npy(tmp_path / "d.npz", _save(tmp_path / "y.npy", LABELS))
    assert torch.equal(data.y, torch.from_numpy(LABELS))


def test_npz_without_known_keys_lists_the_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", pixels=IMAGES, targets=LABELS)
    with pytest.raises(DataError, match=r"expected arrays 'x' and 'y'.*\['pixels', 'targets'\]"):
        load_npy(tmp_path / "d.npz")


def test_missing_labels_for_npy(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"x\.npy.*labels="):
        load_npy(_save(tmp_path / "x.npy", IMAGES))


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file: .*nope\.npy"):
        load_npy(tmp_path / "nope.npy", tmp_path / "y.npy")
    with pytest.raises(DataError, match=r"no such file: .*y\.npy"):
        load_npy(_save(tmp_path / "x.npy", IMAGES), tmp_path / "y.npy")


def test_wrong_label_count(tmp_path: Path) -> None:
    with pytest.raises(ShapeError, match=r"y\.npy.*3 labels for 4 images"):
        load_npy(_save(tmp_path / "x.npy", IMAGES), _save(tmp_path / "y.npy", LABELS[:3]))


def test_negative_labels(tmp_path: Path) -> None:
    bad = np.array([0, 1, -2, 1])
    with pytest.raises(RangeError, match=">= 0, found -2"):
        load_npy(_save(tmp_path / "x.npy", IMAGES), _save(tmp_path / "y.npy", bad))


def test_nan_pixels(tmp_path: Path) -> None:
    images = np.zeros((2, 4, 4), dtype=np.float32)
    images[1, 2, 2] = np.nan
    np.savez(tmp_path / "d.npz", x=images, y=np.array([0, 1]))
    with pytest.raises(RangeError, match=r"d\.npz.*NaN"):
        load_npy(tmp_path / "d.npz")


def test_out_of_range_floats(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.full((2, 4, 4), 300.0), y=np.array([0, 1]))
    with pytest.raises(RangeError, match=r"d\.npz.*\[300, 300\]"):
        load_npy(tmp_path / "d.npz")


def test_pickled_object_array_is_never_loaded(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"x\.npy.*pickled object array"):
        load_npy(tmp_path / "x.npy", _save(tmp_path / "y.npy", LABELS[:2]))


def test_pickled_object_array_in_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=IMAGES, y=np.array([0, "a", None, 1], dtype=object))
    with pytest.raises(DataError, match=r"d\.npz.*array 'y'.*pickled object array"):
        load_npy(tmp_path / "d.npz")


def test_truncated_npy(tmp_path: Path) -> None:
    path = _save(tmp_path / "x.npy", IMAGES)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"x\.npy: cannot read"):
        load_npy(path, _save(tmp_path / "y.npy", LABELS))


def test_garbage_npy(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    path.write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match=r"x\.npy: not a NumPy"):
        load_npy(path, _save(tmp_path / "y.npy", LABELS))


def test_corrupt_npz(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "d.npz", x=IMAGES, y=LABELS)
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    raw[60:120] = bytes(60)
    (tmp_path / "d.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d\.npz"):
        load_npy(tmp_path / "d.npz")


def test_bool_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), dtype=bool), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"d\.npz.*dtype bool"):
        load_npy(tmp_path / "d.npz")


def test_empty_images(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((0, 4, 4), dtype=np.uint8), y=np.zeros(0, int))
    with pytest.raises(DataError, match=r"d\.npz.*no images"):
        load_npy(tmp_path / "d.npz")
