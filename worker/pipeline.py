"""The pure scoring pipeline: raw Kafka records + a loaded detector -> one outcome per record.

No I/O, no Kafka, no metrics, no clock (the caller passes ``now_s``). Per batch: one encoder
forward pass, one distance computation, and explanations only for the flagged rows. Events that
carry the spec's fields and no others, with values of the expected JSON types (the common case),
are decoded once by the spec-typed decoder straight to feature columns
(:class:`worker.typed_decode.TypedDecoder`); flagged ones are parsed again to dicts, for their
anomaly records. The values it refuses take the exact path (``orjson`` to dicts,
:meth:`Featurizer.transform_valid`), which scores what is valid there (an extra field, a numeric
string, an integer category code) and says why the rest is rejected. Which path a record takes
does not change its outcome (scores can still differ in the last float32 bits with the batch's
size, as any batched forward pass does).

Rejection reasons decided here, before parsing: ``empty`` (no value or zero bytes), ``too_large``
(more than ``max_value_bytes``), ``not_utf8``, ``invalid_json`` (including NaN/Infinity literals,
which are not JSON), ``not_an_object``. The featurizer adds ``missing_field``, ``wrong_type`` and
``not_finite``. Unknown categories are scored, never rejected.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from detector.errors import InvalidEventError
from detector.model import Detector
from detector.scorer import ScoreResult
from worker.anomaly_record import build_anomaly_record
from worker.event_time import LATEST_SECONDS, MILLISECONDS_ABOVE, epoch_seconds, iso_utc, iso_utc_many
from worker.outcomes import BatchResult, Flagged, RawRecord, Rejected
from worker.typed_decode import TypedDecoder
from worker.wide_integers import may_be_wide_integer


def score_batch(
    records: Sequence[RawRecord],
    detector: Detector,
    *,
    max_value_bytes: int,
    now_s: float,
    decoder: TypedDecoder | None = None,
) -> BatchResult:
    """Validate and score a batch; never raises for bad input (every record gets an outcome).

    Args:
        records: the consumed records.
        detector: the live detector.
        max_value_bytes: values longer than this are rejected as ``too_large`` unparsed.
        now_s: unix seconds used as ``detected_at`` of anomaly records.
        decoder: the detector's typed decoder (built once per model by the caller; built here
            when not given or built for another spec).
    """
    event_times = np.full(len(records), np.nan)
    values = list(map(_value, records))
    if decoder is None or decoder.spec is not detector.spec:
        decoder = TypedDecoder(detector.spec)
    typed = decoder.decode_batch(_screened(values, max_value_bytes))
    rows = _Rows(
        features=detector.featurizer.transform_columns(typed.numeric, typed.categorical),
        positions=np.setdiff1d(np.arange(len(records)), typed.failed) if typed.failed else np.arange(len(records)),
        own_times=_event_times(typed.timestamps),
    )
    rejected: list[tuple[int, Rejected]] = []
    if typed.failed:
        exact, rejected = _exact_rows(records, values, typed.failed, detector, max_value_bytes)
        rows = rows.merged(exact)
    scored, flagged = _score_rows(records, values, rows, detector, event_times, now_s)
    return BatchResult(
        records=records,
        scored=rows.positions,
        scores=scored.score,
        flagged=flagged,
        flagged_at=rows.positions[scored.flagged],
        rejected=[r for _, r in rejected],
        event_times_s=event_times,
        model_version=detector.version,
    )


@dataclass(frozen=True)
class _Rows:
    """Valid events of a batch, featurized, by ascending input position (their dicts are not kept:
    a flagged event is parsed again from its bytes)."""

    features: NDArray[np.float32]
    positions: NDArray[np.intp]
    own_times: NDArray[np.float64]

    def merged(self, other: _Rows) -> _Rows:
        positions = np.concatenate([self.positions, other.positions])
        order = np.argsort(positions, kind="stable")
        return _Rows(
            features=np.concatenate([self.features, other.features])[order],
            positions=positions[order],
            own_times=np.concatenate([self.own_times, other.own_times])[order],
        )


def _screened(values: list[bytes | None], max_value_bytes: int) -> list[bytes | None]:
    """The values, with oversized ones blanked so that only the exact path looks at them."""
    try:
        if max(map(len, values), default=0) <= max_value_bytes:  # type: ignore[arg-type]
            return values
    except TypeError:  # a record without a value: the typed decoder refuses None too
        pass
    return [v if v is None or len(v) <= max_value_bytes else None for v in values]


#: The exact path parses this much JSON at a time: a parsed value can take ~25x its bytes (an extra
#: field of 20,000 empty objects in 64 KiB), and a whole batch of those took 736 MiB at once.
EXACT_CHUNK_BYTES = 2 * 1024 * 1024


def _exact_rows(
    records: Sequence[RawRecord],
    values: list[bytes | None],
    failed: list[int],
    detector: Detector,
    max_value_bytes: int,
) -> tuple[_Rows, list[tuple[int, Rejected]]]:
    """The exact path for the values the typed decoder refused: what is valid, and why the rest
    is not; in chunks of about :data:`EXACT_CHUNK_BYTES` of values (the value that reaches it
    ends its chunk)."""
    rows: _Rows | None = None
    rejected: list[tuple[int, Rejected]] = []
    start, size = 0, 0
    for end, i in enumerate(failed, 1):
        value = values[i]
        size += len(value) if value is not None and len(value) <= max_value_bytes else 0
        if size >= EXACT_CHUNK_BYTES or end == len(failed):
            part, refused = _exact_chunk(records, values, failed[start:end], detector, max_value_bytes)
            rows = part if rows is None else rows.merged(part)
            rejected += refused
            start, size = end, 0
    assert rows is not None  # failed is never empty
    return rows, rejected


def _exact_chunk(
    records: Sequence[RawRecord],
    values: list[bytes | None],
    failed: list[int],
    detector: Detector,
    max_value_bytes: int,
) -> tuple[_Rows, list[tuple[int, Rejected]]]:
    """:func:`_exact_rows` for one chunk."""
    subset = np.asarray(failed, dtype=np.intp)
    sub_records = [records[i] for i in failed]
    events, parsed_at, rejected = _parse_all(sub_records, [values[i] for i in failed], max_value_bytes)
    features, errors = detector.featurizer.transform_valid(events)
    if errors:
        rejected += [(parsed_at[j], _rejected(sub_records[parsed_at[j]], err)) for j, err in errors.items()]
        rejected.sort(key=lambda item: item[0])
        keep = [j for j in range(len(events)) if j not in errors]
        features, events, parsed_at = features[keep], [events[j] for j in keep], [parsed_at[j] for j in keep]
    positions = subset[np.asarray(parsed_at, dtype=np.intp)]
    field = detector.spec.timestamp_field
    own_times = _event_times([event.get(field) for event in events] if field is not None else [None] * len(events))
    return _Rows(features, positions, own_times), [(int(subset[i]), r) for i, r in rejected]


def _parse_all(
    records: Sequence[RawRecord], values: list[bytes | None], max_value_bytes: int
) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, Rejected]]]:
    """JSON objects with their positions in ``records``, and the rejected records with theirs.

    A batch of JSON objects is parsed by one ``map``; the first bad record sends the batch down
    the record-by-record path that says why each one is rejected.
    """
    try:
        if values and max(map(len, values)) <= max_value_bytes:  # type: ignore[arg-type]
            events = list(map(orjson.loads, values))  # type: ignore[arg-type]
            if set(map(type, events)) == {dict}:
                return events, list(range(len(records))), []
    except (orjson.JSONDecodeError, TypeError):
        pass
    events, positions, rejected = [], [], []
    for i, (record, value) in enumerate(zip(records, values, strict=True)):
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


def _rejection(record: RawRecord, max_value_bytes: int) -> Rejected:
    """Why a record whose value is not a JSON object within the size limit is rejected."""
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


def _score_rows(
    records: Sequence[RawRecord],
    values: list[bytes | None],
    rows: _Rows,
    detector: Detector,
    event_times: NDArray[np.float64],
    now_s: float,
) -> tuple[ScoreResult, list[Flagged]]:
    """Embed and score the rows (one forward pass); anomaly records for the flagged ones.

    Writes each row's own event time into ``event_times`` (per input position) where it has one.
    """
    result = detector.score_features(rows.features)
    known = ~np.isnan(rows.own_times)
    event_times[rows.positions[known]] = rows.own_times[known]
    flagged: list[Flagged] = []
    flagged_rows = np.flatnonzero(result.flagged)
    if not len(flagged_rows):
        return result, flagged
    at = rows.positions[flagged_rows].tolist()
    events = [orjson.loads(values[p]) for p in at]
    explanations = detector.explainer.explain(
        rows.features[flagged_rows], result.nearest_centroid[flagged_rows], events, top=3
    )
    detected_at = iso_utc(now_s)
    timestamps = iso_utc_many(rows.own_times[flagged_rows])
    for k, position, event, deviations, timestamp in zip(
        flagged_rows.tolist(), at, events, explanations, timestamps, strict=True
    ):
        record = records[position]
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
            event=_published_event(event, values[position]),
        )
        flagged.append(Flagged(record, event_id, score, nearest_class, anomaly))
    return result, flagged


def _event_times(values: list[Any]) -> NDArray[np.float64]:
    """Event time (unix seconds) of each timestamp-field value, NaN where absent or unusable.

    One vectorised pass when all are plain numbers; otherwise value by value.
    """
    types = set(map(type, values))
    if types <= {type(None)}:
        return np.full(len(values), np.nan)
    if types <= {float, int}:
        seconds = np.asarray(values, dtype=np.float64)
        if np.isfinite(seconds).all() and (seconds >= 0).all():
            seconds = np.where(seconds > MILLISECONDS_ABOVE, seconds / 1000.0, seconds)
            if (seconds <= LATEST_SECONDS).all():
                return seconds
    parsed = [epoch_seconds(v) for v in values]
    return np.array([np.nan if s is None else s for s in parsed], dtype=np.float64)


def _rejected(record: RawRecord, err: InvalidEventError) -> Rejected:
    return Rejected(record, err.reason, type(err).__name__, str(err))


def _published_event(event: dict[str, Any], value: bytes) -> dict[str, Any] | orjson.Fragment:
    """The event as its anomaly record carries it: orjson's parse, or the received JSON itself
    where a top-level number may be an integer beyond 64 bits (orjson's parse holds it as a float,
    and it cannot write such an integer; found in review: a 128-bit id was published as 8.396e+37,
    then as ``null``). The received value is a JSON object orjson has read, so it is valid JSON;
    it is carried only when orjson can write the event (at most 255 levels deep: found in review, a
    record around an event 1,024 levels deep is deeper than JSON readers take)."""
    if any(may_be_wide_integer(v) for v in event.values()):
        try:
            orjson.dumps(event)
        except orjson.JSONEncodeError:
            return event  # too deep: the output guard leaves it out
        return orjson.Fragment(value.strip())
    return event


def _exact_integer(value: bytes, field: str) -> int | None:
    """``field`` of the received event read by the standard library, which keeps integers of any
    size; ``None`` when it is not an integer there, or when the document is nested deeper than the
    standard library reads (orjson reads 1,024 levels; found in review: a RecursionError escaped
    and crash-looped the worker)."""
    try:
        exact = json.loads(value).get(field)
    except (RecursionError, ValueError):
        return None
    return exact if type(exact) is int else None


def _event_id(event: dict[str, Any], id_field: str | None, record: RawRecord) -> str:
    """The spec's id field when it holds a string or an integer (of any size, written exactly),
    else ``topic:partition:offset``."""
    if id_field is not None:
        value = event.get(id_field)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if may_be_wide_integer(value) and record.value is not None:
            exact = _exact_integer(record.value, id_field)
            if exact is not None:
                return str(exact)
    return f"{record.topic}:{record.partition}:{record.offset}"
