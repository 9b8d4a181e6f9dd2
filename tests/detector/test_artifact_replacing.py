"""How ``write_artifact`` replaces an earlier artifact: in one swap (a reader sees the old model or
the new one), the old one kept when anything fails, in place at a mount point, and only when the
manifest there is verifiably ours."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_model import TinyModel

from detector import artifact_install
from detector.artifact import MANIFEST, WEIGHTS, check_artifact_target, read_artifact, write_artifact
from detector.atomic_file import exchange_paths
from detector.errors import ArtifactError

Content = tuple[dict[str, Any], dict[str, torch.Tensor]]  # the `content` fixture (conftest.py)


@pytest.fixture
def content(tiny_model: TinyModel) -> Content:
    manifest, tensors = read_artifact(tiny_model.path)
    body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
    return body, tensors


def other(content: Content) -> Content:
    """The same artifact with another model version, so old and new are told apart."""
    return {**content[0], "model_version": "second"}, content[1]


def version_at(path: Path) -> str:
    return str(read_artifact(path)[0]["model_version"])


def test_exchange_paths_swaps_two_directories(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b" / "x").write_text("b")
    exchange_paths(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a" / "x").read_text() == "b" and (tmp_path / "b" / "x").read_text() == "a"


def test_a_reader_during_the_replacement_sees_the_old_or_the_new_model(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_artifact(tmp_path / "model", *content)
    seen: list[str] = []
    real = artifact_install.exchange_paths

    def exchange(first: Path, second: Path) -> None:
        seen.append(version_at(target))  # just before the swap
        real(first, second)
        seen.append(version_at(target))  # just after it

    monkeypatch.setattr(artifact_install, "exchange_paths", exchange)
    write_artifact(target, *other(content))
    assert seen == [content[0]["model_version"], "second"]
    assert version_at(target) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old one removed, no leftovers


def test_a_foreign_manifest_listing_user_files_is_not_taken_for_a_model(content: Content, tmp_path: Path) -> None:
    target = tmp_path / "export"
    (target / "raw").mkdir(parents=True)
    manifest = {"format_version": 1, "files": {"results.csv": "md5:abc", "raw": "dir"}}
    (target / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (target / "results.csv").write_text("id,score\n1,0.5\n", encoding="utf-8")
    (target / "raw" / "capture.pcap").write_bytes(b"\xd4\xc3\xb2\xa1")
    with pytest.raises(ArtifactError, match="holds other files"):
        write_artifact(target, *content)
    assert (target / "results.csv").exists() and (target / "raw" / "capture.pcap").exists()


def test_a_model_whose_manifest_lists_a_directory_is_not_replaced(content: Content, tmp_path: Path) -> None:
    target = write_artifact(tmp_path / "model", *content)
    (target / WEIGHTS).unlink()
    (target / WEIGHTS).mkdir()  # a name the manifest lists, now a directory someone made
    (target / WEIGHTS / "keep").write_text("mine")
    with pytest.raises(ArtifactError, match="holds other files"):
        write_artifact(target, *content)
    assert (target / WEIGHTS / "keep").read_text() == "mine"


def _mounted(target: Path, *mount_args: str) -> Iterator[Path]:
    """``target`` with ``mount *mount_args target`` over it, unmounted after; skipped where mounting
    is not allowed (it needs root)."""
    try:
        mounted = subprocess.run(["mount", *mount_args, str(target)], capture_output=True, check=False)
    except OSError:
        pytest.skip("no mount command here")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here (needs root): {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted at a directory (a volume)."""
    target = tmp_path / "models"
    target.mkdir()
    yield from _mounted(target, "-t", "tmpfs", "tmpfs")


def test_an_empty_mount_point_is_filled(content: Content, mount_point: Path) -> None:
    check_artifact_target(mount_point)
    write_artifact(mount_point, *content)
    assert version_at(mount_point) == content[0]["model_version"]
    assert sorted(p.name for p in mount_point.iterdir()) == [MANIFEST, WEIGHTS]


def test_a_model_at_a_mount_point_is_replaced_in_place(content: Content, mount_point: Path) -> None:
    write_artifact(mount_point, *content)
    check_artifact_target(mount_point)
    write_artifact(mount_point, *other(content))
    assert version_at(mount_point) == "second"
    assert sorted(p.name for p in mount_point.iterdir()) == [MANIFEST, WEIGHTS]
    # built inside the volume: a container's read-only root file system (the parent) is not written
    assert sorted(p.name for p in mount_point.parent.iterdir()) == ["models"]


_KILLED_WHILE_WRITING = """
import os, sys
from detector import artifact
from detector.artifact import read_artifact, write_artifact
manifest, tensors = read_artifact(sys.argv[1])
body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
def killed(*args, **kwargs):
    os._exit(9)  # SIGKILL, an OOM kill or a power cut while the weights are written
artifact.save_file = killed
write_artifact(sys.argv[2], body, tensors)
"""


def _kill_while_writing(model: Path, target: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _KILLED_WHILE_WRITING, str(model), str(target)], cwd=root, check=False)
    assert done.returncode == 9


def test_a_write_killed_into_an_empty_directory_does_not_block_the_next(
    tiny_model: TinyModel, content: Content, tmp_path: Path
) -> None:
    """Found in review of the mount-point change: the killed write's build directory was left in
    the target, and every later write was refused ("holds other files (.incoming.../)")."""
    target = tmp_path / "model"
    target.mkdir()
    _kill_while_writing(tiny_model.path, target)
    write_artifact(target, *content)
    assert version_at(target) == content[0]["model_version"]
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, WEIGHTS]


def test_a_write_killed_at_a_volume_keeps_the_model_and_the_next_replaces_it(
    tiny_model: TinyModel, content: Content, mount_point: Path
) -> None:
    write_artifact(mount_point, *content)
    _kill_while_writing(tiny_model.path, mount_point)
    assert version_at(mount_point) == content[0]["model_version"]
    write_artifact(mount_point, *other(content))
    assert version_at(mount_point) == "second"
    assert sorted(p.name for p in mount_point.iterdir()) == [MANIFEST, WEIGHTS]


@pytest.fixture
def bind_mount(tmp_path: Path) -> Iterator[Path]:
    """A directory bind-mounted from the same file system (same st_dev: not seen as a mount)."""
    source, target = tmp_path / "source", tmp_path / "models"
    source.mkdir()
    target.mkdir()
    yield from _mounted(target, "--bind", str(source))


def test_a_model_at_a_bind_mount_of_the_same_file_system_is_filled_and_replaced(
    content: Content, bind_mount: Path
) -> None:
    """Found in review: the swap was tried and failed with EBUSY, after training."""
    write_artifact(bind_mount, *content)
    check_artifact_target(bind_mount)
    write_artifact(bind_mount, *other(content))
    assert version_at(bind_mount) == "second"
    assert sorted(p.name for p in bind_mount.iterdir()) == [MANIFEST, WEIGHTS]


def test_lost_and_found_at_a_volumes_root_is_not_another_file(content: Content, mount_point: Path) -> None:
    """An ext4 volume's root holds lost+found: such a volume was refused as "holds other files"."""
    (mount_point / "lost+found").mkdir()
    write_artifact(mount_point, *content)
    write_artifact(mount_point, *other(content))
    assert version_at(mount_point) == "second"
    assert sorted(p.name for p in mount_point.iterdir()) == ["lost+found", MANIFEST, WEIGHTS]


@pytest.mark.parametrize("name", [".kestrel-build-abcdefgh", ".kestrel-build-notes", ".incoming.uploads"])
def test_a_directory_named_like_a_build_directory_but_not_one_is_never_removed(
    content: Content, tmp_path: Path, name: str
) -> None:
    """Found in review: any ``.incoming.*`` directory counted as a killed write's and was deleted."""
    empty_looking = tmp_path / "out"
    (empty_looking / name).mkdir(parents=True)
    (empty_looking / name / "capture.pcap").write_bytes(b"user data")
    with pytest.raises(ArtifactError, match="holds other files"):
        write_artifact(empty_looking, *content)
    beside_a_model = write_artifact(tmp_path / "model", *content)
    (beside_a_model / name).mkdir()
    (beside_a_model / name / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="holds other files"):
        write_artifact(beside_a_model, *other(content))
    assert (empty_looking / name / "capture.pcap").exists() and (beside_a_model / name / "keep.txt").exists()


_KILLED_BETWEEN_THE_RENAMES = """
import os, sys
from pathlib import Path
from detector.artifact import read_artifact, write_artifact
manifest, tensors = read_artifact(sys.argv[1])
body = {k: v for k, v in manifest.items() if k not in ("format_version", "files", "manifest_sha256")}
real = Path.rename
def rename(self, dst):
    if Path(dst) == Path(sys.argv[2]).resolve() / "manifest.json":
        os._exit(9)  # killed between the weights and the manifest of an in-place fill
    return real(self, dst)
Path.rename = rename
write_artifact(sys.argv[2], body, tensors)
"""


@pytest.mark.parametrize("where", ["volume", "bind mount", "empty directory"])
def test_a_fill_killed_between_its_renames_is_completed_by_the_next_write(
    tiny_model: TinyModel, content: Content, tmp_path: Path, request: pytest.FixtureRequest, where: str
) -> None:
    """Found in review: the weights alone (and the build directory) were left, and every later write
    was refused ("holds other files (weights.safetensors)")."""
    if where == "empty directory":
        target = tmp_path / "model"
        target.mkdir()
    else:
        target = request.getfixturevalue("mount_point" if where == "volume" else "bind_mount")
        write_artifact(target, *content)
    root = Path(__file__).resolve().parents[2]
    argv = [sys.executable, "-c", _KILLED_BETWEEN_THE_RENAMES, str(tiny_model.path), str(target)]
    assert subprocess.run(argv, cwd=root, check=False).returncode == 9
    write_artifact(target, *other(content))
    assert version_at(target) == "second"
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, WEIGHTS]


def test_without_a_swap_the_model_is_filled_in_place_and_no_sibling_is_touched(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: without the swap the old model went aside as `.NAME.old`, removed first
    whatever it held (and a kill between the two renames left no model); now it is filled in place."""
    target = write_artifact(tmp_path / "model", *content)
    (tmp_path / ".model.old").mkdir()
    (tmp_path / ".model.old" / "keep.txt").write_text("mine")

    def no_exchange(first: Path, second: Path) -> None:
        raise OSError(errno.EPERM, "seccomp")

    monkeypatch.setattr(artifact_install, "exchange_paths", no_exchange)
    write_artifact(target, *other(content))
    assert version_at(target) == "second" and (tmp_path / ".model.old" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.old", "model"]


def test_without_a_swap_a_bind_mount_is_filled_in_place(
    content: Content, bind_mount: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: with renameat2 refused (a sandbox), moving the mount aside failed with EBUSY."""
    write_artifact(bind_mount, *content)

    def no_exchange(first: Path, second: Path) -> None:
        raise OSError(errno.EPERM, "seccomp")

    monkeypatch.setattr(artifact_install, "exchange_paths", no_exchange)
    write_artifact(bind_mount, *other(content))
    assert version_at(bind_mount) == "second"


def test_an_empty_directory_is_filled_from_inside_and_its_parent_is_not_needed(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: built beside it, an empty directory under a parent the user cannot write
    was refused."""
    target = tmp_path / "model"
    target.mkdir()
    made: list[Path] = []
    real = artifact_install.new_build_dir

    def spy(out_dir: Path, inside: bool) -> Path:
        made.append(real(out_dir, inside).resolve())
        return made[-1]

    monkeypatch.setattr(artifact_install, "new_build_dir", spy)
    monkeypatch.setattr("detector.artifact.new_build_dir", spy)
    write_artifact(target, *content)
    assert [p.parent for p in made] == [target.resolve()]
    assert version_at(target) == content[0]["model_version"]


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM])
def test_every_kind_of_missing_swap_fills_in_place(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    target = write_artifact(tmp_path / "model", *content)

    def refused(first: Path, second: Path) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(artifact_install, "exchange_paths", refused)
    write_artifact(target, *other(content))
    assert version_at(target) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, WEIGHTS]


def test_missing_parents_are_made_readable_whatever_the_umask(content: Content, tmp_path: Path) -> None:
    """Found in review: under umask 077 the parents made for a new model were 0700, so a worker
    under another uid could not reach the 0755 model inside."""
    old = os.umask(0o077)
    try:
        write_artifact(tmp_path / "a" / "b" / "model", *content)
    finally:
        os.umask(old)
    assert [(tmp_path / p).stat().st_mode & 0o777 for p in ("a", "a/b", "a/b/model")] == [0o755] * 3


def test_the_working_directory_at_a_volume_is_replaced_in_place(
    content: Content, mount_point: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: refused as "the working directory", though filling a volume deletes nothing."""
    write_artifact(mount_point, *content)
    monkeypatch.chdir(mount_point)
    write_artifact(Path("."), *other(content))
    assert version_at(mount_point) == "second"


def test_an_unreadable_target_is_an_artifact_error(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a PermissionError from listing the target (its mode, or another uid's)."""
    target = tmp_path / "model"
    target.mkdir()

    def denied(path: object) -> list[str]:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(artifact_install.os, "listdir", denied)
    with pytest.raises(ArtifactError, match=r"model cannot be read \(Permission denied\); nothing was written"):
        write_artifact(target, *content)


def test_a_model_whose_parent_this_user_cannot_write_is_replaced_in_place(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found in review: a directory an administrator made for the user under a parent it cannot
    write was filled once (an empty directory) and refused ever after (its parent needed)."""
    target = write_artifact(tmp_path / "model", *content)
    real_access = os.access

    def access(path: object, mode: int) -> bool:
        return False if Path(str(path)).resolve() == tmp_path.resolve() else real_access(path, mode)

    monkeypatch.setattr("detector.artifact.os.access", access)
    made: list[Path] = []
    real = artifact_install.new_build_dir

    def spy(out_dir: Path, inside: bool) -> Path:
        made.append(real(out_dir, inside))
        return made[-1]

    monkeypatch.setattr("detector.artifact.new_build_dir", spy)
    check_artifact_target(target)
    write_artifact(target, *other(content))
    assert [p.parent for p in made] == [target.resolve()]
    assert version_at(target) == "second"


@pytest.mark.parametrize("failing", [WEIGHTS, MANIFEST])
def test_an_error_while_filling_in_place_puts_the_earlier_model_back(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """Found in review: the old manifest was removed first, and an error renaming the new files in
    (EIO, EPERM) left the target with no model."""
    target = write_artifact(tmp_path / "model", *content)
    before = {n: (target / n).read_bytes() for n in (MANIFEST, WEIGHTS)}

    def no_exchange(first: Path, second: Path) -> None:
        raise OSError(errno.ENOSYS, "no renameat2")

    real_rename = Path.rename

    def rename(self: Path, dst: Any) -> Any:
        if Path(dst) == target.resolve() / failing:
            raise OSError(errno.EIO, "Input/output error")
        return real_rename(self, dst)

    monkeypatch.setattr(artifact_install, "exchange_paths", no_exchange)
    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="Input/output error"):
        write_artifact(target, *other(content))
    monkeypatch.undo()
    assert {n: (target / n).read_bytes() for n in (MANIFEST, WEIGHTS)} == before
    assert version_at(target) == content[0]["model_version"]
    write_artifact(target, *other(content))  # and the next write replaces it
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, WEIGHTS]


def test_a_directory_named_like_the_weights_beside_a_leftover_build_is_refused_up_front(
    content: Content, tmp_path: Path
) -> None:
    target = tmp_path / "model"
    (target / ".kestrel-build-abcdefgh").mkdir(parents=True)
    (target / WEIGHTS).mkdir()
    (target / WEIGHTS / "mine").write_text("keep")
    with pytest.raises(ArtifactError, match="holds other files"):
        check_artifact_target(target)
    assert (target / WEIGHTS / "mine").read_text() == "keep"


def test_a_target_that_cannot_be_resolved_or_reached_is_an_artifact_error(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ArtifactError, match="cannot be used as a model directory"):
        write_artifact(loop / "model", *content)
    real_exists = Path.exists

    def unsearchable(self: Path, *args: Any, **kwargs: Any) -> bool:
        if self.name == "model":
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", unsearchable)
    with pytest.raises(ArtifactError, match=r"model cannot be read \(Permission denied\)"):
        check_artifact_target(tmp_path / "model")


def changed(content: Content) -> Content:
    """Another model: another version and other weights (a mix of old and new would not verify)."""
    tensors = {k: v.clone() for k, v in content[1].items()}
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.numel() > 0)
    tensors[name] += 1.0
    return {**content[0], "model_version": "second"}, tensors


@pytest.mark.parametrize("after", [WEIGHTS, MANIFEST])
def test_an_interrupt_right_after_a_rename_of_the_fill_leaves_one_whole_model(
    content: Content, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """Found in review: a Ctrl-C arriving once the new weights were renamed in was taken for a
    rename not made, and the old manifest went back over the new weights (and the old weights were lost)."""
    target = write_artifact(tmp_path / "model", *content)

    def no_exchange(first: Path, second: Path) -> None:
        raise OSError(errno.ENOSYS, "no renameat2")

    real_rename = Path.rename
    interrupted: list[Path] = []

    def rename(self: Path, dst: Any) -> Any:
        done = real_rename(self, dst)
        if Path(dst) == target.resolve() / after and not interrupted:
            interrupted.append(Path(dst))
            raise KeyboardInterrupt  # once: the rename is made, then Ctrl-C
        return done

    monkeypatch.setattr(artifact_install, "exchange_paths", no_exchange)
    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        write_artifact(target, *changed(content))
    monkeypatch.undo()
    expected = content[0]["model_version"] if after == WEIGHTS else "second"
    assert version_at(target) == expected  # the old model whole, or the new one whole
    left = sorted(p.name for p in target.iterdir() if not p.name.startswith(".kestrel-build-"))
    assert left == [MANIFEST, WEIGHTS]  # (a build directory the next write removes may remain)
    write_artifact(target, *other(content))
    assert sorted(p.name for p in target.iterdir()) == [MANIFEST, WEIGHTS]


def test_a_model_in_a_sticky_directory_that_the_user_can_write_is_replaced(content: Content, tmp_path: Path) -> None:
    """A review of an earlier check: refusing every model of another user in a sticky directory
    refused volumes and group-writable models the fill handles."""
    shared = tmp_path / "shared"
    shared.mkdir()
    target = write_artifact(shared / "model", *content)
    shared.chmod(0o1777)
    write_artifact(target, *other(content))
    assert version_at(target) == "second"
