"""load_data: dispatch on the spec, options, and the real data sets beside the checkout."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelguard.data as data_package
from pixelguard.data import load_data
from pixelguard.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"
"""``../shared/datasets`` beside the checkout; absent on users' machines."""


def _needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def test_public_names() -> None:
    assert sorted(data_package.__all__) == sorted(
        [
            "Dataset",
            "load_data",
            "load_digits",
            "to_canonical",
            "load_npy",
            "load_image_folder",
            "load_mnist",
            "load_cifar10",
            "download_mnist",
            "download_cifar10",
            "read_class_names",
            "nearest_class_names",
            "resolve_class",
        ]
    )


def test_digits_is_the_embedded_default() -> None:
    data = load_data("digits")
    assert data.x.shape == (360, 1, 8, 8) and data.source == "digits (test split)"
    assert load_data("digits", split="all", limit_per_class=3).y.tolist() == [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ]  # fmt: skip


def test_npy_and_npz(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", np.array([1, 0]))
    data = load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy", layout="nchw")
    assert torch.equal(data.x, torch.from_numpy(images).float() / 255)
    np.savez(tmp_path / "d.npz", x=images, y=np.array([1, 0]))
    assert len(load_data(str(tmp_path / "d.npz"), limit_per_class=1)) == 2


def test_folder_and_tar(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((2, 2), i, np.uint8)).save(tmp_path / "f" / name / f"{i}.png")
    data = load_data(tmp_path / "f", limit_per_class=2)
    assert data.y.tolist() == [0, 0, 1, 1] and data.class_names == ["a", "b"]
    with tarfile.open(tmp_path / "f.tgz", "w:gz") as archive:
        archive.add(tmp_path / "f", arcname="f")
    assert torch.equal(load_data(tmp_path / "f.tgz", limit_per_class=2).x, data.x)


def test_mnist_folder_and_file(tmp_path: Path) -> None:
    images = np.zeros((2, 3, 3), np.uint8)
    labels = np.array([4, 2], np.uint8)
    head = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">3I", 2, 3, 3)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + images.tobytes()))
    label_head = struct.pack(">BBBBI", 0, 0, 8, 1, 2)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(label_head + labels.tobytes())
    assert load_data(tmp_path).y.tolist() == [4, 2]
    assert load_data(tmp_path / "t10k-images-idx3-ubyte.gz").y.tolist() == [4, 2]


def test_cifar10_folder(tmp_path: Path) -> None:
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [9, 1]}, f)
    data = load_data(tmp_path)
    assert data.y.tolist() == [9, 1] and data.class_names is not None
    assert load_data(tmp_path, limit_per_class=1).y.tolist() == [9, 1]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"no such file or folder: .*mnist \(expected a path or 'digits'\)"
    ):
        load_data(tmp_path / "mnist")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt: unrecognised data file"):
        load_data(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="apply only to .npy/.npz"):
        load_data(tmp_path, labels=tmp_path / "y.npy")
    with pytest.raises(ConfigError, match="do not apply to 'digits'"):
        load_data("digits", layout="nhwc")
    with pytest.raises(ConfigError, match="split"):
        load_data("digits", split="validation")
    with pytest.raises(ConfigError, match="limit_per_class"):
        load_data("digits", limit_per_class=-1)


def test_real_mnist_test_set() -> None:
    data = load_data(_needs(SHARED / "mnist"))
    assert data.x.shape == (10_000, 1, 28, 28)
    assert data.y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(data.y).tolist()[:3] == [980, 1135, 1032]
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0


def test_real_cifar10_jpeg_tarball() -> None:
    data = load_data(_needs(SHARED / "cifar10-jpg.tar.gz"), split="test", limit_per_class=2)
    assert data.x.shape == (20, 3, 32, 32)
    assert data.class_names == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]  # fmt: skip
    assert data.y.tolist() == [c for c in range(10) for _ in range(2)]
    assert float(data.x.std()) > 0.05
