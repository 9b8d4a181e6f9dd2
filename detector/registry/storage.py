"""Storage behind the model registry: a small key/bytes interface and its local-filesystem backend.

Keys are relative ``/``-separated paths (``LIVE``, ``history.jsonl``, ``versions/<v>/manifest.json``).
Names that start with ``.`` are private to a backend (temporary files, the lock) and never listed.
An object store can implement :class:`RegistryStorage` later: ``replace_atomic`` maps to a single
PUT of a small object, ``list_keys`` to a delimiter listing, ``copy_dir_in`` to an upload under a
temporary prefix followed by a marker write, ``local_path`` to a download cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from detector.atomic_file import fsync_dir, fsync_tree, write_atomic
from detector.errors import RegistryError

_LOCK_NAME = ".lock"


@runtime_checkable
class RegistryStorage(Protocol):
    """What the registry needs from where it keeps its objects."""

    def read_bytes(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or ``None`` when there is no such object.

        Raises:
            RegistryError: the object exists but cannot be read (permission denied, I/O error).
        """

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (creating parents); readers see the old or the new bytes."""

    def replace_atomic(self, key: str, data: bytes) -> None:
        """Durably and atomically replace the small object ``key``: a reader sees old or new, never a mix."""

    def append_bytes(self, key: str, data: bytes) -> None:
        """Append ``data`` to ``key`` durably (creating it); used for the one-line-per-record history."""

    def exists(self, key: str) -> bool:
        """Whether an object or a directory prefix ``key`` exists.

        Raises:
            RegistryError: whether it exists cannot be told (permission denied on a parent).
        """

    def resolves_inside(self, key: str) -> bool:
        """Whether ``key`` is stored inside this storage, not reached through a link that leaves it."""

    def list_keys(self, prefix: str) -> list[str]:
        """Sorted names directly under ``prefix`` (one level, like an S3 delimiter listing)."""

    def copy_dir_in(self, source: Path, key: str, verify: Callable[[Path], None] | None = None) -> None:
        """Copy the local directory ``source`` to ``key`` so that ``key`` appears complete or not at all.

        ``verify`` is called on the staged copy before it becomes visible; if it raises, nothing
        appears and the exception propagates.

        Raises:
            FileExistsError: ``key`` already exists, or appeared meanwhile (a concurrent copy won).
        """

    def local_path(self, key: str) -> Path:
        """A local filesystem path holding ``key`` (a remote store would download into a cache)."""

    def lock(self) -> AbstractContextManager[None]:
        """An exclusive lock across processes, held around read-modify-write sequences."""


class LocalStorage:
    """:class:`RegistryStorage` on a local (or POSIX network) filesystem directory.

    Atomicity comes from ``os.replace``/``os.rename`` within one directory; durability from
    ``fsync`` of the file and its directory. The lock is ``flock`` on ``ROOT/.lock``.

    Args:
        root: the registry directory (created by the first write, never by a read).
    """

    def __init__(self, root: Path | str) -> None:
        # Created by the first write, never by a read: a mistyped path must not become an empty registry.
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("..", ".") for p in parts) or "\\" in key:
            raise RegistryError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            # O_NONBLOCK: a FIFO put where LIVE was must not hang the reader (it is refused below).
            fd = os.open(self._path(key), os.O_RDONLY | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # e.g. a directory copied in by hand with mode 0700 under another uid
            raise RegistryError(f"cannot read {key}: {exc.strerror or exc}") from exc
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise RegistryError(f"cannot read {key}: {exc.strerror or exc}") from exc
        if not stat.S_ISREG(mode):
            os.close(fd)
            # A directory too (found in review: a LIVE made a directory, by ``mkdir`` or by a bind
            # mount of a missing host file, read as "nothing promoted yet", and the worker waited).
            what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"  # or a FIFO, a device
            raise RegistryError(f"cannot read {key}: {what}, not a file")
        with os.fdopen(fd, "rb") as fh:
            try:
                return fh.read()
            except OSError as exc:
                raise RegistryError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), data, durable=False)

    def replace_atomic(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), data, durable=True)

    def append_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        try:
            return self._path(key).exists()
        except OSError as exc:
            raise RegistryError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def resolves_inside(self, key: str) -> bool:
        return self._path(key).resolve().is_relative_to(self.root.resolve())

    def list_keys(self, prefix: str) -> list[str]:
        directory = self._path(prefix) if prefix.strip("/") else self.root
        try:
            return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def copy_dir_in(self, source: Path, key: str, verify: Callable[[Path], None] | None = None) -> None:
        target = self._path(key)
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            staged = staging / "copy"
            shutil.copytree(source, staged)
            _make_readable(staged)
            fsync_tree(staged)
            if verify is not None:
                verify(staged)
            _rename_new(staged, target)
            fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        # Only promotions and roll-backs lock, and they need versions: a missing root is a
        # mistyped path, never a registry to create.
        if not self.root.is_dir():
            raise RegistryError(f"no registry at {self.root} (not a directory)")
        fd = _open_lock_file(self.root / _LOCK_NAME)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise RegistryError(
                    f"cannot lock {self.root / _LOCK_NAME} ({exc.strerror}): on NFS the lock file must be"
                    " writable by every user that promotes"
                ) from exc
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def _open_lock_file(path: Path) -> int:
    """The promotion lock's descriptor. Read-write where allowed: an NFS client implements flock as
    a write lock, which needs it; a lock file this uid owns is made writable by all (it holds
    nothing) so that another uid allowed to write the registry (an operator beside the CronJob) can
    open it so too. Read-only where the file is another uid's and not writable: enough for flock on
    a local file system. Never through a symbolic link, and only a regular file: another uid that
    may write the registry must not make this one change or create a file elsewhere.

    Raises:
        RegistryError: the lock file cannot be opened or created, or is not a regular file.
    """
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise RegistryError(f"cannot open the registry lock {path}: {exc.strerror}") from exc
        try:
            fd = os.open(path, os.O_RDONLY | flags)
        except OSError as again:
            raise RegistryError(f"cannot open or create the registry lock {path}: {again.strerror}") from again
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RegistryError(f"the registry lock {path} is not a regular file")
    if info.st_uid == os.geteuid() and info.st_nlink == 1:
        with contextlib.suppress(OSError):  # the umask does not apply to fchmod
            os.fchmod(fd, 0o666)
    return fd


def _rename_new(staged: Path, target: Path) -> None:
    """Rename ``staged`` to ``target``, which must not exist: never overwrite a concurrent copy.

    rename(2) refuses to replace a non-empty directory, but with ``ENOTEMPTY`` (or ``EEXIST``) on
    Linux, a plain ``OSError``: map it to the ``FileExistsError`` the protocol promises.
    """
    try:
        staged.rename(target)
    except OSError as exc:
        if isinstance(exc, FileExistsError) or exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, f"{target} appeared meanwhile (a concurrent copy)") from exc
        raise


def _make_readable(root: Path) -> None:
    """Directories 0755, files 0644: workers may run under another uid (artifacts are often saved 0700/0600)."""
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
