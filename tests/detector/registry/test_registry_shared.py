"""A registry shared by two uids (an operator beside the retrain CronJob): either may promote."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from small_artifact import build_artifact

from detector.errors import RegistryError
from detector.registry import ModelRegistry
from detector.registry import storage as storage_module

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another uid can reach (pytest's own tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="kestrel-shared-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _nfs_flock(fd: int, operation: int) -> None:
    fcntl.lockf(fd, operation)  # as a Linux NFS client does: EBADF on a read-only descriptor


def _as_other_uid(action: str, root: Path, version: str, nfs: bool = False) -> str:
    """Run ``ModelRegistry(root).<action>`` in a forked child under uid ``nobody``; its outcome."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        os.close(read)
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            if nfs:
                storage_module.fcntl.flock = _nfs_flock  # type: ignore[assignment]
            registry = ModelRegistry(root)
            # verify=False: no model load in a forked child (torch's thread pools do not survive a fork)
            if action == "promote":
                registry.promote(version, "by another uid", verify=False)
            else:
                registry.rollback("back", verify=False)
            message = b"ok"
        except BaseException as exc:  # everything goes back to the parent
            message = f"{type(exc).__name__}: {exc}".encode()
        os.write(write, message)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as fh:
        return fh.read().decode()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another uid")
@pytest.mark.parametrize("nfs", [False, True])
def test_a_second_uid_takes_the_promotion_lock_the_first_created(shared_dir: Path, nfs: bool) -> None:
    """Found in review: the lock was opened read-write, so a lock file created 0644 by one uid
    refused every other uid's promote and roll-back with PermissionError."""
    root = shared_dir / "registry"
    registry = ModelRegistry(root)
    first, second = (registry.add(build_artifact(shared_dir / f"m{seed}", seed)) for seed in (1, 2))
    registry.promote(first, "first")  # creates the lock file, 0644, owned by root
    root.chmod(0o777)  # shared: the other uid may replace LIVE and append the history
    for name in ("LIVE", "history.jsonl", "pending.json"):
        (root / name).chmod(0o666)
    assert (root / ".lock").stat().st_mode & 0o777 == 0o666  # whatever the umask
    assert _as_other_uid("promote", root, second, nfs) == "ok"
    assert registry.live_version() == second
    assert _as_other_uid("rollback", root, "", nfs) == "ok"
    assert registry.live_version() == first


def test_the_lock_holds_where_flock_is_a_write_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review of the read-only lock: a Linux NFS client (the example deployment's registry
    volume) implements flock as a whole-file POSIX lock, which needs a descriptor open for writing."""
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.add(build_artifact(tmp_path / "m", 1))

    monkeypatch.setattr(storage_module.fcntl, "flock", _nfs_flock)
    registry.promote(version, "first")
    assert registry.live_version() == version


def test_a_lock_that_cannot_be_taken_is_a_registry_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.add(build_artifact(tmp_path / "m", 1))

    def refused(fd: int, operation: int) -> None:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(storage_module.fcntl, "flock", refused)
    with pytest.raises(RegistryError, match=r"cannot lock .*\.lock \(Bad file descriptor\): on NFS"):
        registry.promote(version, "first")


@pytest.mark.parametrize("dangling", [False, True])
def test_the_lock_never_follows_a_link_planted_by_another_writer(tmp_path: Path, dangling: bool) -> None:
    """Found in review: another uid allowed to write the registry could link `.lock` to a file the
    promoter owns (made 0666) or to a path where it does not exist yet (created there)."""
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.add(build_artifact(tmp_path / "m", 1))
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_text("secret")
        victim.chmod(0o600)
    lock = tmp_path / "registry" / ".lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    with pytest.raises(RegistryError, match="cannot open the registry lock"):
        registry.promote(version, "first")
    assert victim.exists() != dangling
    if not dangling:
        assert victim.stat().st_mode & 0o777 == 0o600


def test_a_lock_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.add(build_artifact(tmp_path / "m", 1))
    lock = tmp_path / "registry" / ".lock"
    lock.unlink(missing_ok=True)
    os.mkfifo(lock)
    with pytest.raises(RegistryError, match="is not a regular file"):
        registry.promote(version, "first")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to act as another uid")
def test_a_registry_another_uid_cannot_write_is_a_registry_error(shared_dir: Path) -> None:
    root = shared_dir / "registry"
    registry = ModelRegistry(root)
    version = registry.add(build_artifact(shared_dir / "m1", 1))
    (root / ".lock").unlink(missing_ok=True)  # not made yet: nobody would have to create it
    assert _as_other_uid("promote", root, version).startswith("RegistryError: cannot open or create the registry lock")


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_promote_and_rollback_never_create_a_missing_registry(tmp_path: Path, action: str) -> None:
    """Found in review: the lock made the directory first, so a mistyped path became an empty registry."""
    registry = ModelRegistry(tmp_path / "regsitry")
    with pytest.raises(RegistryError, match="no registry at"):
        registry.promote("v1", "typo") if action == "promote" else registry.rollback("typo")
    assert not (tmp_path / "regsitry").exists()
