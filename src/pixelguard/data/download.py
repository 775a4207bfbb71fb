"""Downloads of the official MNIST and CIFAR-10 files, checked against their MD5 sums.

Nothing else in pixelguard touches the network; loaders only read local files.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from pixelguard.data.cifar10 import META, TEST_BATCH, TRAIN_BATCHES, WRAPPER
from pixelguard.errors import DataError

logger = logging.getLogger(__name__)

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://yann.lecun.com/exdb/mnist/",
)
"""Where the MNIST files are fetched from, in order."""
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcc592d9e1a",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
"""MNIST file names and their MD5 sums."""
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
TIMEOUT_S = 60.0
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reason(exc: Exception) -> object:
    """What went wrong: a URLError's reason, or the exception itself (HTTP status)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return exc.reason
    return exc


def _failed(what: str, reason: object, url: str) -> DataError:
    return DataError(
        f"could not download {what}: {reason}; download the files by hand from {url} "
        "and pass the directory"
    )


def _fetch(url: str, target: Path, md5: str) -> None:
    """Download ``url`` to ``target`` unless it is already there with the right MD5."""
    if target.is_file() and _md5(target) == md5:
        logger.info("%s is already downloaded", target)
        return
    partial = target.with_name(target.name + ".part")
    logger.info("downloading %s to %s", url, target)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except _NETWORK_ERRORS as exc:
        partial.unlink(missing_ok=True)
        raise _failed(target.name, _reason(exc), url) from exc
    got = _md5(partial)
    if got != md5:
        partial.unlink()
        raise _failed(target.name, f"its MD5 is {got}, expected {md5}", url)
    partial.replace(target)


def _make_folder(dest: Path) -> Path:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the download folder ({exc})") from exc
    return dest


def download_mnist(dest: str | Path) -> Path:
    """Download the four official MNIST IDX files (gzipped) into ``dest``.

    Files already present with the right MD5 are kept.

    Args:
        dest: the folder to download into; created if missing.

    Returns:
        ``dest``, ready for :func:`load_mnist`.

    Raises:
        DataError: the download failed or a file's MD5 is wrong, with the URL to
            fetch it by hand.
    """
    dest = _make_folder(Path(dest))
    for name, md5 in MNIST_FILES.items():
        error: DataError | None = None
        for mirror in MNIST_MIRRORS:
            try:
                _fetch(mirror + name, dest / name, md5)
            except DataError as exc:
                logger.warning("%s", exc)
                error = exc
            else:
                error = None
                break
        if error is not None:
            raise error
    return dest


def download_cifar10(dest: str | Path) -> Path:
    """Download the official CIFAR-10 python batches into ``dest/cifar-10-batches-py``.

    The archive's batch files are copied out by name (no path from the archive is
    used), then the archive is deleted. An already complete folder is kept.

    Args:
        dest: the folder to download into; created if missing.

    Returns:
        The ``cifar-10-batches-py`` folder, ready for :func:`load_cifar10`.

    Raises:
        DataError: the download failed, the MD5 is wrong or the archive is corrupt,
            with the URL to fetch it by hand.
    """
    dest = _make_folder(Path(dest))
    folder = dest / WRAPPER
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    if all((folder / name).is_file() for name in wanted):
        logger.info("%s is already complete", folder)
        return folder
    archive_path = dest / CIFAR10_URL.rsplit("/", 1)[1]
    _fetch(CIFAR10_URL, archive_path, CIFAR10_MD5)
    folder.mkdir(exist_ok=True)
    try:
        with tarfile.open(archive_path, mode="r:gz") as archive:
            for member in archive:
                parts = member.name.split("/")
                if member.isfile() and parts[-1] in wanted and parts[:-1] == [WRAPPER]:
                    reader = archive.extractfile(member)
                    if reader is not None:
                        (folder / parts[-1]).write_bytes(reader.read())
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise _failed(archive_path.name, f"cannot unpack it ({exc})", CIFAR10_URL) from exc
    missing = sorted(name for name in wanted if not (folder / name).is_file())
    if missing:
        raise _failed(archive_path.name, f"it lacks {', '.join(missing)}", CIFAR10_URL)
    archive_path.unlink()
    return folder
