"""The window reader's consumer calls, on the fake *and* a real ``KafkaConsumer`` on the broker.

The fake in ``fake_kafka_consumer.py`` stands in for the client in ``test_kafka_window.py``; it may
be used there only for what this suite shows it does like the real client. Both hold the same
records: event ``i`` on partition ``i % 2`` at timestamp ``base + i`` seconds.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fake_kafka_consumer import FakeConsumer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka_topics import new_topic

from training.retrain.kafka_source import KafkaWindow, _read

PARTITIONS, PER_PARTITION, STEP_MS = 2, 60, 1_000
BASE_MS = int(time.time() * 1000) - 600_000  # ten minutes ago: inside any broker's retention


def _real(bootstrap: str) -> tuple[KafkaConsumer, str]:
    topic = new_topic(bootstrap, PARTITIONS, prefix="window")
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(PARTITIONS * PER_PARTITION):
        value = json.dumps({"i": i}).encode()
        producer.send(topic, value=value, partition=i % PARTITIONS, timestamp_ms=BASE_MS + i * STEP_MS)
    producer.flush(30)
    producer.close()
    return KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None), topic


@pytest.fixture(params=["fake", "kafka-python"])
def consumer(request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    if request.param == "fake":
        fake = FakeConsumer(PARTITIONS, PER_PARTITION, batch=7, topic="window-fake", base_ms=BASE_MS, step_ms=STEP_MS)
        yield fake, "window-fake"
        return
    real, topic = _real(request.getfixturevalue("kafka_broker").bootstrap_servers)
    try:
        yield real, topic
    finally:
        real.close(autocommit=False)


def _poll_to(client: Any, tps: list[TopicPartition], end: int) -> dict[int, list[Any]]:
    got: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
    deadline = time.monotonic() + 30
    while any(client.position(tp) < end for tp in tps) and time.monotonic() < deadline:
        for tp, batch in client.poll(timeout_ms=500).items():
            got[tp.partition].extend(batch)
    return got


@pytest.mark.kafka
def test_partitions_beginnings_and_ends(consumer: tuple[Any, str]) -> None:
    client, topic = consumer
    assert client.partitions_for_topic(topic) == set(range(PARTITIONS))
    assert not client.partitions_for_topic(f"missing-{uuid.uuid4().hex[:10]}")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    client.assign(tps)
    assert client.beginning_offsets(tps) == dict.fromkeys(tps, 0)
    # An end offset is never past the log; it may be short of it (the embedded broker answers with
    # the start of the last record batch), which is why the reader reads its newest chunk open-ended.
    assert all(0 < end <= PER_PARTITION for end in client.end_offsets(tps).values())


@pytest.mark.kafka
def test_offsets_for_times_find_the_first_record_at_or_after_a_time(consumer: tuple[Any, str]) -> None:
    client, topic = consumer
    tp = TopicPartition(topic, 1)
    client.assign([tp])
    # Event 20 is on partition 0; event 21 is offset 10 here. The answer may come early (the
    # embedded broker answers with the start of the record batch that holds the time), never late.
    found = client.offsets_for_times({tp: BASE_MS + 20 * STEP_MS})
    assert 0 <= found[tp].offset <= 10
    # A time after every record: no offset (the embedded broker answers offset 0 with timestamp -1).
    after = client.offsets_for_times({tp: BASE_MS + 10**7})[tp]
    assert after is None or after.timestamp < 0


@pytest.mark.kafka
def test_seek_poll_and_position_hand_out_the_records_in_order(consumer: tuple[Any, str]) -> None:
    client, topic = consumer
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    client.assign(tps)
    for tp in tps:
        client.seek(tp, 45)
    got = _poll_to(client, tps, PER_PARTITION)
    for p in range(PARTITIONS):
        assert [m.offset for m in got[p]] == list(range(45, PER_PARTITION))
        expected = [PARTITIONS * o + p for o in range(45, PER_PARTITION)]
        assert [json.loads(m.value)["i"] for m in got[p]] == expected
        assert [m.timestamp for m in got[p]] == [BASE_MS + i * STEP_MS for i in expected]
    assert [client.position(tp) for tp in tps] == [PER_PARTITION] * PARTITIONS


@pytest.mark.kafka
def test_the_reader_gets_the_same_window_from_both(consumer: tuple[Any, str]) -> None:
    client, topic = consumer
    total = PARTITIONS * PER_PARTITION
    got = _read(client, KafkaWindow("contract", topic, last=25, timeout_s=30))
    assert [e["i"] for e in got.events] == list(range(total - 25, total)) and not got.timed_out
    everything = _read(client, KafkaWindow("contract", topic, since_minutes=60, max_events=total, timeout_s=30))
    assert [e["i"] for e in everything.events] == list(range(total))
    # Since half a step after event 60: events 61 on, also where the offset for the time comes early.
    minutes = (time.time() * 1000 - (BASE_MS + 60 * STEP_MS + STEP_MS // 2)) / 60_000
    since = _read(client, KafkaWindow("contract", topic, since_minutes=minutes, timeout_s=30))
    assert [e["i"] for e in since.events] == list(range(61, total))
    # Since after every record: nothing, although one broker's offset for that time is 0.
    minutes = (time.time() * 1000 - (BASE_MS + total * STEP_MS)) / 60_000
    assert _read(client, KafkaWindow("contract", topic, since_minutes=minutes, timeout_s=30)).events == []
