"""Atomic writes: the whole new content or the old one, no temporary files left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detector.atomic_file import fsync_tree, write_atomic


@pytest.mark.parametrize("durable", [True, False])
def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "sub" / "LIVE"
    write_atomic(target, b"v1\n", durable=durable)
    write_atomic(target, b"v2\n", durable=durable)
    assert target.read_bytes() == b"v2\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["LIVE"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "LIVE"
    write_atomic(target, b"old")

    def broken_replace(src: str, dst: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["LIVE"]


def test_fsync_tree_walks_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "f.bin").write_bytes(b"x")
    fsync_tree(tmp_path)  # no error on nested directories and files
