"""The retrain job's bounded Kafka window on an in-memory consumer: memory cap, backward chunks, timeout.

The consumer is held to the real one by ``test_kafka_consumer_contract.py``."""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kafka_consumer import TOPIC, FakeConsumer, Message
from kafka import TopicPartition

import training.retrain.kafka_source as kafka_source
from training.retrain.kafka_security import KafkaSecurity
from training.retrain.kafka_source import KafkaWindow, _read


def ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["i"] for e in events]


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_source, "MIN_CHUNK", 40)


@pytest.mark.usefixtures("small_chunks")
def test_last_n_keeps_the_newest_in_time_order_and_reads_only_the_tail() -> None:
    consumer = FakeConsumer(partitions=3, per_partition=2_000)
    got = _read(consumer, KafkaWindow("fake:9092", TOPIC, last=300))  # type: ignore[arg-type]
    assert ids(got.events) == list(range(5_700, 6_000))
    assert not got.timed_out
    assert consumer.handed_out <= 3 * 300 + 3 * consumer.batch  # each partition from end - 300 at most


@pytest.mark.usefixtures("small_chunks")
def test_max_events_bounds_a_since_window_and_keeps_the_newest() -> None:
    consumer = FakeConsumer(partitions=4, per_partition=1_000)
    window = KafkaWindow("fake:9092", TOPIC, since_minutes=10**9, max_events=250)
    got = _read(consumer, window)  # type: ignore[arg-type]
    assert ids(got.events) == list(range(3_750, 4_000))
    assert consumer.handed_out <= 4 * 250 + 4 * consumer.batch  # never everything since the window start


@pytest.mark.usefixtures("small_chunks")
def test_a_timeout_keeps_the_newest_part_read_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = FakeConsumer(partitions=2, per_partition=1_000, batch=10)
    clock: Iterator[float] = iter(range(10**6))
    # The deadline passes after a few polls: the reader has only seen its newest chunks.
    monkeypatch.setattr(kafka_source, "time", types.SimpleNamespace(monotonic=lambda: next(clock), time=lambda: 0.0))
    got = _read(consumer, KafkaWindow("fake:9092", TOPIC, last=2_000, timeout_s=30))  # type: ignore[arg-type]
    assert got.timed_out
    assert 0 < len(got.events) < 2_000
    assert ids(got.events)[-1] == 1_999  # the newest event is kept, not the oldest part
    assert ids(got.events) == sorted(ids(got.events))


@pytest.mark.usefixtures("small_chunks")
def test_a_partition_without_new_records_does_not_hold_the_read_until_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Live traffic on partition 0 only: the newest chunk stops reading shortly past the end offsets."""
    now_ms = 10**12

    class LiveOnPartitionZero(FakeConsumer):
        def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Message]]:
            log = self.logs[0]
            log.append(Message(len(log), now_ms + self.polls, json.dumps({"i": -1}).encode()))
            return super().poll(timeout_ms)

    consumer = LiveOnPartitionZero(partitions=2, per_partition=1_000)
    clock: Iterator[float] = iter(range(10**7))
    fake_time = types.SimpleNamespace(monotonic=lambda: next(clock) * 0.5, time=lambda: now_ms / 1000)
    monkeypatch.setattr(kafka_source, "time", fake_time)
    got = _read(consumer, KafkaWindow("fake:9092", TOPIC, last=300, timeout_s=120))  # type: ignore[arg-type]
    assert not got.timed_out and len(got.events) == 300
    assert consumer.polls * 0.5 < 120 / 4  # a few seconds of polling, not the whole timeout


def test_security_settings_come_from_the_worker_variables_and_never_show_the_password(ca_file: Path) -> None:
    ca = ca_file
    env = {
        "WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "WORKER_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "WORKER_KAFKA__SASL_USERNAME": "retrain",
        "WORKER_KAFKA__SASL_PASSWORD": "hunter2",
        "WORKER_KAFKA__SSL_CAFILE": str(ca),
    }
    security = KafkaSecurity.from_env(env)
    assert security.client_config() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "retrain",
        "sasl_plain_password": "hunter2",
        "ssl_cafile": str(ca),
    }
    assert "hunter2" not in repr(security) and "hunter2" not in str(KafkaWindow("b", "t", 1, security=security))
    assert KafkaSecurity.from_env(env, sasl_username="other").sasl_username == "other"
    assert KafkaSecurity.from_env({}).client_config() == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ValueError, match="needs sasl_mechanism") as caught:
        KafkaSecurity.from_env({**env, "WORKER_KAFKA__SASL_MECHANISM": ""}, sasl_username=None)
    assert "hunter2" not in str(caught.value)


def test_retrain_refuses_incomplete_sasl_settings_as_usage(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.cli.main import main  # noqa: PLC0415
    from training.cli.retrain import EXIT_USAGE  # noqa: PLC0415

    monkeypatch.setenv("WORKER_KAFKA__SASL_PASSWORD", "hunter2")
    argv = ["retrain", "--registry", str(tmp_path / "r"), "--from-kafka", "--last", "5"]
    assert main([*argv, "--security-protocol", "SASL_SSL", "--sasl-mechanism", "PLAIN"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "needs sasl_mechanism, sasl_username and sasl_password" in err and "hunter2" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.usefixtures("small_chunks")
def test_end_offsets_short_of_the_log_still_give_the_newest_events() -> None:
    """As the embedded broker answers (the start of the last record batch): the newest chunk reads on."""
    consumer = FakeConsumer(partitions=3, per_partition=2_000, end_behind=5)
    got = _read(consumer, KafkaWindow("fake:9092", TOPIC, last=300))  # type: ignore[arg-type]
    assert ids(got.events) == list(range(5_700, 6_000)) and not got.timed_out


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("answer", ["exact", "offset 0"])
def test_a_since_window_stops_reading_at_the_first_chunk_older_than_its_start(
    monkeypatch: pytest.MonkeyPatch, answer: str
) -> None:
    """Where the broker's offset for the start time comes early (the embedded broker answers the
    start of a record batch, or offset 0 with timestamp -1 for a time after every record), the read
    still ends one chunk past the window instead of reading back to ``end - max_events``."""
    # Event i at (now - 4,000 s + i s): the last 10 minutes hold events 3,400 (or 3,401) to 3,999.
    now_ms = int(time.time() * 1000)
    consumer = FakeConsumer(partitions=2, per_partition=2_000, base_ms=now_ms - 4_000_000, step_ms=1_000)
    if answer == "offset 0":
        monkeypatch.setattr(consumer, "offsets_for_times", lambda wanted: {tp: Message(0, -1, b"") for tp in wanted})
    window = KafkaWindow("fake:9092", TOPIC, since_minutes=10, max_events=800)  # chunks of 100 offsets
    got = _read(consumer, window)  # type: ignore[arg-type]
    assert ids(got.events)[0] in (3_400, 3_401) and ids(got.events) == list(range(ids(got.events)[0], 4_000))
    assert not got.timed_out
    # 300 offsets in the window and one older chunk per partition, not the 800 from end - max_events.
    assert consumer.handed_out <= 2 * (300 + 100 + 100)


def test_retrain_reads_the_brokers_and_input_topic_of_the_worker_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same ConfigMap as the workers' points the retrain job at their brokers and topic."""
    from training.cli.main import build_parser  # noqa: PLC0415

    argv = ["retrain", "--registry", "r", "--from-kafka"]
    monkeypatch.delenv("WORKER_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("WORKER_KAFKA__INPUT_TOPIC", raising=False)
    plain = build_parser().parse_args(argv)
    assert (plain.bootstrap_servers, plain.topic) == ("localhost:9092", "events")
    monkeypatch.setenv("WORKER_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    monkeypatch.setenv("WORKER_KAFKA__INPUT_TOPIC", "flows")
    from_env = build_parser().parse_args(argv)
    assert (from_env.bootstrap_servers, from_env.topic) == ("kafka-0:9092,kafka-1:9092", "flows")
    flags = build_parser().parse_args([*argv, "--bootstrap-servers", "b:1", "--topic", "t"])
    assert (flags.bootstrap_servers, flags.topic) == ("b:1", "t")


def test_the_window_reads_committed_records_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the worker's clients: records of aborted or open transactions are not normal traffic to
    learn from (kafka-python's default, read_uncommitted, hands them out; found in review)."""
    asked: dict[str, Any] = {}

    def consumer(**config: Any) -> FakeConsumer:
        asked.update(config)
        return FakeConsumer(partitions=1, per_partition=5, base_ms=int(time.time() * 1000) - 5_000, step_ms=1_000)

    monkeypatch.setattr(kafka_source, "KafkaConsumer", consumer)
    got = kafka_source.read_recent_events(KafkaWindow("fake:9092", TOPIC, last=5))
    assert len(got.events) == 5
    assert asked["isolation_level"] == "read_committed"


def test_a_protocol_option_leaves_out_the_environments_settings_it_does_not_use(ca_file: Path) -> None:
    env = {
        "WORKER_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "WORKER_KAFKA__SASL_MECHANISM": "PLAIN",
        "WORKER_KAFKA__SASL_USERNAME": "u",
        "WORKER_KAFKA__SASL_PASSWORD": "p",
        "WORKER_KAFKA__SSL_CAFILE": str(ca_file),
    }
    assert KafkaSecurity.from_env(env, security_protocol="PLAINTEXT").client_config() == {
        "security_protocol": "PLAINTEXT"
    }
    assert KafkaSecurity.from_env(env, security_protocol="SSL").client_config() == {
        "security_protocol": "SSL",
        "ssl_cafile": str(ca_file),
    }
    with pytest.raises(ValueError, match="set but security_protocol is PLAINTEXT"):
        KafkaSecurity.from_env({"WORKER_KAFKA__SASL_USERNAME": "u"})  # the environment alone stays checked
