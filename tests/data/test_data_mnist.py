"""load_mnist: IDX files, gzipped or plain, found in a folder or beside an images file."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelguard.data import load_mnist
from pixelguard.errors import ConfigError, DataError, ShapeError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
LABELS = np.array([7, 2, 1, 0, 4], dtype=np.uint8)


def _idx(array: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def _write(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        raw = _idx(array)
        (folder / f"{prefix}-{kind}-ubyte{suffix}").write_bytes(gzip.compress(raw) if gz else raw)
    return folder / f"{prefix}-images-idx3-ubyte{suffix}"


def _expected(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().unsqueeze(1) / 255


@pytest.mark.parametrize("gz", [True, False])
def test_folder_round_trip(tmp_path: Path, gz: bool) -> None:
    _write(tmp_path, "t10k", IMAGES, LABELS, gz)
    data = load_mnist(tmp_path)
    assert torch.equal(data.x, _expected(IMAGES))
    assert data.y.tolist() == LABELS.tolist()
    assert data.class_names == [str(d) for d in range(10)]
    assert data.source == f"{tmp_path} (test split)"


def test_images_file_finds_its_labels(tmp_path: Path) -> None:
    images = _write(tmp_path, "t10k", IMAGES, LABELS, gz=True)
    data = load_mnist(images)
    assert torch.equal(data.x, _expected(IMAGES))
    assert data.source == str(images)


def test_dot_separated_names(tmp_path: Path) -> None:
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(_idx(IMAGES))
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(_idx(LABELS))
    assert load_mnist(tmp_path).y.tolist() == LABELS.tolist()
    assert len(load_mnist(tmp_path / "t10k-images.idx3-ubyte")) == 5


def test_splits(tmp_path: Path) -> None:
    _write(tmp_path, "t10k", IMAGES, LABELS, gz=True)
    _write(tmp_path, "train", IMAGES[:2], LABELS[:2], gz=False)
    assert len(load_mnist(tmp_path, split="train")) == 2
    every = load_mnist(tmp_path, split="all")
    assert every.y.tolist() == LABELS[:2].tolist() + LABELS.tolist()


def test_missing_split_lists_the_files_found(tmp_path: Path) -> None:
    _write(tmp_path, "t10k", IMAGES, LABELS, gz=True)
    with pytest.raises(DataError, match=r"no MNIST train files.*found IDX files: t10k-images"):
        load_mnist(tmp_path, split="train")


def test_missing_labels_beside_an_images_file(tmp_path: Path) -> None:
    images = _write(tmp_path, "t10k", IMAGES, LABELS, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"no labels file t10k-labels-idx1-ubyte\[\.gz\]"):
        load_mnist(images)


def test_wrong_label_count(tmp_path: Path) -> None:
    _write(tmp_path, "t10k", IMAGES, LABELS[:4], gz=False)
    with pytest.raises(ShapeError, match="4 labels for 5 images"):
        load_mnist(tmp_path)


def test_bad_magic(tmp_path: Path) -> None:
    images = _write(tmp_path, "t10k", IMAGES, LABELS, gz=False)
    images.write_bytes(b"\x01\x02" + images.read_bytes()[2:])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: bad magic number 0102"):
        load_mnist(tmp_path)


def test_wrong_dimensions(tmp_path: Path) -> None:
    _write(tmp_path, "t10k", IMAGES, LABELS, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(IMAGES))
    with pytest.raises(DataError, match="has 3 dimensions; expected 1"):
        load_mnist(tmp_path)


def test_truncated_data(tmp_path: Path) -> None:
    images = _write(tmp_path, "t10k", IMAGES, LABELS, gz=False)
    images.write_bytes(images.read_bytes()[:-7])
    with pytest.raises(
        DataError, match=r"holds 53 bytes of data; expected 60 for shape \(5, 4, 3\)"
    ):
        load_mnist(tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    images = _write(tmp_path, "t10k", IMAGES, LABELS, gz=True)
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot read"):
        load_mnist(tmp_path)


def test_other_idx_types_and_more_than_ten_classes(tmp_path: Path) -> None:
    floats = (IMAGES / 255).astype(">f4")
    raw = struct.pack(">BBBB", 0, 0, 0x0D, 3) + struct.pack(">3I", *floats.shape) + floats.tobytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.array([0, 1, 2, 30, 4], np.uint8)))
    data = load_mnist(tmp_path)
    assert torch.equal(data.x, torch.from_numpy(floats.astype(np.float32)).unsqueeze(1))
    assert data.class_names is None and data.num_classes == 31


def test_missing_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_mnist(tmp_path / "nope")
    with pytest.raises(ConfigError, match="split"):
        load_mnist(tmp_path, split="valid")
