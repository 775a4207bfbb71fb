"""The one crash-safe write: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import pytest

from pixelguard.files import atomic_write, replaced_atomically, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "report.json", {"version": 1})
    before = path.read_bytes()

    def half_then_fail(handle):
        handle.write(b'{"version": 2, "trunc')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_path_based_writer_replaces_the_file_in_one_step(tmp_path):
    path = tmp_path / "deep" / "model.bin"
    with replaced_atomically(path) as tmp:
        assert tmp.parent == path.parent and not path.exists()
        tmp.write_bytes(b"weights")
    assert path.read_bytes() == b"weights"
    assert [p.name for p in path.parent.iterdir()] == ["model.bin"]
