"""Expected outcomes computed offline with the detector itself (the oracle for Kafka tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.model import Detector

#: Scores this close to the threshold may flip with batch composition (float rounding).
AMBIGUOUS = 1e-4


@dataclass(frozen=True)
class Expected:
    must_flag: set[str]
    may_flag: set[str]
    flag_rate_normals: float


def expected_flags(model_dir: Path, events: Sequence[dict[str, Any]]) -> Expected:
    detector = Detector.load(model_dir)
    scored = detector.score_records(events)
    ids = [str(e["event_id"]) for e in events]
    near = np.abs(scored.scores - detector.threshold) <= AMBIGUOUS
    must = {i for i, f, a in zip(ids, scored.flagged, near, strict=True) if f and not a}
    may = must | {i for i, a in zip(ids, near, strict=True) if a}
    return Expected(must, may, float(scored.flagged.mean()) if ids else 0.0)


def renumber(events: Sequence[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """Copies of ``events`` with unique ids ``prefix-N``."""
    return [{**e, "event_id": f"{prefix}-{i}"} for i, e in enumerate(events)]
