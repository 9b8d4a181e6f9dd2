"""Where ``write_artifact`` may write: a new path, an empty directory or an earlier artifact; it
refuses (and leaves untouched) anything else, and writes files a worker under another uid can read."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_model import TinyModel

from detector.artifact import MANIFEST, WEIGHTS, check_artifact_target, read_artifact, write_artifact
from detector.errors import ArtifactError
from detector.model import Detector

Content = tuple[dict[str, Any], dict[str, torch.Tensor]]  # the `content` fixture (conftest.py)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones too) with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def test_refuses_a_directory_that_is_not_an_artifact_and_removes_nothing(content: Content, tmp_path: Path) -> None:
    target = tmp_path / "work"
    (target / "other_model").mkdir(parents=True)
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    (target / "other_model" / "weights.bin").write_bytes(b"\x00\x01")
    before = tree(tmp_path)
    with pytest.raises(ArtifactError, match=r"work holds other files and is not a model directory \(notes.txt, other_"):
        write_artifact(target, *content)
    assert tree(tmp_path) == before


def test_refuses_an_artifact_directory_that_also_holds_other_files(content: Content, tmp_path: Path) -> None:
    target = write_artifact(tmp_path / "model", *content)
    (target / "notes.txt").write_text("keep me", encoding="utf-8")
    before = tree(tmp_path)
    with pytest.raises(ArtifactError, match=r"holds other files .*\(notes.txt\)"):
        write_artifact(target, *content)
    assert tree(tmp_path) == before


def test_refuses_a_directory_with_a_manifest_that_is_not_ours(content: Content, tmp_path: Path) -> None:
    target = tmp_path / "webapp"
    target.mkdir()
    (target / MANIFEST).write_text('{"name": "app", "icons": []}', encoding="utf-8")
    (target / "index.html").write_text("<html/>", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"holds other files .*\(index.html, manifest.json\)"):
        write_artifact(target, *content)
    assert (target / MANIFEST).read_text(encoding="utf-8") == '{"name": "app", "icons": []}'
    (target / "index.html").unlink()  # found in review: a foreign manifest alone was replaced
    with pytest.raises(ArtifactError, match=r"holds other files .*\(manifest.json\)"):
        write_artifact(target, *content)
    assert [p.name for p in target.iterdir()] == [MANIFEST]


def test_refuses_a_file_and_keeps_it(content: Content, tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.write_text("not a model", encoding="utf-8")
    with pytest.raises(ArtifactError, match="model is a file, not a model directory"):
        write_artifact(target, *content)
    assert target.read_text(encoding="utf-8") == "not a model"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no hidden .model.old, no temporary sibling


def test_refuses_a_path_under_a_file(content: Content, tmp_path: Path) -> None:
    (tmp_path / "notes").write_text("x", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"cannot be created: .*notes is a file"):
        write_artifact(tmp_path / "notes" / "deeper" / "model", *content)
    assert [p.name for p in tmp_path.iterdir()] == ["notes"]


def test_refuses_an_unwritable_place_before_writing(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, for whom every directory is writable: pretend this one is not.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != tmp_path.resolve() and real_access(p, mode))
    with pytest.raises(ArtifactError, match=f"no write permission in {tmp_path.resolve()}"):
        check_artifact_target(tmp_path / "new" / "model")
    with pytest.raises(ArtifactError, match="no write permission"):
        write_artifact(tmp_path / "model", *content)
    assert list(tmp_path.iterdir()) == []


def test_fills_an_empty_directory_in_place(content: Content, tmp_path: Path) -> None:
    target = tmp_path / "mount"
    target.mkdir()
    inode = target.stat().st_ino
    write_artifact(target, *content)
    assert target.stat().st_ino == inode  # the same directory (a mount point, a working directory)
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, WEIGHTS]
    assert [p.name for p in tmp_path.iterdir()] == ["mount"]
    read_artifact(target)


def test_writes_to_the_working_directory_given_as_dot(content: Content, inside: Path) -> None:
    assert write_artifact(Path("."), *content) == Path(".")
    read_artifact(inside)
    # Found in review: replacing the working directory itself left the shell in a deleted one.
    with pytest.raises(ArtifactError, match="is the working directory"):
        write_artifact(Path("."), content[0] | {"training": {"second": True}}, content[1])
    assert read_artifact(inside)[0].get("training") != {"second": True}
    assert sorted(p.name for p in inside.parent.iterdir()) == ["here"]
    with pytest.raises(ArtifactError, match="is the working directory"):
        write_artifact(Path("../here"), *content)  # the same directory, by another path


def test_writes_readable_modes_whatever_the_umask(content: Content, tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        target = write_artifact(tmp_path / "model", *content)
        write_artifact(target, *content)  # the replacing path too
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    for name in (MANIFEST, WEIGHTS):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644


def test_detector_save_refuses_a_foreign_directory(tiny_model: TinyModel, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ArtifactError, match="holds other files"):
        Detector.load(tiny_model.path).save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
