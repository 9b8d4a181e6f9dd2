"""Records whose header names are not UTF-8 (raw bytes on the wire; confluent-kafka decodes them):
the librdkafka worker scores them with a marker header instead of crashing on every restart."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import Message
from expectations import renumber
from kafka import KafkaProducer
from kafka_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    assert_one_partition_set_aside,
    committed_offsets,
    events_bytes,
    produce,
    wait_for,
)
from tiny_model import TinyModel

from worker import confluent_records
from worker.confluent_records import UNREADABLE_HEADERS, raw_records
from worker.outcomes import RawRecord

BAD_NAME = b"\xff\xfebad-name"


class _LibrdkafkaHeaders:
    """``Message.headers`` as confluent-kafka 2.x behaves for the offsets in ``bad``: the first call
    raises ``SystemError`` from ``UnicodeDecodeError``; a second call would hand back the half-built
    list (here: fails the test). Every call is counted per offset."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.calls: dict[int, int] = {}

    def __call__(self, message: Message) -> Any:
        offset = message.offset()
        assert offset is not None
        self.calls[offset] = self.calls.get(offset, 0) + 1
        assert self.calls[offset] == 1, f"headers() of offset {offset} read twice"
        if offset in self.bad:
            try:
                BAD_NAME.decode()
            except UnicodeDecodeError as exc:
                raise SystemError("<method 'headers'> returned a result with an exception set") from exc
        return Message.headers(message)


class _RawName(str):
    """A header name kafka-python writes as raw bytes (its record builder calls ``encode``):
    librdkafka's producer sends ``str(bytes)`` for a bytes name, so it cannot make one."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        return BAD_NAME


def _message(offset: int, headers: list[tuple[str, str | bytes | None]] | None = None) -> Message:
    return Message(topic="in", partition=0, offset=offset, value=b"{}", headers=headers, timestamp=(1, 5))


def _marked(offset: int) -> RawRecord:
    reason = b"'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"
    return RawRecord("in", 0, offset, 5, None, b"{}", ((UNREADABLE_HEADERS, reason),), False)


@pytest.mark.parametrize("bad", [{1}, {0}, {3}, {1, 2}, {0, 1, 2, 3}])
def test_a_message_whose_headers_cannot_be_read_keeps_its_record_with_a_marker(
    bad: set[int], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = _LibrdkafkaHeaders(bad)
    monkeypatch.setattr(confluent_records, "_HEADERS", fake)
    messages = [_message(0), _message(1, [("traceparent", b"00-ab")]), _message(2), _message(3)]
    with caplog.at_level(logging.WARNING, logger="worker.confluent_records"):
        records = raw_records(messages)
    good = {
        0: RawRecord("in", 0, 0, 5, None, b"{}", (), False),
        1: RawRecord("in", 0, 1, 5, None, b"{}", (("traceparent", b"00-ab"),), False),
        2: RawRecord("in", 0, 2, 5, None, b"{}", (), False),
        3: RawRecord("in", 0, 3, 5, None, b"{}", (), False),
    }
    assert records == [_marked(o) if o in bad else good[o] for o in range(4)]
    assert fake.calls == dict.fromkeys(range(4), 1)  # each message's headers() read exactly once
    warnings = [r for r in caplog.records if r.getMessage() == "input_headers_unreadable"]
    assert len(warnings) == 1  # one line per batch, not per record
    assert warnings[0].records == len(bad) and warnings[0].offset == min(bad)  # type: ignore[attr-defined]


def test_a_batch_with_readable_headers_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.confluent_records"):
        assert [r.headers for r in raw_records([_message(0, [("a", b"1")]), _message(1)])] == [(("a", b"1"),), ()]
    assert not caplog.records


@pytest.mark.kafka
@pytest.mark.slow
def test_the_librdkafka_worker_survives_a_header_name_that_is_not_utf8(
    kafka_broker: Any, tiny_model: TinyModel
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=1)
    events = events_bytes(renumber(tiny_model.normal_events[:20], "h"))
    dlq = TopicReader(bootstrap, topics.dlq)
    worker = WorkerProcess(tiny_model.path, bootstrap, topics, client="confluent")
    try:
        worker.wait_ready()
        produce(bootstrap, topics.input, events[:5])
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        for value in (events[5], b"{not json"):  # a valid event and a bad one, each with such a name
            producer.send(topics.input, value=value, partition=0, headers=[(_RawName(), b"v")]).get(10)
        producer.close()
        ends = produce(bootstrap, topics.input, events[6:])
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 60, "all committed")
        assert worker.process.poll() is None, worker.log()
        assert worker.metric("kestrel_events_total") == 21  # 20 events scored + 1 rejected
        [letter] = dlq.wait_count(1, 30)
        headers = dict(letter.headers)
        assert letter.value == b"{not json" and headers["kestrel.source.offset"] == b"6"
        assert headers[UNREADABLE_HEADERS].startswith(b"'utf-8' codec can't decode")
        assert "input_headers_unreadable" in worker.log()
    finally:
        worker.stop_quietly()
        dlq.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_the_kafka_python_worker_sets_aside_the_partition_it_cannot_read_and_reads_the_others(
    kafka_broker: Any, tiny_model: TinyModel
) -> None:
    """Found in review: kafka-python keeps a dead iterator after a batch it cannot read and never
    fetches again, so the whole consumer stalled silently (healthy, lag 0). The partition is now
    paused at the record (the client decodes a batch from its start, so it cannot skip it), the
    others are read and committed to their ends, and liveness holds."""
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=3)
    events = events_bytes(renumber(tiny_model.normal_events[:30], "k"))
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    for i, value in enumerate(events):  # event 9 is partition 0's offset 3
        headers = [(_RawName(), b"v")] if i == 9 else []
        producer.send(topics.input, value=value, partition=i % 3, headers=headers).get(10)
    producer.close()
    ends, expected = {0: 10, 1: 10, 2: 10}, {0: 3, 1: 10, 2: 10}
    assert_one_partition_set_aside(tiny_model.path, bootstrap, topics, "kafka-python", ends, expected, at=3)
