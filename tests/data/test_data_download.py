"""download_mnist / download_cifar10 with urllib replaced: no test touches the network."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import pixelguard.data.download as download_module
from pixelguard.data import download_cifar10, download_mnist, load_cifar10
from pixelguard.errors import DataError


def _offline(url: str, timeout: float) -> io.BytesIO:
    raise urllib.error.URLError("network is unreachable")


def _serving(files: dict[str, bytes]) -> Callable[[str, float], io.BytesIO]:
    def urlopen(url: str, timeout: float) -> io.BytesIO:
        return io.BytesIO(files[url.rsplit("/", 1)[1]])

    return urlopen


def test_mnist_network_failure_says_where_to_get_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_module.urllib.request, "urlopen", _offline)
    with pytest.raises(
        DataError,
        match=r"could not download train-images-idx3-ubyte\.gz: .*network is unreachable; "
        r"download the files by hand from https://\S+ and pass the directory",
    ):
        download_mnist(tmp_path / "mnist")
    assert not any(p.suffix == ".part" for p in (tmp_path / "mnist").iterdir())


def test_cifar10_network_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module.urllib.request, "urlopen", _offline)
    with pytest.raises(DataError, match=r"could not download cifar-10-python\.tar\.gz.*by hand"):
        download_cifar10(tmp_path)


def test_mnist_md5_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = dict.fromkeys(download_module.MNIST_FILES, b"not the real file")
    monkeypatch.setattr(download_module.urllib.request, "urlopen", _serving(files))
    with pytest.raises(DataError, match=r"its MD5 is \w+, expected f68b3c2d"):
        download_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mnist_download_and_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {name: name.encode() for name in download_module.MNIST_FILES}
    md5s = {name: hashlib.md5(body).hexdigest() for name, body in files.items()}
    monkeypatch.setattr(download_module, "MNIST_FILES", md5s)
    monkeypatch.setattr(download_module.urllib.request, "urlopen", _serving(files))
    assert download_mnist(tmp_path) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)
    monkeypatch.setattr(download_module.urllib.request, "urlopen", _offline)
    assert download_mnist(tmp_path) == tmp_path


def test_cifar10_download_unpacks_batches_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    batch = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]})
    meta = pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]})
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        names = [*download_module.TRAIN_BATCHES, download_module.TEST_BATCH]
        members = [(f"cifar-10-batches-py/{n}", batch) for n in names]
        members += [("cifar-10-batches-py/batches.meta", meta), ("../evil", b"x")]
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    body = buffer.getvalue()
    monkeypatch.setattr(download_module, "CIFAR10_MD5", hashlib.md5(body).hexdigest())
    monkeypatch.setattr(
        download_module.urllib.request, "urlopen", _serving({"cifar-10-python.tar.gz": body})
    )
    folder = download_cifar10(tmp_path / "dl")
    assert folder == tmp_path / "dl" / "cifar-10-batches-py"
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cifar-10-batches-py"]
    assert not (tmp_path / "evil").exists()
    data = load_cifar10(tmp_path / "dl")
    assert data.y.tolist() == [3] and data.class_names == [f"c{i}" for i in range(10)]
