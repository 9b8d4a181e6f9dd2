"""Every output fits what the client and broker accept, whatever the input record was."""

from __future__ import annotations

import dataclasses

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.outcomes import Flagged, RawRecord, Rejected
from worker.output_guard import (
    MIN_REQUEST_BYTES,
    coordinates,
    fit_anomaly,
    fit_dead_letter,
    record_size,
)

LIMIT = 100_000


def _rejected(key: bytes | None, value: bytes | None, headers: tuple[tuple[str, bytes], ...] = ()) -> Rejected:
    record = RawRecord("events", 2, 41, 0, key, value, headers)
    return Rejected(record, "invalid_json", "InvalidEventError", "value is not valid JSON")


def test_an_ordinary_dead_letter_is_the_original_record_plus_kestrel_headers() -> None:
    own = (("traceparent", b"00-abc-def-01"), ("schema-id", b"7"))
    out = fit_dead_letter("dlq", _rejected(b"k", b"{nope", own), LIMIT)
    assert (out.topic, out.key, out.value, out.kind) == ("dlq", b"k", b"{nope", "dead_letter")
    assert out.headers[:2] == list(own)  # the input's own headers travel first, unchanged
    names = dict(out.headers)
    assert names["kestrel.source.offset"] == b"41" and names["kestrel.error.reason"] == b"invalid_json"
    assert "kestrel.key_substituted" not in names


def test_a_keyless_tombstone_gets_its_coordinates_as_key() -> None:
    out = fit_dead_letter("dlq", _rejected(None, None), LIMIT)
    assert out.value is None and out.key == b"events:2:41"
    assert dict(out.headers)["kestrel.key_substituted"] == b"source-coordinates"


def test_a_keyless_oversized_value_is_dropped_and_the_key_substituted() -> None:
    out = fit_dead_letter("dlq", _rejected(None, b"x" * LIMIT), LIMIT)
    headers = dict(out.headers)
    assert out.value is None and out.key == b"events:2:41"
    assert headers["kestrel.error.value_dropped"] == str(LIMIT).encode()
    assert out.size <= LIMIT


def test_a_huge_key_is_replaced_by_the_coordinates() -> None:
    out = fit_dead_letter("dlq", _rejected(b"k" * LIMIT, b"{}"), LIMIT)
    headers = dict(out.headers)
    assert out.key == coordinates(out.source) and out.value == b"{}"  # the largest part goes, the value stays
    assert headers["kestrel.error.key_dropped"] == str(LIMIT).encode()
    assert out.size <= LIMIT


def test_huge_input_headers_are_dropped_and_the_small_key_and_value_kept() -> None:
    own = tuple((f"h{i}", b"v" * 1000) for i in range(200))
    out = fit_dead_letter("dlq", _rejected(b"k", b"{}", own), LIMIT)
    assert dict(out.headers)["kestrel.error.headers_dropped"] == b"200"
    assert not any(name.startswith("h") for name, _ in out.headers)
    assert (out.key, out.value) == (b"k", b"{}")
    assert out.size <= LIMIT


def test_a_long_error_message_is_truncated() -> None:
    record = RawRecord("events", 0, 1, 0, b"k", b"{}")
    out = fit_dead_letter("dlq", Rejected(record, "wrong_type", "InvalidEventError", "m" * 50_000), LIMIT)
    assert len(dict(out.headers)["kestrel.error.message"]) == 1000


def _flagged(event: dict[str, object], event_id: str = "e-1") -> Flagged:
    anomaly = {
        "event_id": event_id,
        "score": 3.0,
        "explanation": {"text": "x", "fields": [{"value": "v"}]},
        "event": event,
    }
    return Flagged(RawRecord("events", 0, 9, 0, None, orjson.dumps(event)), event_id, 3.0, "normal", anomaly)


def test_an_ordinary_anomaly_record_is_sent_whole() -> None:
    out = fit_anomaly("anomalies", _flagged({"a": 1}), "v1", LIMIT)
    assert out.key == b"e-1" and orjson.loads(out.value or b"")["event"] == {"a": 1}
    assert out.headers == [("model_version", b"v1")]


def test_an_oversized_anomaly_record_drops_the_event_then_the_details_then_the_id() -> None:
    big = "\u0001" * LIMIT  # JSON escapes each control character as six bytes
    out = fit_anomaly("anomalies", _flagged({"a": big}), "v1", LIMIT)
    record = orjson.loads(out.value or b"")
    assert record["event"] is None and record["explanation"]["fields"] == [{"value": "v"}]
    assert out.size <= LIMIT
    out = fit_anomaly("anomalies", _flagged({"a": 1}, event_id="i" * LIMIT), "v1", LIMIT)
    record = orjson.loads(out.value or b"")
    assert out.key == b"events:0:9" and record["event_id"] == "events:0:9" and record["explanation"]["fields"] == []
    assert {"kestrel.event_dropped", "kestrel.explanation_dropped", "kestrel.event_id_replaced"} <= dict(
        out.headers
    ).keys()
    assert out.size <= LIMIT


def test_an_event_the_encoder_cannot_write_back_is_left_out_not_a_crash() -> None:
    """Found in review: an anomalous event with an extra field nested 300 deep (orjson reads 1,024
    levels, writes 255) raised in the loop and crash-looped every replica."""
    raw = b'{"a": 1, "trace": ' + b"[" * 300 + b"]" * 300 + b"}"
    flagged = _flagged({"a": 1})
    flagged = dataclasses.replace(flagged, anomaly={**flagged.anomaly, "event": orjson.loads(raw)})
    out = fit_anomaly("anomalies", flagged, "v1", LIMIT)
    record = orjson.loads(out.value or b"")
    assert record["event"] is None and record["event_id"] == "e-1" and record["explanation"]["fields"]
    assert out.headers == [("model_version", b"v1"), ("kestrel.event_dropped", b"unencodable")]


sizes = st.sampled_from([0, 1, 100, MIN_REQUEST_BYTES, LIMIT, 3 * LIMIT])


@settings(max_examples=150, deadline=None)
@given(
    key=st.none() | sizes.map(lambda n: b"k" * n),
    value=st.none() | sizes.map(lambda n: b"v" * n),
    n_headers=st.integers(0, 30),
    header_size=sizes,
    limit=st.sampled_from([MIN_REQUEST_BYTES, LIMIT, 1_000_000]),
)
def test_every_dead_letter_fits_and_has_a_key_or_value(
    key: bytes | None, value: bytes | None, n_headers: int, header_size: int, limit: int
) -> None:
    own = tuple((f"h{i}", b"x" * header_size) for i in range(n_headers))
    out = fit_dead_letter("dlq", _rejected(key, value, own), limit)
    assert out.key is not None or out.value is not None
    assert record_size(out.key, out.value, out.headers) <= limit
