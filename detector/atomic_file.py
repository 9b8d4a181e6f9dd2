"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The one recipe every writer of models, registry records, signatures and reports uses: write a
temporary sibling, flush it (and ``fsync`` it when the write must survive a power cut), then
``os.replace`` it over the target (atomic within one directory on POSIX), then ``fsync`` the
directory so the rename itself is on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def write_atomic(path: Path, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step; parent directories are created.

    Args:
        path: the file to (re)place.
        data: its whole new content.
        durable: ``fsync`` the file and its directory, so a crash after return cannot lose the
            write (registry pointers and signatures); ``False`` for files that can be rewritten.
        mode: permission bits of the new file (temporary files start as 0600).
    """
    with atomic_writer(path, durable=durable, mode=mode) as fh:
        fh.write(data)


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, durable: bool = True, mode: int = 0o644, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """A file for ``path``'s new content, written as a stream: it replaces ``path`` in one step when
    the block ends, and is removed (``path`` left as it was) when the block raises. Binary, or text
    with ``encoding`` (and ``newline``); ``durable`` and ``mode`` as for :func:`write_atomic`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if encoding is None else "w", encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (creations, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root``, deepest first, then ``root`` itself."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        else:
            fsync_dir(path)
    fsync_dir(root)


#: ``renameat2`` arguments (Linux): paths relative to the working directory; swap both names.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(first: Path, second: Path) -> None:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``): a reader of
    either name sees the one entry or the other, never neither.

    Raises:
        OSError: the swap was not made: ``ENOSYS`` or ``EINVAL`` where the system or the file
            system has no such operation, ``EBUSY`` for a mount point, ``EXDEV`` across mounts.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", str(first), None, str(second))
    flags = ctypes.c_uint(_RENAME_EXCHANGE)
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))
