"""Save and load a model artifact directory, verifying integrity. Nothing is ever unpickled.

Layout::

    MODEL_DIR/
      manifest.json         format version, model version, created_at, spec, featurizer state,
                            encoder config, scorer settings, calibration, training metrics,
                            sha256 of every other file, and a sha256 of the manifest itself
      weights.safetensors   encoder weights, centroids, radii, calibration scores, explainer stats

Saving writes into a temporary sibling directory and renames it into place, so readers never
see a half-written artifact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from detector.atomic_file import fsync_dir, fsync_tree
from detector.errors import ArtifactError

#: The newest format this build writes and reads. 2: the score has a rank-Gauss third term
#: (``scorer.gauss_*``); an artifact without one is still written as 1, so builds from before the
#: term read every artifact they can score and refuse, rather than misscore, the others.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
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
    """Write ``manifest`` + ``tensors`` as an artifact directory at ``out_dir`` (replacing it), as
    ``format_version`` (the oldest format that holds what it writes, see :data:`FORMAT_VERSION`).

    The manifest gains ``format_version``, ``files`` (sha256 per file) and its own digest.
    """
    if format_version not in READABLE_FORMATS:
        raise ValueError(f"unknown artifact format version {format_version}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS))
        full = dict(manifest)
        full["format_version"] = format_version
        full["files"] = {WEIGHTS: sha256_file(tmp / WEIGHTS)}
        full[_SELF_HASH] = _manifest_digest(full)
        (tmp / MANIFEST).write_text(json.dumps(full, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        fsync_tree(tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
        fsync_dir(out_dir.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_artifact(model_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify an artifact directory.

    Raises:
        ArtifactError: missing files, bad JSON, unknown format version, a file or the manifest
            whose hash does not match (tampered or truncated), or unreadable weights.
    """
    model_dir = Path(model_dir)
    manifest_path = model_dir / MANIFEST
    if not model_dir.is_dir():
        raise ArtifactError(f"model directory not found: {model_dir}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{model_dir}: no {MANIFEST}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: not a JSON object")
    version = manifest.get("format_version")
    if version not in READABLE_FORMATS:
        raise ArtifactError(
            f"{model_dir}: artifact format version {version!r} is not supported "
            f"(this build reads {' and '.join(map(str, READABLE_FORMATS))})"
        )
    try:
        digest = _manifest_digest(manifest)
    except ValueError as exc:  # e.g. NaN, which a written manifest never holds
        raise ArtifactError(f"{manifest_path}: manifest holds invalid values ({exc})") from exc
    if manifest.get(_SELF_HASH) != digest:
        raise ArtifactError(f"{manifest_path}: manifest hash mismatch (edited or corrupted)")
    files = manifest.get("files")
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise ArtifactError(f"{manifest_path}: no file hashes")
    for name, expected in files.items():
        path = model_dir / name
        if not path.is_file():
            raise ArtifactError(f"{model_dir}: missing file {name}")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{path}: sha256 mismatch (tampered or truncated)")
    try:
        tensors = load_file(str(model_dir / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{model_dir / WEIGHTS}: unreadable weights ({exc})") from exc
    return manifest, tensors


def tensor_to_numpy(tensors: Mapping[str, torch.Tensor], name: str) -> np.ndarray:
    """Fetch one tensor as a numpy array, or raise :class:`ArtifactError` if absent."""
    if name not in tensors:
        raise ArtifactError(f"weights have no tensor {name!r}")
    return tensors[name].numpy()
