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
from operator import attrgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from detector.errors import InvalidEventError
from detector.model import Detector
from worker.anomaly_record import build_anomaly_record
from worker.event_time import LATEST_SECONDS, MILLISECONDS_ABOVE, epoch_seconds, iso_utc, iso_utc_many


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
    """Outcomes of one batch, kept in the shape the worker consumes them.

    Normal events get no per-event object (they are most of the stream and only counted);
    :meth:`outcomes` builds the full per-record list on demand.

    Attributes:
        records: the input records.
        scored: ``(m,)`` input positions of the scored (not rejected) records, ascending.
        scores: ``(m,)`` their scores, same order.
        flagged: the scored events above the threshold, in input order.
        flagged_at: ``(f,)`` their input positions.
        rejected: the records that break the inbound contract, in input order.
        event_times_s: ``(n,)`` unix seconds per input record: the event timestamp, else the
            Kafka record timestamp (for end-to-end latency).
        model_version: the detector version that scored the batch.
    """

    records: Sequence[RawRecord]
    scored: NDArray[np.intp]
    scores: NDArray[np.float64]
    flagged: list[Flagged]
    flagged_at: NDArray[np.intp]
    rejected: list[Rejected]
    event_times_s: NDArray[np.float64]
    model_version: str

    @property
    def n_normal(self) -> int:
        return len(self.scores) - len(self.flagged)

    def outcomes(self) -> list[Outcome]:
        """One outcome per input record, in input order."""
        out: list[Outcome | None] = [None] * len(self.records)
        for position, score in zip(self.scored.tolist(), self.scores.tolist(), strict=True):
            out[position] = Normal(self.records[position], score)
        for position, flagged in zip(self.flagged_at.tolist(), self.flagged, strict=True):
            out[position] = flagged
        rejected_at = np.setdiff1d(np.arange(len(self.records)), self.scored).tolist()
        for position, rejected in zip(rejected_at, self.rejected, strict=True):
            out[position] = rejected
        done = [o for o in out if o is not None]
        assert len(done) == len(self.records), "every record must get an outcome"
        return done


def score_batch(records: Sequence[RawRecord], detector: Detector, *, max_value_bytes: int, now_s: float) -> BatchResult:
    """Validate and score a batch; never raises for bad input (every record gets an outcome).

    Args:
        records: the consumed records.
        detector: the live detector.
        max_value_bytes: values longer than this are rejected as ``too_large`` unparsed.
        now_s: unix seconds used as ``detected_at`` of anomaly records.
    """
    event_times = np.fromiter(map(_timestamp_ms, records), dtype=np.float64, count=len(records)) / 1000.0
    events, positions, rejected = _parse_all(records, max_value_bytes)
    scored = _Scored.empty()
    if events:
        scored = _score_events(records, events, np.asarray(positions, dtype=np.intp), detector, event_times, now_s)
        if scored.rejected:
            rejected = sorted(rejected + scored.rejected, key=lambda item: item[0])
    return BatchResult(
        records=records,
        scored=scored.positions,
        scores=scored.scores,
        flagged=scored.flagged,
        flagged_at=scored.flagged_at,
        rejected=[r for _, r in rejected],
        event_times_s=event_times,
        model_version=detector.version,
    )


def _parse_all(
    records: Sequence[RawRecord], max_value_bytes: int
) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, Rejected]]]:
    """JSON objects with their input positions, and the rejected records with theirs.

    A batch of well-formed records (the common case) is parsed by one ``map``; the first bad
    record sends the batch down the record-by-record path that says why each one is rejected.
    """
    values = list(map(_value, records))
    try:
        if values and max(map(len, values)) <= max_value_bytes:
            events = list(map(orjson.loads, values))
            if set(map(type, events)) == {dict}:
                return events, list(range(len(records))), []
    except (orjson.JSONDecodeError, TypeError):
        pass
    events, positions, rejected = [], [], []
    for i, record in enumerate(records):
        value = record.value
        if value and len(value) <= max_value_bytes:
            try:
                event = orjson.loads(value)
            except orjson.JSONDecodeError:
                event = None
            if type(event) is dict:
                events.append(event)
                positions.append(i)
                continue
        rejected.append((i, _rejection(record, max_value_bytes)))
    return events, positions, rejected


_value = attrgetter("value")
_timestamp_ms = attrgetter("timestamp_ms")


def _rejection(record: RawRecord, max_value_bytes: int) -> Rejected:
    """Why a record that failed the inline fast path is rejected."""
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
    return Rejected(record, "not_an_object", "InvalidEventError", f"JSON value is a {type(event).__name__}")


@dataclass(frozen=True)
class _Scored:
    positions: NDArray[np.intp]
    scores: NDArray[np.float64]
    flagged: list[Flagged]
    flagged_at: NDArray[np.intp]
    rejected: list[tuple[int, Rejected]]

    @staticmethod
    def empty() -> _Scored:
        none = np.zeros(0, dtype=np.intp)
        return _Scored(none, np.zeros(0, dtype=np.float64), [], none, [])


def _score_events(
    records: Sequence[RawRecord],
    events: list[dict[str, Any]],
    positions: NDArray[np.intp],
    detector: Detector,
    event_times: NDArray[np.float64],
    now_s: float,
) -> _Scored:
    """Featurize, embed and score the parsed events; anomaly records for the flagged ones."""
    features, errors = detector.featurizer.transform_valid(events)
    rejected = [(int(positions[j]), _rejected(records[positions[j]], err)) for j, err in errors.items()]
    if errors:
        valid = np.setdiff1d(np.arange(len(events)), np.fromiter(errors, dtype=np.intp, count=len(errors)))
        if len(valid) == 0:
            return _Scored(valid, np.zeros(0, dtype=np.float64), [], valid, rejected)
        features, positions, events = features[valid], positions[valid], [events[j] for j in valid.tolist()]
    result = detector.scorer.score(detector.embed(features))
    own_times = _event_times(events, detector.spec.timestamp_field)
    known = ~np.isnan(own_times)
    event_times[positions[known]] = own_times[known]
    flagged: list[Flagged] = []
    rows = np.flatnonzero(result.flagged)
    if len(rows):
        flagged_events = [events[k] for k in rows.tolist()]
        explanations = detector.explainer.explain(features[rows], result.nearest_centroid[rows], flagged_events, top=3)
        detected_at = iso_utc(now_s)
        timestamps = iso_utc_many(own_times[rows])
        for k, event, deviations, timestamp in zip(
            rows.tolist(), flagged_events, explanations, timestamps, strict=True
        ):
            record = records[positions[k]]
            event_id = _event_id(event, detector.spec.id_field, record)
            nearest_class = detector.scorer.class_names[int(result.nearest_class[k])]
            score = float(result.score[k])
            anomaly = build_anomaly_record(
                event_id=event_id,
                event_timestamp=timestamp,
                detected_at=detected_at,
                score=score,
                threshold=detector.threshold,
                p_value=float(result.p_value[k]),
                nearest_class=nearest_class,
                nearest_distance=float(result.distance[k]),
                margin=float(result.margin[k]),
                model_version=detector.version,
                deviations=deviations,
                event=event,
            )
            flagged.append(Flagged(record, event_id, score, nearest_class, anomaly))
    return _Scored(positions, result.score, flagged, positions[rows], rejected)


def _event_times(events: list[dict[str, Any]], field: str | None) -> NDArray[np.float64]:
    """Event time (unix seconds) of each event, NaN where absent or unusable.

    One vectorised pass when all are plain numbers; otherwise value by value.
    """
    if field is None:
        return np.full(len(events), np.nan)
    values = [event.get(field) for event in events]
    if values and set(map(type, values)) <= {float, int}:
        seconds = np.asarray(values, dtype=np.float64)
        if np.isfinite(seconds).all() and (seconds >= 0).all():
            seconds = np.where(seconds > MILLISECONDS_ABOVE, seconds / 1000.0, seconds)
            if (seconds <= LATEST_SECONDS).all():
                return seconds
    parsed = [epoch_seconds(v) for v in values]
    return np.array([np.nan if s is None else s for s in parsed], dtype=np.float64)


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
