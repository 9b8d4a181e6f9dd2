"""What the worker publishes for a batch: anomaly records and dead letters (shared contracts)."""

from __future__ import annotations

from typing import Protocol

from worker.anomaly_record import MODEL_VERSION_HEADER, encode_anomaly_record
from worker.outcomes import BatchResult, Rejected

Header = tuple[str, bytes]


class Sink(Protocol):
    """Where outputs go (a Kafka producer in production, a list in tests)."""

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Header]) -> None: ...

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float) -> None: ...


def dead_letter_headers(rejected: Rejected) -> list[Header]:
    """KIP-1034-style headers: error type, reason, message and the source coordinates."""
    record = rejected.record
    return [
        ("kestrel.error.type", rejected.error_type.encode()),
        ("kestrel.error.reason", rejected.reason.encode()),
        ("kestrel.error.message", rejected.message.encode("utf-8", "replace")),
        ("kestrel.source.topic", record.topic.encode()),
        ("kestrel.source.partition", str(record.partition).encode()),
        ("kestrel.source.offset", str(record.offset).encode()),
    ]


#: Dead letters with a larger value are sent without it (header ``kestrel.error.value_dropped``
#: holds the original size): a value above the producer's 1 MiB request limit could never be
#: delivered and would stall the partition for ever.
MAX_DEAD_LETTER_VALUE_BYTES = 900_000


def send_outputs(result: BatchResult, sink: Sink, output_topic: str, dead_letter_topic: str) -> tuple[int, int]:
    """Send every flagged event's anomaly record and every rejected record's dead letter.

    The dead letter's value is the original bytes untouched (null stays null) and its key
    the original key, except a value over :data:`MAX_DEAD_LETTER_VALUE_BYTES`, which is
    dropped and its size recorded in a header. Returns ``(anomalies sent, dead letters sent)``.
    """
    version_header = [(MODEL_VERSION_HEADER, result.model_version.encode())]
    for flagged in result.flagged:
        sink.send(output_topic, encode_anomaly_record(flagged.anomaly), flagged.event_id.encode(), version_header)
    for rejected in result.rejected:
        record = rejected.record
        headers = dead_letter_headers(rejected)
        if record.value is not None and len(record.value) > MAX_DEAD_LETTER_VALUE_BYTES:
            headers.append(("kestrel.error.value_dropped", str(len(record.value)).encode()))
            sink.send(dead_letter_topic, None, record.key, headers)
        else:
            sink.send(dead_letter_topic, record.value, record.key, headers)
    return len(result.flagged), len(result.rejected)
