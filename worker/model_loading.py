"""Loading a model artifact for serving, with what the metrics need to describe it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from detector.errors import ArtifactError
from detector.model import Detector
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


def load_model(model_dir: Path) -> LoadedModel:
    """Load and verify an artifact directory.

    Raises:
        detector.errors.ArtifactError: missing, tampered, truncated or incompatible artifact.
    """
    start = time.perf_counter()
    detector = Detector.load(model_dir)
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


LIVE_POINTER = "LIVE"


def live_model_dir(registry_dir: Path) -> Path:
    """The artifact directory the registry's ``LIVE`` pointer names (``versions/<version>``).

    Raises:
        ArtifactError: no readable pointer, or it names a missing version.
    """
    pointer = registry_dir / LIVE_POINTER
    try:
        version = pointer.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ArtifactError(f"registry {registry_dir}: cannot read {LIVE_POINTER}: {exc.strerror}") from exc
    model_dir = registry_dir / "versions" / version
    if not version or not model_dir.is_dir():
        raise ArtifactError(f"registry {registry_dir}: {LIVE_POINTER} names a missing version {version!r}")
    return model_dir
