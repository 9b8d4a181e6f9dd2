"""Moving a finished artifact into place (used by :func:`detector.artifact.write_artifact`).

A reader of the target sees the old model or the new one, never a mix:

* a new target: the build directory (a sibling) renamed to it;
* an earlier artifact: swapped with the build directory in one step (``renameat2`` with
  ``RENAME_EXCHANGE``);
* an empty directory, a mount point (a volume, whose directory cannot be renamed), an earlier
  artifact whose parent this user cannot write, or where the system has no swap: filled in place,
  the old manifest removed first and the new one renamed in last (a reader in between finds no
  model; a write killed in between is completed by the next one).

Build directories inside a target are named ``.kestrel-build-XXXXXXXX`` and hold nothing but an
artifact's two files. One left by a killed write is recognised by exactly that, and removed by the
next write; a directory of that name holding anything else is the user's, and is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from detector.artifact_files import MANIFEST, WEIGHTS
from detector.atomic_file import exchange_paths, fsync_dir, fsync_tree, write_atomic

#: Prefix of a build directory inside a target; ``mkdtemp`` adds 8 characters of ``[a-z0-9_]``.
BUILD_PREFIX = ".kestrel-build-"
_BUILD_NAME = re.compile(re.escape(BUILD_PREFIX) + r"[a-z0-9_]{8}")
#: In a build directory during a fill: a hard link to the earlier weights, to put them back.
_OLD_WEIGHTS = "previous-weights"
#: What mkfs puts at the root of an ext2/3/4 file system (most block-storage volumes).
LOST_FOUND = "lost+found"
#: ``renameat2`` errors that mean "no swap here" (no such call, a file system or a sandbox without
#: it): the target is filled in place instead, which reports any real error itself.
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM)
#: Errors renaming a directory that is a mount point (``EBUSY``) or into one (``EXDEV``).
_MOUNTED = (errno.EBUSY, errno.EXDEV)


def is_mount_point(path: Path) -> bool:
    """A volume (a bind mount of the same file system is not seen here: its rename fails with ``EBUSY``)."""
    try:
        return os.path.ismount(path) or path.stat().st_dev != path.parent.stat().st_dev
    except OSError:
        return False


def leftover_builds(out_dir: Path) -> list[str]:
    """Build directories of killed writes in ``out_dir``: the exact name pattern, a real directory,
    and nothing in it but an artifact's regular files."""
    found = []
    for name in os.listdir(out_dir):
        path = out_dir / name
        if not _BUILD_NAME.fullmatch(name) or path.is_symlink() or not path.is_dir():
            continue
        inside = os.listdir(path)
        if set(inside) <= {WEIGHTS, MANIFEST, _OLD_WEIGHTS} and all(
            not (path / n).is_symlink() and (path / n).is_file() for n in inside
        ):
            found.append(name)
    return found


def remove_leftover_builds(out_dir: Path) -> None:
    for name in leftover_builds(out_dir):
        shutil.rmtree(out_dir / name, ignore_errors=True)


def new_build_dir(out_dir: Path, inside: bool) -> Path:
    """A private directory to build the artifact in: inside ``out_dir`` (same file system, so
    its files can be renamed in), or beside it."""
    if inside:
        return Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=out_dir))
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def install(built: Path, out_dir: Path, replacing: bool, earlier: Sequence[str]) -> None:
    """Move the finished artifact ``built`` (a sibling) to ``out_dir``: absent, or an earlier
    artifact when ``replacing`` (whose listed files other than the two are ``earlier``)."""
    if not replacing:
        built.rename(out_dir)
        return
    try:
        exchange_paths(built, out_dir)  # built now holds the earlier artifact
    except OSError as exc:
        # A mount point the checks did not see (a bind mount), or no swap here: filled in place.
        if exc.errno not in _MOUNTED + _NO_EXCHANGE:
            raise
        fill(built, out_dir, earlier)
        return
    shutil.rmtree(built, ignore_errors=True)


def fill(built: Path, out_dir: Path, earlier: Sequence[str]) -> None:
    """Move the finished artifact ``built`` into the existing directory ``out_dir``.

    ``built`` is a build directory inside ``out_dir``, or a sibling (first moved inside, copied
    where it lies on another mount). The old manifest is removed first (a reader in between finds
    no manifest, never new weights under old hashes), the new one renamed in last, and the earlier
    artifact's other listed files (``earlier``) removed after. An error on the way puts the
    earlier model back (its manifest from memory, its weights from a hard link kept meanwhile).
    """
    incoming = built if built.parent == out_dir else _moved_inside(built, out_dir)
    old_manifest = _regular_file_bytes(out_dir / MANIFEST)
    backup = incoming / _OLD_WEIGHTS
    if old_manifest is not None:
        with contextlib.suppress(OSError):  # best effort: no hard links here, or not ours to link
            os.link(out_dir / WEIGHTS, backup, follow_symlinks=False)
    try:
        (out_dir / MANIFEST).unlink(missing_ok=True)
        (incoming / WEIGHTS).rename(out_dir / WEIGHTS)
        (incoming / MANIFEST).rename(out_dir / MANIFEST)
    except BaseException:
        # Where it stopped is read from the files (a Ctrl-C can arrive after a rename is made).
        if (incoming / MANIFEST).exists():  # else the new model is whole: nothing to put back
            _put_back(out_dir, old_manifest, backup, moved=not (incoming / WEIGHTS).exists())
        raise
    for name in earlier:
        (out_dir / name).unlink(missing_ok=True)
    backup.unlink(missing_ok=True)
    fsync_dir(out_dir)
    incoming.rmdir()


def _regular_file_bytes(path: Path) -> bytes | None:
    if path.is_symlink() or not path.is_file():
        return None
    try:
        return path.read_bytes()
    except OSError:
        return None


def _put_back(out_dir: Path, old_manifest: bytes | None, backup: Path, moved: bool) -> None:
    """After a failed fill (``moved``: the new weights are in place): the earlier model as it was
    where its weights can be put back, else no model rather than a mixed one; an empty directory
    empty again. The old manifest is written back only over the old weights."""
    try:
        if moved:
            if old_manifest is None or not backup.exists():
                (out_dir / WEIGHTS).unlink(missing_ok=True)
                return
            backup.rename(out_dir / WEIGHTS)
        if old_manifest is not None:
            write_atomic(out_dir / MANIFEST, old_manifest)
    except OSError:
        return  # no model then (the next write completes the target)


def _moved_inside(built: Path, out_dir: Path) -> Path:
    """``built``'s files in a new build directory inside ``out_dir`` (renamed, else copied across
    mounts and flushed); ``built`` is removed."""
    incoming = new_build_dir(out_dir, inside=True)
    try:
        for name in (WEIGHTS, MANIFEST):
            try:
                (built / name).rename(incoming / name)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copyfile(built / name, incoming / name)
                (incoming / name).chmod(0o644)
        incoming.chmod(0o755)
        fsync_tree(incoming)
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        raise
    shutil.rmtree(built, ignore_errors=True)
    return incoming
