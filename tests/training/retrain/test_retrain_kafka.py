"""The retrain job's Kafka source against the real test broker: windows, junk values, flagged rows left out."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer as LibrdkafkaProducer
from corrupt_batches import send
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError
from kafka_topics import new_topic
from tiny_model import TinyModel, load_rows, to_event

import training.retrain.kafka_source as kafka_source
from detector.errors import DataError
from detector.model import Detector
from detector.registry import ModelRegistry
from training.cli.main import main
from training.cli.retrain import EXIT_FAILED, EXIT_KEPT, EXIT_PROMOTED
from training.retrain.feedback import FeedbackOptions, read_verdicts
from training.retrain.kafka_security import KafkaSecurity
from training.retrain.kafka_source import KafkaWindow, read_recent_events

pytestmark = pytest.mark.kafka

JUNK = [b"{not json", b"[1, 2]", b""]


@pytest.fixture(scope="module")
def stream(kafka_broker: Any, tiny_model: TinyModel) -> tuple[str, str, list[dict[str, Any]]]:
    """A 3-partition topic holding junk values, then held-out normals interleaved with attacks."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(bootstrap, 3, prefix="retrain")
    attacks = tiny_model.attack_events[:200]
    events = [*tiny_model.normal_events]
    for i, attack in enumerate(attacks):
        events.insert(i * 3, attack)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    # Explicit, distinct and increasing record timestamps (in the recent past) fix the order across partitions.
    timestamp = int(time.time() * 1000) - 100_000
    for value in JUNK:
        producer.send(topic, value=value, timestamp_ms=timestamp)
        timestamp += 1
    for event in events:
        producer.send(topic, value=orjson.dumps(event), timestamp_ms=timestamp)
        timestamp += 1
    producer.flush(30)
    producer.close()
    return bootstrap, topic, events


def test_last_n_reads_the_newest_events_in_time_order(stream: tuple[str, str, list[dict[str, Any]]]) -> None:
    bootstrap, topic, events = stream
    got = read_recent_events(KafkaWindow(bootstrap, topic, last=300, timeout_s=30))
    assert got.skipped == 0
    assert [e["event_id"] for e in got.events] == [e["event_id"] for e in events[-300:]]
    everything = read_recent_events(KafkaWindow(bootstrap, topic, last=10**6, timeout_s=30))
    assert everything.skipped == len(JUNK) and len(everything.events) == len(events)


def test_max_events_keeps_the_newest_while_reading(
    stream: tuple[str, str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    bootstrap, topic, events = stream
    monkeypatch.setattr(kafka_source, "MIN_CHUNK", 60)  # several backward chunks per partition
    got = read_recent_events(KafkaWindow(bootstrap, topic, since_minutes=60, max_events=150, timeout_s=30))
    assert [e["event_id"] for e in got.events] == [e["event_id"] for e in events[-150:]]
    assert not got.timed_out


def test_live_traffic_on_one_partition_does_not_hold_the_read(kafka_broker: Any) -> None:
    """The real-broker side of the fake's idle-partition case: while one partition keeps receiving
    events and the other none, the read ends shortly after the end offsets, not at its timeout."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(bootstrap, 2, prefix="live")
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(200):
        producer.send(topic, value=orjson.dumps({"i": i}), partition=i % 2)
    producer.flush(30)
    stop = threading.Event()

    def live() -> None:  # one new event every 20 ms, on partition 0 only
        n = 0
        while not stop.is_set():
            producer.send(topic, value=orjson.dumps({"live": n}), partition=0)
            n += 1
            stop.wait(0.02)

    feeder = threading.Thread(target=live, daemon=True)
    feeder.start()
    try:
        started = time.monotonic()
        got = read_recent_events(KafkaWindow(bootstrap, topic, last=100, timeout_s=60))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        feeder.join(5)
        producer.close()
    assert not got.timed_out and len(got.events) == 100
    assert elapsed < 30, f"the read took {elapsed:.1f} s of its 60 s timeout"


def test_unknown_topic_is_a_data_error(stream: tuple[str, str, list[dict[str, Any]]]) -> None:
    bootstrap, _, _ = stream
    with pytest.raises(ValueError, match="does not exist"):
        read_recent_events(KafkaWindow(bootstrap, f"missing-{uuid.uuid4().hex[:8]}", last=5, timeout_s=5))


def test_retrain_from_kafka_trains_on_nothing_the_live_model_flags(
    stream: tuple[str, str, list[dict[str, Any]]],
    tiny_model: TinyModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bootstrap, topic, events = stream
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tiny_model.path)
    registry.promote(tiny_model.version, "first")
    flagged = int(Detector.load(tiny_model.path).score_records(events).flagged.sum())
    argv = ["retrain", "--registry", str(registry.storage.local_path("LIVE").parent), "--from-kafka"]
    argv += ["--bootstrap-servers", bootstrap, "--topic", topic, "--since-minutes", "60"]
    code = main([*argv, "--epochs", "1", "--min-steps", "0", "--target-fpr", "0.05", "--threads", "1", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    assert code in (EXIT_PROMOTED, EXIT_KEPT), summary
    report = json.loads(registry.read_report(summary["candidate_version"], "decision.json"))
    data = report["data"]
    assert data["kafka_events"] == len(events) and data["kafka_values_not_json_objects"] == len(JUNK)
    # Rows the live model flags are not trained on, but calibrated on and held out like the others.
    assert data["unlabelled_rows_flagged_by_live_not_trained"] == flagged > 0
    assert data["normal_rows"] == len(events) == data["n_train"] + data["n_holdout"]
    assert 0 < data["n_train_not_trained"] <= flagged  # those of the training part
    assert report["live"]["version"] == tiny_model.version
    assert report["live"]["fpr"] > 0.0  # judged on the traffic as it is, flagged rows included
    unreachable = ["retrain", "--registry", str(tmp_path / "r2"), "--from-kafka", "--last", "5"]
    unreachable += ["--bootstrap-servers", "127.0.0.1:1", "--kafka-timeout-s", "2"]
    assert main(unreachable) == EXIT_FAILED


def test_feedback_loop_end_to_end(
    kafka_broker: Any, tiny_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Normals v1 flags, marked false positive, are learnt by v2; confirmed attacks stay flagged."""
    bootstrap = kafka_broker.bootstrap_servers
    v1 = Detector.load(tiny_model.path)
    rows = load_rows(12_000)[4_000:]  # rows the tiny model never saw
    events = [to_event(r, 100_000 + i, 1_700_000_000.0 + i) for i, r in enumerate(rows)]
    normals = [e for e, r in zip(events, rows, strict=True) if r["label"] == "normal"]
    attacks = [
        e
        for e, f in zip(tiny_model.attack_events, v1.score_records(tiny_model.attack_events).flagged, strict=True)
        if f
    ]
    false_positives = [e for e, f in zip(normals, v1.score_records(normals).flagged.tolist(), strict=True) if f]
    confirmed = attacks[:60]
    assert len(false_positives) >= 5 and len(confirmed) == 60
    topic = new_topic(bootstrap, 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    timestamp = int(time.time() * 1000) - 100_000
    for event in [*normals, *confirmed]:
        producer.send(topic, value=orjson.dumps(event), timestamp_ms=timestamp)
        timestamp += 1
    producer.flush(30)
    producer.close()
    registry = ModelRegistry(tmp_path / "registry")
    registry.add(tiny_model.path)
    registry.promote(tiny_model.version, "first")
    # Analysts' verdicts, recorded with the feedback command onto a feedback topic.
    verdicts = tmp_path / "verdicts.csv"
    rows = [f"{e['event_id']},false_positive,new normal" for e in false_positives]
    rows += [f"{e['event_id']},confirmed,scan" for e in confirmed]
    verdicts.write_text("event_id,verdict,note\n" + "\n".join(rows) + "\n")
    feedback_topic = new_topic(bootstrap, 1)
    argv = ["feedback", "--file", str(verdicts), "--by", "ann", "--bootstrap-servers", bootstrap]
    assert main([*argv, "--topic", feedback_topic]) == EXIT_PROMOTED
    capsys.readouterr()
    argv = ["retrain", "--registry", str(tmp_path / "registry"), "--from-kafka", "--bootstrap-servers", bootstrap]
    argv += [
        "--topic",
        topic,
        "--since-minutes",
        "60",
        "--feedback-topic",
        feedback_topic,
        "--fpr-tolerance",
        "0.05",
        "--recall-tolerance",
        "0.1",
    ]
    # Confirmed events are ones v1 flagged, so v1's recall on them is 1 by construction: allow 0.1.
    code = main([*argv, "--epochs", "10", "--min-steps", "0", "--target-fpr", "0.05", "--threads", "1", "--quiet"])
    summary = json.loads(capsys.readouterr().out)
    report = json.loads(registry.read_report(summary["candidate_version"], "decision.json"))
    data = report["data"]
    assert data["feedback_verdicts"] == len(rows) and data["feedback_events_not_found"] == 0
    assert data["feedback_false_positive_rows"] == len(false_positives)
    assert data["feedback_confirmed_rows"] == len(confirmed) == data["n_anomalies"]
    assert code == EXIT_PROMOTED, report["reason"]
    v2 = registry.load_version(registry.live_version() or "")
    assert v2.version == summary["candidate_version"]
    assert v2.score_records(false_positives).flagged.mean() <= 0.2  # v1 flagged every one of them
    assert v2.score_records(confirmed).flagged.mean() >= 0.9


def _topic_with_a_batch_that_cannot_be_read(bootstrap: str) -> str:
    topic = new_topic(bootstrap, 1)
    send(bootstrap, topic, [(0, json.dumps({"i": i}).encode()) for i in range(10)])  # offsets 0-9
    send(bootstrap, topic, [(0, json.dumps({"i": i}).encode()) for i in range(10, 15)], corrupt=True)  # 10-14
    send(bootstrap, topic, [(0, json.dumps({"i": i}).encode()) for i in range(15, 20)])  # 15-19
    return topic


@pytest.mark.kafka
def test_a_batch_that_cannot_be_read_is_a_one_line_error_naming_where(
    kafka_broker: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: a gzip batch that does not decompress raised ``zlib.error`` out of the
    window's read and of the feedback topic's, and the retrain job exited with a traceback."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = _topic_with_a_batch_that_cannot_be_read(bootstrap)
    where = "the record batch at partition 0 offset 10 cannot be read (zlib.error: Error -3 while decompressing"
    with pytest.raises(DataError, match=re.escape(where)):
        read_recent_events(KafkaWindow(bootstrap, topic, last=100, timeout_s=20))
    with pytest.raises(DataError, match=re.escape(where)):
        read_verdicts(FeedbackOptions(verdict_topic=topic), KafkaWindow(bootstrap, "events", last=100, timeout_s=20))
    (tmp_path / "registry").mkdir()
    argv = ["retrain", "--registry", str(tmp_path / "registry"), "--from-kafka", "--bootstrap-servers", bootstrap]
    assert main([*argv, "--topic", topic, "--last", "100", "--kafka-timeout-s", "20"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" not in err and [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if "offset 10 cannot be read" in line)
    ]


@pytest.mark.kafka
def test_last_n_counts_events_not_offsets_on_a_transactional_topic(kafka_broker: Any) -> None:
    """Found in review: each partition started at ``end - N`` offsets, and a transaction's commit
    marker takes an offset: ``--last 5`` over one-event transactions read 2 events."""
    bootstrap = kafka_broker.bootstrap_servers
    topic = new_topic(bootstrap, 1)
    producer = LibrdkafkaProducer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    for i in range(20):  # one event per transaction, as an exactly-once producer committing often
        producer.begin_transaction()
        producer.produce(topic, json.dumps({"i": i}).encode(), partition=0)
        producer.commit_transaction(30)
    del producer  # its connections close now, not when the session's broker has gone
    for last in (5, 10):
        got = read_recent_events(KafkaWindow(bootstrap, topic, last=last, timeout_s=30))
        assert [e["i"] for e in got.events] == list(range(20 - last, 20)) and not got.timed_out


class _ProducerOfAGoneBroker:
    """kafka-python's producer with its broker gone: a flush times out, and its close flushes first
    and raises the same before closing anything."""

    closed_without_flush = False

    def __init__(self, **config: object) -> None:
        self._sender = self

    def send(self, *args: object, **kwargs: object) -> object:
        return object()

    def flush(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("Timeout waiting for future")

    def close(self, timeout: float | None = None) -> None:
        if timeout != 0 or not self.closed_without_flush:
            self.flush(timeout)

    def force_close(self) -> None:
        type(self).closed_without_flush = True

    def join(self, timeout: float | None = None) -> None:
        return None


def test_feedback_to_a_broker_that_is_gone_is_one_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the producer's close raised its own timeout over the error, and
    ``feedback`` printed a traceback."""
    monkeypatch.setattr(kafka_source, "KafkaProducer", _ProducerOfAGoneBroker)
    with pytest.raises(DataError, match="writing to feedback on b:9092 failed"):
        kafka_source.produce_values("b:9092", "feedback", [("e1", b"{}")], KafkaSecurity(), timeout_s=0.1)
    assert _ProducerOfAGoneBroker.closed_without_flush
