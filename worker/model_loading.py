"""Loading a model artifact for serving, with what the metrics need to describe it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from detector.errors import ArtifactError
from detector.model import Detector
from detector.registry import ModelRegistry
from detector.signing import Ed25519PublicKey
from worker.errors import NoLiveVersionError
from worker.typed_decode import TypedDecoder


@dataclass(frozen=True)
class LoadedModel:
    """A detector ready to serve.

    Attributes:
        detector: the loaded detector.
        load_seconds: wall time the load took.
        created_unix_s: when the model was trained (from the manifest), if known.
        target_fpr: the calibrated target false-positive rate (from the manifest), if known.
        decoder: the typed decoder of the model's events (the pipeline's fast path).
    """

    detector: Detector
    load_seconds: float
    created_unix_s: float | None
    target_fpr: float | None
    decoder: TypedDecoder


def load_model(model_dir: Path, public_key: Ed25519PublicKey | None = None) -> LoadedModel:
    """Load and verify an artifact directory (and its signature, given ``public_key``).

    Raises:
        detector.errors.ArtifactError: missing, tampered, truncated or incompatible artifact;
            with ``public_key``, an unsigned or wrongly signed one.
    """
    start = time.perf_counter()
    detector = Detector.load(model_dir, public_key)  # the signature checked on the manifest bytes loaded
    elapsed = time.perf_counter() - start
    return LoadedModel(detector, elapsed, _created(detector), _target_fpr(detector), TypedDecoder(detector.spec))


def _created(detector: Detector) -> float | None:
    try:
        return datetime.fromisoformat(str(detector.manifest["created_at"])).timestamp()
    except (KeyError, ValueError):
        return None


def _target_fpr(detector: Detector) -> float | None:
    calibration = detector.manifest.get("calibration")
    if not isinstance(calibration, dict):
        return None
    value = calibration.get("target_fpr")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def load_live_model(registry_dir: Path, public_key: Ed25519PublicKey | None = None) -> LoadedModel:
    """Load the version the registry's ``LIVE`` pointer names, through the registry's own reader.

    The same checks as a hot reload (:class:`worker.reload.RegistryWatcher`): a valid version
    name, a registered version, a directory inside the registry, a manifest of that version.

    Raises:
        NoLiveVersionError: nothing promoted yet.
        ArtifactError: no registry, or an artifact that fails those checks.
        RegistryError: a malformed pointer or one naming an unregistered version.
    """
    if not registry_dir.is_dir():
        raise ArtifactError(f"registry {registry_dir} is not a directory")
    registry = ModelRegistry(registry_dir, public_key=public_key)
    version = registry.live_version()
    if version is None:
        raise NoLiveVersionError(f"registry {registry_dir}: no live version (promote one first)")
    return load_registry_version(registry, version)


def load_registry_version(registry: ModelRegistry, version: str) -> LoadedModel:
    """Load a registered version, refusing one stored outside the registry or naming another version.

    Raises:
        ArtifactError: the version directory resolves outside the registry, or its manifest
            names another version, or the artifact does not verify.
        RegistryError: unknown version or invalid name.
    """
    path = registry.version_path(version)  # refuses a directory that resolves outside the registry
    model = load_model(path, registry.public_key)
    if model.detector.version != version:
        raise ArtifactError(f"artifact under versions/{version} has model_version {model.detector.version!r}")
    return model
