"""Fit every output to what the Kafka client and broker accept *before* it is sent (pure).

A record the client refuses (key and value both null) or the broker refuses (larger than the
producer's ``max_request_bytes``) would otherwise be retried for ever or crash the loop, and
every replica would meet the same input record in turn. The rules, in order, each applied only
while the record is still too large:

Dead letters (value = the original bytes, key = the original key, the input's own headers
first, then the ``kestrel.*`` headers): the largest of the three parts is dropped first, then
the next largest, until the record fits:
  - the value (header ``kestrel.error.value_dropped`` = its size);
  - the key, replaced by the source coordinates (``kestrel.error.key_dropped`` = its size);
  - the input's own headers (``kestrel.error.headers_dropped`` = their count).
  A dead letter with neither key nor value gets the source coordinates ``topic:partition:offset``
  as key (header ``kestrel.key_substituted``): Kafka allows such records (tombstones), clients
  do not all send them.

Anomaly records (key = event id):
  0. an event the JSON encoder cannot write back (an extra field nested deeper than orjson's 255
     levels: the decoder reads up to 1,024) is left out whatever the size (``"event": null``,
     header ``kestrel.event_dropped`` = ``unencodable``; carried as received, such a record would be
     deeper than JSON readers take);
  1. the original event is left out (``"event": null``, header ``kestrel.event_dropped`` = the
     record's size);
  2. the explanation's field values are left out (header ``kestrel.explanation_dropped``);
  3. the event id is replaced by the source coordinates (header ``kestrel.event_id_replaced``).
After these steps a record is at most about 1.5 kB plus its topic names (the error message header
is cut to 1,000 characters), far below any sane limit (``MIN_REQUEST_BYTES``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from worker.anomaly_record import MODEL_VERSION_HEADER, encode_anomaly_record
from worker.outcomes import Flagged, RawRecord, Rejected

Header = tuple[str, bytes]

#: Bytes of a one-record v2 batch beyond its key, value and headers (61 batch header + at most
#: 36 record framing), plus 10 per header (varint lengths); an upper bound of the client's estimate.
BATCH_OVERHEAD = 97
HEADER_OVERHEAD = 10
#: Longest error message written into a dead letter's header.
MAX_MESSAGE_CHARS = 1000
#: The smallest ``max_request_bytes`` these rules are guaranteed to fit into.
MIN_REQUEST_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to publish, with the input record it comes from (for logs and accounting)."""

    kind: str  # "anomaly" or "dead_letter"
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    source: RawRecord

    @property
    def size(self) -> int:
        return record_size(self.key, self.value, self.headers)

    def where(self) -> dict[str, Any]:
        """The source coordinates, for log lines."""
        return {"topic": self.source.topic, "partition": self.source.partition, "offset": self.source.offset}


def record_size(key: bytes | None, value: bytes | None, headers: list[Header]) -> int:
    """Upper bound of the bytes one record takes in a produce request (message format v2)."""
    size = BATCH_OVERHEAD + len(key or b"") + len(value or b"")
    return size + sum(len(name.encode()) + len(data) + HEADER_OVERHEAD for name, data in headers)


def coordinates(record: RawRecord) -> bytes:
    """``topic:partition:offset`` of the input record, as a key."""
    return f"{record.topic}:{record.partition}:{record.offset}".encode()


def dead_letter_headers(rejected: Rejected) -> list[Header]:
    """KIP-1034-style headers: error type, reason, message and the source coordinates."""
    record = rejected.record
    return [
        ("kestrel.error.type", rejected.error_type.encode()),
        ("kestrel.error.reason", rejected.reason.encode()),
        ("kestrel.error.message", rejected.message[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
        ("kestrel.source.topic", record.topic.encode()),
        ("kestrel.source.partition", str(record.partition).encode()),
        ("kestrel.source.offset", str(record.offset).encode()),
    ]


def fit_dead_letter(topic: str, rejected: Rejected, max_request_bytes: int) -> OutputRecord:
    """The dead letter of ``rejected``, shrunk by the module's rules to ``max_request_bytes``."""
    record = rejected.record
    own, notes = list(record.headers), dead_letter_headers(rejected)
    key, value = record.key, record.value

    def size() -> int:
        return record_size(key if key is not None or value is not None else coordinates(record), value, own + notes)

    parts = {"value": len(value or b""), "key": len(key or b""), "headers": sum(len(d) + len(n) for n, d in own)}
    for part in sorted(parts, key=parts.__getitem__, reverse=True):  # the largest part goes first
        if size() <= max_request_bytes:
            break
        if part == "value" and value is not None:
            notes.append(("kestrel.error.value_dropped", str(len(value)).encode()))
            value = None
        elif part == "key" and key is not None:
            notes.append(("kestrel.error.key_dropped", str(len(key)).encode()))
            key = coordinates(record)
        elif part == "headers" and own:
            notes.append(("kestrel.error.headers_dropped", str(len(own)).encode()))
            own = []
    if key is None and value is None:
        key = coordinates(record)
        notes.append(("kestrel.key_substituted", b"source-coordinates"))
    return OutputRecord("dead_letter", topic, key, value, own + notes, record)


def fit_anomaly(topic: str, flagged: Flagged, model_version: str, max_request_bytes: int) -> OutputRecord:
    """The anomaly record of ``flagged``, shrunk by the module's rules to ``max_request_bytes``."""
    anomaly = flagged.anomaly
    key = flagged.event_id.encode()
    headers: list[Header] = [(MODEL_VERSION_HEADER, model_version.encode())]
    try:
        value = encode_anomaly_record(anomaly)
    except orjson.JSONEncodeError:  # an extra field nested deeper than the encoder writes (255 levels)
        headers.append(("kestrel.event_dropped", b"unencodable"))
        anomaly = {**anomaly, "event": None}
        value = encode_anomaly_record(anomaly)
    if record_size(key, value, headers) > max_request_bytes:
        headers.append(("kestrel.event_dropped", str(len(value)).encode()))
        anomaly = {**anomaly, "event": None}
        value = encode_anomaly_record(anomaly)
    if record_size(key, value, headers) > max_request_bytes:
        headers.append(("kestrel.explanation_dropped", b"1"))
        anomaly = {**anomaly, "explanation": {"text": "explanation left out: too large to publish", "fields": []}}
        value = encode_anomaly_record(anomaly)
    if record_size(key, value, headers) > max_request_bytes:
        headers.append(("kestrel.event_id_replaced", b"source-coordinates"))
        key = coordinates(flagged.record)
        value = encode_anomaly_record({**anomaly, "event_id": key.decode()})
    return OutputRecord("anomaly", topic, key, value, headers, flagged.record)
