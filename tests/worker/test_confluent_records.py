"""librdkafka messages to the worker's records (the unreadable-headers path end to end is
tests/worker/test_confluent_headers.py)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, KafkaError, Message

from worker import confluent_records
from worker.confluent_records import raw_records
from worker.errors import BrokerError
from worker.outcomes import RawRecord


def test_librdkafka_messages_become_records_field_by_field() -> None:
    appended = Message(
        topic="in", partition=2, offset=9, key=b"k", value=None,
        headers=[("traceparent", b"00-ab"), ("empty", None)], timestamp=(TIMESTAMP_LOG_APPEND_TIME, 1234),
    )  # fmt: skip
    eof = Message(topic="in", partition=1, offset=4, error=KafkaError(KafkaError._PARTITION_EOF))
    plain = Message(topic="in", partition=0, offset=7, value=b"{}", timestamp=(1, 55))
    assert raw_records([appended, eof, plain]) == [
        RawRecord("in", 2, 9, 1234, b"k", None, (("traceparent", b"00-ab"), ("empty", b"")), True),
        RawRecord("in", 0, 7, 55, None, b"{}", (), False),
    ]
    assert raw_records([plain]) == [RawRecord("in", 0, 7, 55, None, b"{}", (), False)]
    assert raw_records([eof]) == []


def test_a_fatal_error_in_a_polled_message_is_a_fatal_broker_error() -> None:
    fenced = Message(error=KafkaError(KafkaError._FENCED, "fenced", fatal=True))
    with pytest.raises(BrokerError) as failed:
        raw_records([Message(topic="in", partition=0, offset=1, value=b"{}"), fenced])
    assert failed.value.fatal and "fenced" in str(failed.value)


def test_a_message_with_an_error_is_left_out_and_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka may pass over what it could not read: the worker says where, instead of nothing."""
    monkeypatch.setattr(confluent_records, "_error_logged_at", {})  # nothing logged yet in this process
    bad = Message(topic="in", partition=3, offset=17, error=KafkaError(KafkaError._BAD_MSG, "bad message"))
    eof = Message(topic="in", partition=1, offset=4, error=KafkaError(KafkaError._PARTITION_EOF))
    with caplog.at_level(logging.WARNING, logger="worker.confluent_records"):
        assert raw_records([bad, eof, Message(topic="in", partition=0, offset=7, value=b"{}")]) == [
            RawRecord("in", 0, 7, 0, None, b"{}", (), False)
        ]
    (logged,) = caplog.records
    assert logged.getMessage() == "consume_error"
    assert (logged.topic, logged.partition, logged.offset) == ("in", 3, 17)  # type: ignore[attr-defined]
    again = Message(topic="in", partition=3, offset=18, error=KafkaError(KafkaError._BAD_MSG, "bad message"))
    other = Message(topic="in", partition=4, offset=2, error=KafkaError(KafkaError._BAD_MSG, "bad message"))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="worker.confluent_records"):
        assert raw_records([again, other]) == []
    # The same partition and kind within a minute is not logged again; another partition is.
    assert [(r.getMessage(), r.partition) for r in caplog.records] == [("consume_error", 4)]  # type: ignore[attr-defined]
