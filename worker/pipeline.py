"""The pure scoring pipeline: raw Kafka records + a loaded detector -> one outcome per record.

No I/O, no Kafka, no metrics, no clock (the caller passes ``now_s``). Per batch: one orjson
decode per record, one featurize (:meth:`Featurizer.transform_valid`), one encoder forward pass,
one distance computation, and explanations only for the flagged rows.

Rejection reasons decided here, before parsing: ``empty`` (no value or zero bytes), ``too_large``
(more than ``max_value_bytes``), ``not_utf8``, ``invalid_json`` (including NaN/Infinity literals,
which are not JSON), ``not_an_object``. The featurizer adds ``missing_field``, ``wrong_type`` and
``not_finite``. Unknown categories are scored, never rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from detector.errors import InvalidEventError
from detector.model import Detector
from worker.anomaly_record import build_anomaly_record
from worker.event_time import LATEST_SECONDS, MILLISECONDS_ABOVE, epoch_seconds


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed Kafka record (``timestamp_ms``: the record's Kafka timestamp)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Normal:
    """A scored event below the threshold."""

    record: RawRecord
    score: float


@dataclass(frozen=True, slots=True)
class Flagged:
    """A scored event above the threshold, with its anomaly record (a JSON-able dict)."""

    record: RawRecord
    event_id: str
    score: float
    nearest_class: str
    anomaly: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that breaks the inbound contract; it goes to the dead-letter topic untouched."""

    record: RawRecord
    reason: str
    error_type: str
    message: str


Outcome = Normal | Flagged | Rejected


@dataclass(frozen=True)
class BatchResult:
    """Outcomes of one batch.

    Attributes:
        outcomes: one outcome per input record, in input order.
        scores: scores of every scored (non-rejected) record, in input order.
        event_times_s: ``(n,)`` unix seconds per input record: the event timestamp, else the
            Kafka record timestamp (for end-to-end latency).
        model_version: the detector version that scored the batch.
    """

    outcomes: list[Outcome]
    scores: NDArray[np.float64]
    event_times_s: NDArray[np.float64]
    model_version: str


def score_batch(records: Sequence[RawRecord], detector: Detector, *, max_value_bytes: int, now_s: float) -> BatchResult:
    """Validate and score a batch; never raises for bad input (every record gets an outcome).

    Args:
        records: the consumed records.
        detector: the live detector.
        max_value_bytes: values longer than this are rejected as ``too_large`` unparsed.
        now_s: unix seconds used as ``detected_at`` of anomaly records.
    """
    n = len(records)
    outcomes: list[Outcome | None] = [None] * n
    event_times = np.array([r.timestamp_ms for r in records], dtype=np.float64) / 1000.0
    events: list[dict[str, Any]] = []
    positions: list[int] = []
    for i, record in enumerate(records):
        parsed = _parse(record, max_value_bytes)
        if isinstance(parsed, Rejected):
            outcomes[i] = parsed
        else:
            events.append(parsed)
            positions.append(i)
    scores = np.zeros(0, dtype=np.float64)
    if events:
        scores = _score_events(records, events, positions, detector, outcomes, event_times, now_s)
    done = [o for o in outcomes if o is not None]
    assert len(done) == n, "every record must get an outcome"
    return BatchResult(done, scores, event_times, detector.version)


def _parse(record: RawRecord, max_value_bytes: int) -> dict[str, Any] | Rejected:
    value = record.value
    if not value:
        return Rejected(record, "empty", "InvalidEventError", "the record has no value")
    if len(value) > max_value_bytes:
        message = f"value of {len(value)} bytes exceeds the limit of {max_value_bytes}"
        return Rejected(record, "too_large", "InvalidEventError", message)
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as utf8_exc:
            return Rejected(record, "not_utf8", "InvalidEventError", f"value is not UTF-8: {utf8_exc.reason}")
        return Rejected(record, "invalid_json", "InvalidEventError", f"value is not valid JSON: {exc}")
    if not isinstance(event, dict):
        return Rejected(record, "not_an_object", "InvalidEventError", f"JSON value is a {type(event).__name__}")
    return event


def _score_events(
    records: Sequence[RawRecord],
    events: list[dict[str, Any]],
    positions: list[int],
    detector: Detector,
    outcomes: list[Outcome | None],
    event_times: NDArray[np.float64],
    now_s: float,
) -> NDArray[np.float64]:
    features, errors = detector.featurizer.transform_valid(events)
    for j, err in errors.items():
        outcomes[positions[j]] = _rejected(records[positions[j]], err)
    valid = np.array([j for j in range(len(events)) if j not in errors], dtype=np.intp) if errors else None
    if valid is not None:
        if len(valid) == 0:
            return np.zeros(0, dtype=np.float64)
        features = features[valid]
    result = detector.scorer.score(detector.embed(features))
    valid_list = list(range(len(events))) if valid is None else valid.tolist()
    own_times = _event_times(events, valid_list, detector.spec.timestamp_field)
    for k, seconds in enumerate(own_times):
        if seconds is not None:
            event_times[positions[valid_list[k]]] = seconds
    scores = result.score.tolist()
    flagged = np.flatnonzero(result.flagged).tolist()
    flagged_set = set(flagged)
    for k, j in enumerate(valid_list):
        if k not in flagged_set:
            position = positions[j]
            outcomes[position] = Normal(records[position], scores[k])
    if flagged:
        rows = np.asarray(flagged, dtype=np.intp)
        flagged_events = [events[valid_list[k]] for k in flagged]
        explanations = detector.explainer.explain(features[rows], result.nearest_centroid[rows], flagged_events, top=3)
        for k, event, deviations in zip(flagged, flagged_events, explanations, strict=True):
            record = records[positions[valid_list[k]]]
            event_id = _event_id(event, detector.spec.id_field, record)
            nearest_class = detector.scorer.class_names[int(result.nearest_class[k])]
            anomaly = build_anomaly_record(
                event_id=event_id,
                event_time_s=own_times[k],
                detected_at_s=now_s,
                score=scores[k],
                threshold=detector.threshold,
                p_value=float(result.p_value[k]),
                nearest_class=nearest_class,
                nearest_distance=float(result.distance[k]),
                margin=float(result.margin[k]),
                model_version=detector.version,
                deviations=deviations,
                event=event,
            )
            outcomes[positions[valid_list[k]]] = Flagged(record, event_id, scores[k], nearest_class, anomaly)
    return result.score


def _event_times(events: list[dict[str, Any]], valid: list[int], field: str | None) -> list[float | None]:
    """Event time (unix seconds) of each valid event; one vectorised pass when all are plain numbers."""
    if field is None:
        return [None] * len(valid)
    values = [events[j].get(field) for j in valid]
    if values and set(map(type, values)) <= {float, int}:
        seconds = np.asarray(values, dtype=np.float64)
        if np.isfinite(seconds).all() and (seconds >= 0).all():
            seconds = np.where(seconds > MILLISECONDS_ABOVE, seconds / 1000.0, seconds)
            if (seconds <= LATEST_SECONDS).all():
                out: list[float | None] = seconds.tolist()
                return out
    return [epoch_seconds(v) for v in values]


def _rejected(record: RawRecord, err: InvalidEventError) -> Rejected:
    return Rejected(record, err.reason, type(err).__name__, str(err))


def _event_id(event: dict[str, Any], id_field: str | None, record: RawRecord) -> str:
    """The spec's id field when it holds a string or integer, else ``topic:partition:offset``."""
    if id_field is not None:
        value = event.get(id_field)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return f"{record.topic}:{record.partition}:{record.offset}"
