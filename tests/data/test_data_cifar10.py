"""load_cifar10: python batches through the restricted unpickler, and refused pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pixelguard.data import load_cifar10
from pixelguard.data.cifar10 import CLASS_NAMES
from pixelguard.errors import DataError, RangeError, ShapeError

RNG = np.random.default_rng(0)


def _batch(folder: Path, name: str, n: int, protocol: int = pickle.DEFAULT_PROTOCOL) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, n)]
    batch = {b"batch_label": b"fake", b"labels": labels, b"data": data, b"filenames": [b"f"] * n}
    with (folder / name).open("wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return data


def _expected(*datas: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(datas)).reshape(-1, 3, 32, 32).float() / 255


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_test_batch_round_trip(tmp_path: Path, protocol: int) -> None:
    data = _batch(tmp_path, "test_batch", 3, protocol)
    loaded = load_cifar10(tmp_path)
    assert torch.equal(loaded.x, _expected(data))
    assert loaded.image_shape == (3, 32, 32)
    assert loaded.class_names == CLASS_NAMES
    assert torch.equal(
        loaded.x[1, 2, 5, 7], torch.tensor(data[1, 2 * 1024 + 5 * 32 + 7] / 255).float()
    )


def test_train_batches_in_numeric_order_and_meta_names(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    second = _batch(folder, "data_batch_2", 2)
    first = _batch(folder, "data_batch_1", 1)
    test = _batch(folder, "test_batch", 1)
    names = [f"c{i}".encode() for i in range(10)]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)
    train = load_cifar10(tmp_path, split="train")
    assert torch.equal(train.x, _expected(first, second))
    assert train.class_names == [f"c{i}" for i in range(10)]
    assert torch.equal(load_cifar10(tmp_path, split="all").x, _expected(first, second, test))
    single = load_cifar10(folder / "data_batch_2")
    assert torch.equal(single.x, _expected(second)) and single.source == str(
        folder / "data_batch_2"
    )


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, f)
    with pytest.raises(DataError, match=r"test_batch: refusing to unpickle (posix|os|nt)\.system"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_pickled_class_instance_is_refused(tmp_path: Path) -> None:
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": Path("x"), b"labels": [0]}, f)
    with pytest.raises(DataError, match="refusing to unpickle pathlib"):
        load_cifar10(tmp_path)


def test_missing_split_lists_files(tmp_path: Path) -> None:
    _batch(tmp_path, "test_batch", 1)
    with pytest.raises(DataError, match=r"no CIFAR-10 train batches.*found test_batch"):
        load_cifar10(tmp_path, split="train")


def test_wrong_label_count(tmp_path: Path) -> None:
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, f)
    with pytest.raises(ShapeError, match="1 labels for 2 images"):
        load_cifar10(tmp_path)


def test_wrong_data_shape(tmp_path: Path) -> None:
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 1024), np.uint8), b"labels": [1, 2]}, f)
    with pytest.raises(ShapeError, match=r"\(2, 1024\); expected \(N, 3072\)"):
        load_cifar10(tmp_path)


def test_missing_entries(tmp_path: Path) -> None:
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"fine_labels": [1]}, f)
    with pytest.raises(
        DataError, match=r"expected entries 'data' and 'labels', found \['fine_labels'\]"
    ):
        load_cifar10(tmp_path)


def test_truncated_pickle(tmp_path: Path) -> None:
    _batch(tmp_path, "test_batch", 2)
    path = tmp_path / "test_batch"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"test_batch: cannot read the pickle"):
        load_cifar10(tmp_path)


def test_negative_labels(tmp_path: Path) -> None:
    with (tmp_path / "test_batch").open("wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, -3]}, f)
    with pytest.raises(RangeError, match=r"\(test split\): labels must be >= 0, found -3"):
        load_cifar10(tmp_path)
