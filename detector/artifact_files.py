"""Reading an artifact's files as untrusted input: each file read once, whole, into memory.

A model directory may come from elsewhere (a colleague, a registry another account can write), so
its files are read with the care due to input: a name a manifest lists must be a plain name in
the directory (no ``/``, no ``..``, no hidden file), the file a regular file and not a symbolic
link, and no larger than a bound (a ``/proc`` file or a device would otherwise be read for
minutes). Each file is read once and the caller checks and uses *those* bytes: a hash or a
signature checked on one read and a load from another would let a writer swap the file in between,
and weights mapped from the file (``safetensors.load_file``) would follow later edits of it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from detector.errors import ArtifactError

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
#: Largest manifest read (a real one holds a spec, featurizer state and calibration: kilobytes).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: Largest other artifact file read (the weights of a model at the trainer's widest, with room).
MAX_FILE_BYTES = 4 * 1024**3
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_file_name(name: object, manifest_path: Path) -> str:
    """``name`` when it is a plain file name in the model directory, else :class:`ArtifactError`."""
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or ".." in name:
        raise ArtifactError(f"{manifest_path}: lists {name!r}, which is not a plain file name in the model directory")
    return name


def read_model_file(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The whole content of ``path``, a regular file (not a link) of at most ``limit`` bytes.

    Raises:
        FileNotFoundError: no such file (the caller names what is missing).
        ArtifactError: a link, not a regular file, too large, or unreadable.
    """
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ArtifactError(f"{path}: a symbolic link; a model's files must be plain files") from None
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArtifactError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise ArtifactError(f"{path}: {info.st_size} bytes, more than a model file may have ({limit})")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > limit:
        raise ArtifactError(f"{path}: more than a model file may have ({limit} bytes)")
    return data


def copy_artifact_files(source: Path, names: list[str], target: Path) -> None:
    """Copy the plain files ``names`` of ``source`` into the new directory ``target`` (and nothing
    else: a link or an unlisted file in ``source`` is not carried along).

    Raises:
        ArtifactError: a name is not plain, or a file is a link, not regular, missing or too large.
    """
    target.mkdir()
    for name in names:
        check_file_name(name, source)
        try:
            data = read_model_file(source / name)
        except FileNotFoundError:
            raise ArtifactError(f"{source}: missing file {name}") from None
        (target / name).write_bytes(data)
