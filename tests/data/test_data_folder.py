"""load_image_folder: class folders of PNG files on disk and in tar archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelguard.data.folder as folder_module
from pixelguard.data import load_image_folder
from pixelguard.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
GREY = {
    "cat": RNG.integers(0, 256, (2, 5, 4), dtype=np.uint8),
    "dog": RNG.integers(0, 256, (1, 5, 4), dtype=np.uint8),
}
RGB = {
    "cat": RNG.integers(0, 256, (2, 5, 4, 3), dtype=np.uint8),
    "dog": RNG.integers(0, 256, (1, 5, 4, 3), dtype=np.uint8),
}


def _write(root: Path, classes: dict[str, np.ndarray], suffix: str = ".png") -> Path:
    for name, images in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(images):
            Image.fromarray(pixels).save(root / name / f"{i:03d}{suffix}")
    return root


def _expected(classes: dict[str, np.ndarray]) -> torch.Tensor:
    stacked = np.concatenate([classes[name] for name in sorted(classes)])
    if stacked.ndim == 3:
        stacked = stacked[..., None]
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).float() / 255


def _tar(folder: Path, target: Path, arcname: str = "") -> Path:
    with tarfile.open(target, "w:gz" if target.name.endswith("gz") else "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, arcname=str(Path(arcname, path.relative_to(folder))), recursive=False)
    return target


def test_grey_folder(tmp_path: Path) -> None:
    data = load_image_folder(_write(tmp_path / "grey", GREY))
    assert torch.equal(data.x, _expected(GREY))
    assert data.y.tolist() == [0, 0, 1]
    assert data.class_names == ["cat", "dog"]
    assert data.source == str(tmp_path / "grey")


def test_rgb_folder(tmp_path: Path) -> None:
    data = load_image_folder(_write(tmp_path / "rgb", RGB))
    assert data.image_shape == (3, 5, 4)
    assert torch.equal(data.x, _expected(RGB))


def test_mixed_grey_and_rgb_reads_as_rgb(tmp_path: Path) -> None:
    root = _write(tmp_path / "mixed", {"cat": RGB["cat"], "dog": GREY["dog"]})
    data = load_image_folder(root)
    assert data.image_shape == (3, 5, 4)
    assert torch.equal(data.x[:2], _expected({"cat": RGB["cat"]}))
    assert torch.equal(data.x[2], _expected({"dog": GREY["dog"]})[0].expand(3, -1, -1))


def test_rgba_drops_alpha_and_other_files_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "rgba"
    (root / "cat").mkdir(parents=True)
    pixels = np.dstack([RGB["cat"][0], np.full((5, 4), 9, dtype=np.uint8)])
    Image.fromarray(pixels, mode="RGBA").save(root / "cat" / "a.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"junk")
    (root / "README.md").write_text("about")
    data = load_image_folder(root)
    assert len(data) == 1
    assert torch.equal(data.x, _expected({"cat": RGB["cat"][:1]}))


def test_limit_per_class_reads_the_first_files_by_name(tmp_path: Path) -> None:
    data = load_image_folder(_write(tmp_path / "grey", GREY), limit_per_class=1)
    assert data.y.tolist() == [0, 1]
    assert torch.equal(data.x[0], _expected(GREY)[0])
    assert "at most 1 per class" in data.source


@pytest.mark.parametrize("name", ["data.tar.gz", "data.tgz", "data.tar"])
def test_tar_of_a_folder(tmp_path: Path, name: str) -> None:
    folder = _write(tmp_path / "rgb", RGB)
    data = load_image_folder(_tar(folder, tmp_path / name))
    assert torch.equal(data.x, _expected(RGB))
    assert data.class_names == ["cat", "dog"]


def test_large_tar_is_streamed_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder_module, "IN_MEMORY_BYTES", 100)
    archive = _tar(_write(tmp_path / "rgb", RGB), tmp_path / "d.tar.gz")
    assert torch.equal(load_image_folder(archive).x, _expected(RGB))


def test_tar_with_a_wrapping_folder_and_limit(tmp_path: Path) -> None:
    folder = _write(tmp_path / "grey", GREY)
    data = load_image_folder(_tar(folder, tmp_path / "d.tar.gz", "mnist_png"), limit_per_class=1)
    assert data.class_names == ["cat", "dog"]
    assert torch.equal(data.x, _expected(GREY)[[0, 2]])


def test_folder_with_a_wrapping_folder(tmp_path: Path) -> None:
    data = load_image_folder(_write(tmp_path / "outer" / "inner", GREY).parent.parent)
    assert torch.equal(data.x, _expected(GREY))


def test_train_test_layout_in_a_tar(tmp_path: Path) -> None:
    root = tmp_path / "split"
    _write(root / "train", {"cat": RGB["cat"], "dog": RGB["dog"]}, suffix=".png")
    _write(root / "test", {"dog": RGB["dog"], "emu": RGB["cat"][:1]}, suffix=".png")
    archive = _tar(root, tmp_path / "split.tar.gz")
    test = load_image_folder(archive)
    assert test.class_names == ["cat", "dog", "emu"]
    assert test.y.tolist() == [1, 2]
    assert torch.equal(
        test.x, torch.cat([_expected({"d": RGB["dog"]}), _expected({"e": RGB["cat"][:1]})])
    )
    assert "test split" in test.source
    train = load_image_folder(archive, split="train")
    assert train.y.tolist() == [0, 0, 1]
    assert load_image_folder(archive, split="all").y.tolist() == [0, 0, 1, 1, 2]
    assert load_image_folder(archive, split="all", limit_per_class=1).y.tolist() == [0, 1, 2]


def test_missing_split(tmp_path: Path) -> None:
    _write(tmp_path / "split" / "train", GREY)
    with pytest.raises(DataError, match=r"no 'test' folder; found split folders: train"):
        load_image_folder(tmp_path / "split")


def test_mismatched_sizes_name_the_first_odd_file(tmp_path: Path) -> None:
    root = _write(tmp_path / "grey", GREY)
    Image.fromarray(np.zeros((6, 4), dtype=np.uint8)).save(root / "dog" / "big.png")
    with pytest.raises(DataError, match=r"dog/big\.png: image is 4x6 but .*cat/000\.png is 4x5"):
        load_image_folder(root)


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    root = _write(tmp_path / "grey", GREY)
    (root / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"dog/bad\.png: cannot read the image"):
        load_image_folder(root)


def test_truncated_image(tmp_path: Path) -> None:
    root = tmp_path / "t"
    (root / "cat").mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(RGB["cat"][0]).save(buffer, format="PNG")
    (root / "cat" / "a.png").write_bytes(buffer.getvalue()[:-30])
    with pytest.raises(DataError, match=r"cat/a\.png"):
        load_image_folder(root)


def test_images_at_the_top(tmp_path: Path) -> None:
    Image.fromarray(GREY["cat"][0]).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="directly in the top folder"):
        load_image_folder(tmp_path)


def test_no_images(tmp_path: Path) -> None:
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="no image files found"):
        load_image_folder(tmp_path)


def test_unclear_layout(tmp_path: Path) -> None:
    _write(tmp_path / "a", GREY)
    _write(tmp_path / "b" / "c" / "d", GREY)
    with pytest.raises(DataError, match="cannot tell the classes"):
        load_image_folder(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file or folder: .*nope"):
        load_image_folder(tmp_path / "nope")


def test_corrupt_tar(tmp_path: Path) -> None:
    archive = _tar(_write(tmp_path / "grey", GREY), tmp_path / "d.tar.gz")
    archive.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(DataError, match=r"d\.tar\.gz: cannot read the tar archive"):
        load_image_folder(archive)


def test_tar_members_are_never_written_and_unsafe_paths_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.BytesIO()
    Image.fromarray(GREY["cat"][0]).save(buffer, format="PNG")
    png = buffer.getvalue()
    archive_path = tmp_path / "evil.tar"
    with tarfile.open(archive_path, "w") as archive:
        for name in ("cat/ok.png", "../escape/x.png", "/abs/y.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png)
            archive.addfile(info, io.BytesIO(png))
        link = tarfile.TarInfo("cat/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    data = load_image_folder(archive_path)
    assert len(data) == 1 and data.class_names == ["cat"]
    assert list((tmp_path / "cwd").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "evil.tar"]


def test_bad_options(tmp_path: Path) -> None:
    root = _write(tmp_path / "grey", GREY)
    with pytest.raises(ConfigError, match="split"):
        load_image_folder(root, split="val")
    with pytest.raises(ConfigError, match="limit_per_class"):
        load_image_folder(root, limit_per_class=0)
