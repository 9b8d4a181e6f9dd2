"""The retrain job's bounded Kafka window on an in-memory consumer: memory cap, backward chunks, timeout."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import TopicPartition

import training.retrain.kafka_source as kafka_source
from training.retrain.kafka_security import KafkaSecurity
from training.retrain.kafka_source import KafkaWindow, _read

TOPIC = "events"


@dataclass
class Message:
    offset: int
    timestamp: int
    value: bytes


class FakeConsumer:
    """Just what the window reader uses of ``KafkaConsumer``; counts the most values it handed out."""

    def __init__(self, partitions: int, per_partition: int, batch: int = 50) -> None:
        # Event i lives on partition i % partitions at timestamp 1_000 + i: newest = highest i.
        self.logs: dict[int, list[Message]] = {p: [] for p in range(partitions)}
        for i in range(partitions * per_partition):
            p = i % partitions
            self.logs[p].append(Message(len(self.logs[p]), 1_000 + i, json.dumps({"i": i}).encode()))
        self.batch = batch
        self.assigned: list[TopicPartition] = []
        self.positions: dict[TopicPartition, int] = {}
        self.handed_out = 0
        self.polls = 0

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.logs) if topic == TOPIC else set()

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp.partition]) for tp in tps}

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)

    def offsets_for_times(self, wanted: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        found = {}
        for tp, ts in wanted.items():
            offset = next((m.offset for m in self.logs[tp.partition] if m.timestamp >= ts), None)
            found[tp] = None if offset is None else types.SimpleNamespace(offset=offset)
        return found

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Message]]:
        self.polls += 1
        out = {}
        for tp in self.assigned:
            got = self.logs[tp.partition][self.positions[tp] : self.positions[tp] + self.batch]
            if got:
                out[tp] = got
                self.positions[tp] += len(got)
                self.handed_out += len(got)
        return out


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


def test_security_settings_come_from_the_worker_variables_and_never_show_the_password(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
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
