"""Storage behind the model registry: a small key/bytes interface and its local-filesystem backend.

Keys are relative ``/``-separated paths (``LIVE``, ``history.jsonl``, ``versions/<v>/manifest.json``).
Names that start with ``.`` are private to a backend (temporary files, the lock) and never listed.
An object store can implement :class:`RegistryStorage` later: ``replace_atomic`` maps to a single
PUT of a small object, ``list_keys`` to a delimiter listing, ``copy_dir_in`` to an upload under a
temporary prefix followed by a marker write, ``local_path`` to a download cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from detector.errors import RegistryError

_LOCK_NAME = ".lock"


@runtime_checkable
class RegistryStorage(Protocol):
    """What the registry needs from where it keeps its objects."""

    def read_bytes(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or ``None`` when there is no such object."""

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (creating parents); readers see the old or the new bytes."""

    def replace_atomic(self, key: str, data: bytes) -> None:
        """Durably and atomically replace the small object ``key``: a reader sees old or new, never a mix."""

    def append_bytes(self, key: str, data: bytes) -> None:
        """Append ``data`` to ``key`` durably (creating it); used for the one-line-per-record history."""

    def exists(self, key: str) -> bool:
        """Whether an object or a directory prefix ``key`` exists."""

    def list_keys(self, prefix: str) -> list[str]:
        """Sorted names directly under ``prefix`` (one level, like an S3 delimiter listing)."""

    def copy_dir_in(self, source: Path, key: str, verify: Callable[[Path], None] | None = None) -> None:
        """Copy the local directory ``source`` to ``key`` so that ``key`` appears complete or not at all.

        ``verify`` is called on the staged copy before it becomes visible; if it raises, nothing
        appears and the exception propagates.

        Raises:
            FileExistsError: ``key`` already exists.
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
        root: the registry directory (created when missing).
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or any(p in ("..", ".") for p in parts) or "\\" in key:
            raise RegistryError(f"invalid storage key {key!r}")
        return self.root.joinpath(*parts)

    def read_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def write_bytes(self, key: str, data: bytes) -> None:
        self._write_via_temp(self._path(key), data, durable=False)

    def replace_atomic(self, key: str, data: bytes) -> None:
        self._write_via_temp(self._path(key), data, durable=True)

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
        return self._path(key).exists()

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
            _fsync_tree(staged)
            if verify is not None:
                verify(staged)
            # rename(2) refuses to replace a non-empty directory, so a concurrent add of the
            # same key fails here instead of overwriting.
            staged.rename(target)
            _fsync_dir(target.parent)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def local_path(self, key: str) -> Path:
        return self._path(key)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        fd = os.open(self.root / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @staticmethod
    def _write_via_temp(path: Path, data: bytes, *, durable: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable:
                    os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        if durable:
            _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        else:
            _fsync_dir(path)
    _fsync_dir(root)
