"""The anomaly record published on the output topic (see the shared contracts).

Fields: ``event_id``, ``event_timestamp`` (ISO-8601 or null), ``detected_at`` (ISO-8601 UTC),
``score``, ``threshold``, ``p_value``, ``nearest_class``, ``nearest_distance``, ``margin`` (null
when the model has one class), ``model_version``, ``explanation`` (``text`` and ``fields``:
``field``/``value``/``deviation``) and ``event`` (the original event). Key = event id; the model
version also travels in the ``model_version`` header.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from detector.explain import FieldDeviation, describe

RECORD_FIELDS = (
    "event_id",
    "event_timestamp",
    "detected_at",
    "score",
    "threshold",
    "p_value",
    "nearest_class",
    "nearest_distance",
    "margin",
    "model_version",
    "explanation",
    "event",
)
MODEL_VERSION_HEADER = "model_version"


def build_anomaly_record(
    *,
    event_id: str,
    event_timestamp: str | None,
    detected_at: str | None,
    score: float,
    threshold: float,
    p_value: float,
    nearest_class: str,
    nearest_distance: float,
    margin: float,
    model_version: str,
    deviations: Sequence[FieldDeviation],
    event: Mapping[str, Any] | orjson.Fragment,
) -> dict[str, Any]:
    """The anomaly record as a JSON-able dict (non-finite margins become null).

    ``event_timestamp`` and ``detected_at`` are ISO-8601 UTC text (see :func:`worker.event_time.iso_utc_many`).
    """
    return {
        "event_id": event_id,
        "event_timestamp": event_timestamp,
        "detected_at": detected_at,
        "score": score,
        "threshold": threshold,
        "p_value": p_value,
        "nearest_class": nearest_class,
        "nearest_distance": nearest_distance,
        "margin": margin if math.isfinite(margin) else None,
        "model_version": model_version,
        "explanation": {
            "text": describe(deviations, nearest_class),
            "fields": [d.as_dict() for d in deviations],
        },
        "event": event,
    }


def encode_anomaly_record(record: Mapping[str, Any]) -> bytes:
    """UTF-8 JSON bytes of an anomaly record (non-finite floats are written as null)."""
    return orjson.dumps(record)
