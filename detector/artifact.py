"""Save and load a model artifact directory, verifying integrity. Nothing is ever unpickled.

Layout::

    MODEL_DIR/
      manifest.json         format version, model version, created_at, spec, featurizer state,
                            encoder config, scorer settings, calibration, training metrics,
                            sha256 of every other file, and a sha256 of the manifest itself
      weights.safetensors   encoder weights, centroids, radii, calibration scores, explainer stats

Saving builds the artifact in a private directory and moves it into place, so readers never see a
half-written artifact (:mod:`detector.artifact_install`): a new directory in one rename, an earlier
artifact swapped with the new one in one step (``renameat2(RENAME_EXCHANGE)``), and an empty
directory, a mount point, a directory whose parent this user cannot write or one the system cannot
swap filled in place, the manifest last. It replaces only an earlier artifact (a directory holding
nothing but an artifact's files) or fills an empty directory; anything else at the target is
refused, never removed. Directories are written 0755 and files 0644, so a worker under another uid
can read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_weights
from safetensors.torch import save_file

from detector.artifact_files import MANIFEST, MAX_MANIFEST_BYTES, WEIGHTS, check_file_name, read_model_file
from detector.artifact_install import (
    LOST_FOUND,
    fill,
    install,
    is_mount_point,
    leftover_builds,
    new_build_dir,
    remove_leftover_builds,
)
from detector.atomic_file import fsync_dir, fsync_tree
from detector.errors import ArtifactError

#: The newest format this build writes and reads. 2: the score has a rank-Gauss third term
#: (``scorer.gauss_*``); an artifact without one is still written as 1, so builds from before the
#: term read every artifact they can score and refuse, rather than misscore, the others.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
_SELF_HASH = "manifest_sha256"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != _SELF_HASH}
    # Hash what a reader will see: a JSON round trip turns int dict keys into strings, which sort differently.
    as_read = json.loads(json.dumps(body, allow_nan=False))
    canonical = json.dumps(as_read, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_artifact(
    out_dir: Path, manifest: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], format_version: int = 1
) -> Path:
    """Write ``manifest`` + ``tensors`` as an artifact directory at ``out_dir``, as
    ``format_version`` (the oldest format that holds what it writes, see :data:`FORMAT_VERSION`).

    ``out_dir`` may be new, an empty directory (filled in place, manifest last) or an earlier
    artifact (swapped with the new one in one step, else filled in place with the old manifest
    removed first and the new one written last). The manifest gains ``format_version``, ``files``
    (sha256 per file) and its own digest. Directories are written 0755, files 0644.

    Raises:
        ArtifactError: ``out_dir`` is anything else (see :func:`check_artifact_target`); nothing
            is written or removed.
    """
    if format_version not in READABLE_FORMATS:
        raise ValueError(f"unknown artifact format version {format_version}")
    given = Path(out_dir)
    out_dir = _resolved(given)  # "." and ".." have no name to build the temporary siblings from
    check_artifact_target(given)
    kind = _target_kind(out_dir, given)
    inside = _builds_inside(out_dir, kind)
    _make_parents(out_dir.parent)
    if kind != "absent":
        remove_leftover_builds(out_dir)
    tmp = new_build_dir(out_dir, inside)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        full = dict(manifest)
        full["format_version"] = format_version
        full["files"] = {WEIGHTS: sha256_file(tmp / WEIGHTS)}
        full[_SELF_HASH] = _manifest_digest(full)
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        # mkdtemp makes 0700 and the files follow the umask: a worker under another uid must read them.
        tmp.chmod(0o755)
        for name in (WEIGHTS, MANIFEST):
            (tmp / name).chmod(0o644)
        fsync_tree(tmp)
        earlier = [n for n in _listed_files(out_dir / MANIFEST) if n not in (WEIGHTS, MANIFEST)]
        if inside:
            fill(tmp, out_dir, earlier)
        else:
            install(tmp, out_dir, kind == "artifact", earlier)
            fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return given


def check_artifact_target(out_dir: Path) -> None:
    """Check that an artifact can be written at ``out_dir`` without removing anything else.

    Writable targets: a path that does not exist yet (under a writable directory), an empty
    directory, or an earlier artifact: a directory with a ``manifest.json`` of ours and nothing but
    the files it lists.

    Raises:
        ArtifactError: ``out_dir`` is a file, a directory holding other files, not creatable (a
            parent is a file) or not writable. The message starts with ``out_dir`` as given.
    """
    given = Path(out_dir)
    resolved = _resolved(given)
    kind = _target_kind(resolved, given)
    # The new files are built in a temporary sibling, or inside the target when it is filled in place.
    needs_write = [resolved] if _builds_inside(resolved, kind) else [resolved.parent]
    for directory in needs_write:
        existing = next(p for p in (directory, *directory.parents) if p.exists())
        if not existing.is_dir():
            raise ArtifactError(f"{given} cannot be created: {existing} is a file, not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ArtifactError(f"{given} cannot be written: no write permission in {existing}")


_TargetKind = Literal["absent", "empty", "artifact"]


def _resolved(given: Path) -> Path:
    try:
        return given.resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic link loop, a name too long
        raise ArtifactError(f"{given} cannot be used as a model directory: {exc}") from exc


def _target_kind(out_dir: Path, given: Path) -> _TargetKind:
    """What is at the (resolved) ``out_dir``; ArtifactError for what an artifact must not replace."""
    try:
        return _kind_of(out_dir, given)
    except OSError as exc:  # a parent this user cannot search, an unreadable directory
        raise ArtifactError(f"{given} cannot be read ({exc.strerror}); nothing was written") from exc


def _kind_of(out_dir: Path, given: Path) -> _TargetKind:
    if not out_dir.exists():
        return "absent"
    if not out_dir.is_dir():
        raise ArtifactError(
            f"{given} is a file, not a model directory" if out_dir.is_file() else f"{given} is not a directory"
        )
    # Not counted: build directories of killed writes (removed by the next write) and a file
    # system's lost+found at a volume's root; the weights alone beside such a build directory are
    # a fill killed between its renames, which the next write completes.
    builds = leftover_builds(out_dir)
    ignored = set(builds) | ({LOST_FOUND} if is_mount_point(out_dir) and (out_dir / LOST_FOUND).is_dir() else set())
    names = sorted(p.name for p in out_dir.iterdir() if p.name not in ignored)
    weights = out_dir / WEIGHTS
    if not names or (builds and names == [WEIGHTS] and not weights.is_symlink() and weights.is_file()):
        return "empty"
    listed = _listed_files(out_dir / MANIFEST)  # none unless the manifest is one of ours
    ours = {MANIFEST, WEIGHTS} | set(listed) if listed else set()
    others = [n + ("/" if (out_dir / n).is_dir() else "") for n in names if n not in ours]
    if listed and not others:
        if out_dir == Path.cwd().resolve() and not _builds_inside(out_dir, "artifact"):
            raise ArtifactError(
                f"{given} is the working directory: replacing it would leave this shell in a deleted"
                " directory; write the model from its parent directory"
            )
        return "artifact"
    shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
    raise ArtifactError(
        f"{given} holds other files and is not a model directory ({shown}); nothing was written: "
        "give a new or empty directory, or a model directory to replace"
    )


def _listed_files(manifest_path: Path) -> list[str]:
    """The files an artifact's manifest lists; none when the manifest is missing or not one of ours
    (its format, its own hash and its file names checked as a reader checks them), or when a
    listed name is not a regular file: such a directory is not replaced, as it is not a model."""
    try:
        manifest = _parse_manifest(read_model_file(manifest_path, MAX_MANIFEST_BYTES), manifest_path)
        files = manifest.get("files")
        names = [check_file_name(name, manifest_path) for name in files] if isinstance(files, dict) else []
    except (OSError, ArtifactError):
        return []
    directory = manifest_path.parent
    if not names or any((directory / n).is_symlink() or not (directory / n).is_file() for n in names):
        return []
    return names


def _builds_inside(out_dir: Path, kind: _TargetKind) -> bool:
    """Whether the artifact is built inside ``out_dir`` and moved in file by file: an empty
    directory, a mount point (a volume cannot be renamed, and its parent may be another, read-only,
    file system), or an earlier artifact whose parent this user cannot write (a directory an
    administrator made for the user: written once, it must be writable again)."""
    if kind == "empty":
        return True
    return kind == "artifact" and (is_mount_point(out_dir) or not os.access(out_dir.parent, os.W_OK | os.X_OK))


def _make_parents(directory: Path) -> None:
    """Create ``directory`` and missing ancestors 0755 whatever the umask (a worker under another
    uid must reach the model)."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
            path.chmod(0o755)


def read_artifact(
    model_dir: Path, check_manifest: Callable[[bytes], None] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify an artifact directory: every file read once, checked and used as read.

    ``check_manifest`` (e.g. a signature check) is given the manifest's bytes before they are
    parsed: the bytes it accepts are the bytes loaded. The weights are copied into memory, so a
    later edit of the file (or its truncation) cannot reach the loaded model.

    Raises:
        ArtifactError: missing files, bad JSON, unknown format version, a file or the manifest
            whose hash does not match (tampered or truncated), a listed name that is not a plain
            file of the directory, a link, a file over its size bound, or unreadable weights;
            whatever ``check_manifest`` raises.
    """
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST
    if model_dir.exists() and not model_dir.is_dir():
        raise ArtifactError(f"{model_dir} is a file, not a model directory (a directory that `fit --out` wrote)")
    if not model_dir.is_dir():
        raise ArtifactError(f"model directory not found: {model_dir}")
    try:
        raw = read_model_file(manifest_path, MAX_MANIFEST_BYTES)
    except FileNotFoundError as exc:
        raise ArtifactError(f"{model_dir}: no {MANIFEST}") from exc
    if check_manifest is not None:
        check_manifest(raw)
    manifest = _parse_manifest(raw, manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise ArtifactError(f"{manifest_path}: no file hashes")
    contents: dict[str, bytes] = {}
    for name, expected in files.items():
        path = model_dir / check_file_name(name, manifest_path)
        try:
            contents[name] = read_model_file(path)
        except FileNotFoundError:
            raise ArtifactError(f"{model_dir}: missing file {name}") from None
        if hashlib.sha256(contents[name]).hexdigest() != expected:
            raise ArtifactError(f"{path}: sha256 mismatch (tampered or truncated)")
    try:
        tensors = load_weights(contents[WEIGHTS])
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / WEIGHTS}: unreadable weights ({exc})") from exc
    return manifest, tensors


def _parse_manifest(raw: bytes, manifest_path: Path) -> dict[str, Any]:
    """The manifest's JSON object, its format version and its own hash checked."""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # JSON or UTF-8 errors; an integer of over 4,300 digits
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise ArtifactError(f"{manifest_path}: not valid JSON (nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: not a JSON object")
    version = manifest.get("format_version")
    # Checked before the hash (another format may hash otherwise); JSON true is not the integer 1.
    if type(version) is not int or version not in READABLE_FORMATS:
        raise ArtifactError(
            f"{manifest_path.parent}: artifact format version {version!r} is not supported "
            f"(this build reads {' and '.join(map(str, READABLE_FORMATS))})"
        )
    try:
        digest = _manifest_digest(manifest)
    except ValueError as exc:  # e.g. NaN, which a written manifest never holds
        raise ArtifactError(f"{manifest_path}: manifest holds invalid values ({exc})") from exc
    if manifest.get(_SELF_HASH) != digest:
        raise ArtifactError(f"{manifest_path}: manifest hash mismatch (edited or corrupted)")
    return manifest


def artifact_file_names(model_dir: Path) -> list[str]:
    """The files that make up the artifact at ``model_dir``: the manifest and the files it lists
    (checked as :func:`read_artifact` checks them, which the caller has done or will do)."""
    manifest = _parse_manifest(read_model_file(model_dir / MANIFEST, MAX_MANIFEST_BYTES), model_dir / MANIFEST)
    files = manifest.get("files")
    listed = [check_file_name(name, model_dir / MANIFEST) for name in files] if isinstance(files, dict) else []
    return [MANIFEST, *listed]


def tensor_to_numpy(tensors: Mapping[str, torch.Tensor], name: str) -> np.ndarray:
    """Fetch one tensor as a numpy array, or raise :class:`ArtifactError` if absent."""
    if name not in tensors:
        raise ArtifactError(f"weights have no tensor {name!r}")
    return tensors[name].numpy()
