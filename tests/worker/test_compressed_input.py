"""Input compressed by its producer (gzip, lz4, snappy, zstd; Java producers often use lz4 or zstd)
is read by both sources, every offset in order.

kafka-python decompresses lz4, snappy and zstd only with optional packages (lz4, python-snappy,
zstandard; dependencies of the project): without them a compressed batch failed every poll with
``UnsupportedCodecError`` and the partition stalled while /healthz stayed 200.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import Producer as LibrdkafkaProducer
from kafka import codec as kafka_codec
from kafka_harness import Topics, source_that_read

from worker.__main__ import warn_about_kafka_python
from worker.kafka_config import missing_codecs

CODECS = ["gzip", "lz4", "snappy", "zstd"]


def test_kafka_python_can_read_every_codec_a_producer_may_use() -> None:
    assert missing_codecs() == []
    payload = b'{"id": "e1", "value": 1.5}' * 50
    for name in CODECS:
        assert getattr(kafka_codec, f"has_{name}")(), f"kafka-python cannot read {name}"
        decode, encode = getattr(kafka_codec, f"{name}_decode"), getattr(kafka_codec, f"{name}_encode")
        assert decode(encode(payload)) == payload, name


@pytest.mark.parametrize(("crc", "warned"), [("c", ["kafka_codecs_missing"]), ("librdkafka", [])])
def test_start_up_warns_when_a_codec_kafka_python_needs_is_missing(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, crc: str, warned: list[str]
) -> None:
    monkeypatch.setattr(kafka_codec, "has_lz4", lambda: False)
    assert missing_codecs() == ["lz4"]
    with caplog.at_level(logging.WARNING, logger="worker"):
        warn_about_kafka_python(crc)
    records = [r for r in caplog.records if r.getMessage().startswith("kafka_")]
    assert [r.getMessage() for r in records] == warned
    assert all(r.codecs == ["lz4"] for r in records)  # type: ignore[attr-defined]


def _produce(bootstrap: str, topic: str, values: list[bytes], **config: Any) -> None:
    producer = LibrdkafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 5, **config})
    for value in values:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0


@pytest.mark.kafka
@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
@pytest.mark.parametrize("codec", CODECS)
def test_source_reads_every_offset_of_a_compressed_batch_between_plain_ones(
    kafka_broker: Any, client: str, codec: str
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=1)
    values = [f'{{"n": {i}, "pad": "{"x" * 40}"}}'.encode() for i in range(9)]
    _produce(bootstrap, topics.input, values[:3])
    _produce(bootstrap, topics.input, values[3:6], **{"compression.type": codec})
    _produce(bootstrap, topics.input, values[6:])
    with source_that_read(bootstrap, topics.input, client, len(values), f"{codec}-compressed records") as (_, got):
        assert [r.offset for r in got] == list(range(len(values)))
        assert [r.value for r in got] == values
