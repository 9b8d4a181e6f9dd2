"""Fault injection against the real embedded broker, with exact accounting of every offset.

Every input offset must end as exactly one of: scored normal, an anomaly record on the output
topic, a dead letter naming it; committed offsets must reach the end of every partition; the
worker must stay up. Poison records are produced with librdkafka (confluent-kafka), which sends
what Java and librdkafka producers send and kafka-python refuses (keyless tombstones).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer as LibrdkafkaProducer
from expectations import expected_flags, renumber
from kafka_harness import (
    TopicReader,
    Topics,
    WorkerProcess,
    assert_flagged,
    committed_offsets,
    events_bytes,
    produce,
    wait_for,
)
from tiny_model import TinyModel

from worker.embedded_broker import EmbeddedBroker, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: The workers here run with a small request limit so that poison records stay small for the broker.
LIMITS = {"WORKER_KAFKA__MAX_REQUEST_BYTES": "100000", "WORKER_KAFKA__MAX_MESSAGE_BYTES": "30000"}
BIG = 150_000  # over the workers' request limit: cannot be echoed back in a dead letter


def _poison() -> list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]]:
    """(name, key, value, headers) of records real producers send and the worker must survive."""
    return [
        ("keyless-tombstone", None, None, None),
        ("keyless-oversized-value", None, b"x" * BIG, None),
        ("huge-key", b"k" * BIG, b"{not json", None),
        ("huge-headers", b"h", b"[1]", [(f"h{i}", b"v" * 10_000) for i in range(15)]),
        ("tombstone-with-key", b"t", None, [("traceparent", b"00-4bf92f3577b34da6-00f067aa0ba902b7-01")]),
        ("null-header-value", b"n", b"{bad", [("nullable", None)]),
    ]


def _librdkafka_produce(bootstrap: str, topic: str, partition: int, records: list[Any]) -> dict[str, int]:
    """Produce ``records`` to one partition; return each record's offset by name."""
    producer = LibrdkafkaProducer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000, "linger.ms": 5})
    offsets: dict[str, int] = {}

    def delivered(name: str) -> Any:
        def report(err: Any, msg: Any) -> None:
            assert err is None, err
            offsets[name] = msg.offset()

        return report

    for name, key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, partition=partition, on_delivery=delivered(name))
    assert producer.flush(30) == 0
    return offsets


def _merge(*ends: dict[int, int]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for e in ends:
        for p, end in e.items():
            merged[p] = max(merged.get(p, 0), end)
    return merged


def test_poison_records_never_stall_two_workers_and_every_offset_is_accounted(
    kafka_client: str, kafka_broker: Any, tiny_model: TinyModel
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=2)
    events = renumber(tiny_model.attack_events[:300] + tiny_model.normal_events[:300], "p")
    expected = expected_flags(tiny_model.path, events)
    out, dlq = TopicReader(bootstrap, topics.output), TopicReader(bootstrap, topics.dlq)
    with ExitStack() as stack:
        workers = [WorkerProcess(tiny_model.path, bootstrap, topics, env=LIMITS, client=kafka_client) for _ in range(2)]
        for w in workers:
            stack.callback(w.stop_quietly)
            w.wait_ready()
        poison = _poison()
        before = produce(bootstrap, topics.input, events_bytes(events[:300]))
        offsets = {p: _librdkafka_produce(bootstrap, topics.input, p, poison) for p in (0, 1)}
        after = produce(bootstrap, topics.input, events_bytes(events[300:]))
        ends = _merge(before, after, *({p: max(o.values()) + 1} for p, o in offsets.items()))
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 90, "all committed")
        dead = dlq.drain_all()
        by_coordinates = {_source_of(m): m for m in dead}
        assert len(by_coordinates) == len(dead)  # one dead letter per poison record, no repeats
        assert set(by_coordinates) == {(p, o) for p, named in offsets.items() for o in named.values()}
        for p, named in offsets.items():
            _check_dead_letters({name: by_coordinates[(p, o)] for name, o in named.items()}, topics.input, p, named)
        ids = [m.key.decode() for m in out.drain_all()]
        assert_flagged(ids, expected, bootstrap=bootstrap, topic=topics.output, workers=workers)
        assert len(ids) == len(set(ids)), "no crash, so no repeats"
        for w in workers:
            assert w.process.poll() is None, w.log()
            assert w.metric("kestrel_dead_letters_undeliverable_total") == 0
        assert sum(w.metric("kestrel_dead_letter_total") for w in workers) == len(dead) == 2 * len(poison)
    out.close()
    dlq.close()


def _source_of(message: Any) -> tuple[int, int]:
    headers = dict(message.headers)
    return int(headers["kestrel.source.partition"]), int(headers["kestrel.source.offset"])


def _check_dead_letters(letters: dict[str, Any], topic: str, partition: int, offsets: dict[str, int]) -> None:
    key = f"{topic}:{partition}:".encode()
    h = {name: dict(m.headers) for name, m in letters.items()}
    assert letters["keyless-tombstone"].key == key + str(offsets["keyless-tombstone"]).encode()
    assert letters["keyless-tombstone"].value is None and h["keyless-tombstone"]["kestrel.error.reason"] == b"empty"
    oversized = letters["keyless-oversized-value"]
    assert oversized.value is None and oversized.key.startswith(key)
    assert h["keyless-oversized-value"]["kestrel.error.value_dropped"] == str(BIG).encode()
    assert h["keyless-oversized-value"]["kestrel.error.reason"] == b"too_large"
    assert letters["huge-key"].key.startswith(key) and letters["huge-key"].value == b"{not json"
    assert h["huge-key"]["kestrel.error.key_dropped"] == str(BIG).encode()
    assert h["huge-headers"]["kestrel.error.headers_dropped"] == b"15" and letters["huge-headers"].value == b"[1]"
    assert h["huge-headers"]["kestrel.error.reason"] == b"not_an_object"
    assert letters["tombstone-with-key"].key == b"t"
    assert h["tombstone-with-key"]["traceparent"] == b"00-4bf92f3577b34da6-00f067aa0ba902b7-01"  # carried over
    assert h["null-header-value"]["nullable"] == b"" and letters["null-header-value"].value == b"{bad"


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own (restarted or frozen without disturbing the other tests)."""
    broker = EmbeddedBroker(free_port()).start()
    try:
        yield broker
    finally:
        broker.stop()


def _all_accounted(bootstrap: str, topics: Topics, ends: dict[int, int], out: TopicReader) -> list[str]:
    wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == ends, 90, "all committed")
    return [m.key.decode() for m in out.drain_all()]


def test_broker_sigkill_and_restart_on_the_same_port_heals_without_a_worker_restart(
    kafka_client: str, own_broker: EmbeddedBroker, tiny_model: TinyModel
) -> None:
    """The embedded broker keeps data in memory: after the restart topics and offsets start
    afresh, so each life of the broker is accounted on its own (a real Kafka keeps both)."""
    bootstrap = own_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=2)
    first = renumber(tiny_model.attack_events[:200] + tiny_model.normal_events[:200], "one")
    second = renumber(tiny_model.attack_events[200:300] + tiny_model.normal_events[200:300], "two")
    with ExitStack() as stack:
        workers = [WorkerProcess(tiny_model.path, bootstrap, topics, client=kafka_client) for _ in range(2)]
        for w in workers:
            stack.callback(w.stop_quietly)
            w.wait_ready()
        out = TopicReader(bootstrap, topics.output)
        ids = _all_accounted(bootstrap, topics, produce(bootstrap, topics.input, events_bytes(first)), out)
        flags = expected_flags(tiny_model.path, first)
        assert_flagged(ids, flags, bootstrap=bootstrap, topic=topics.output, workers=workers)
        out.close()
        os.kill(own_broker.pid, signal.SIGKILL)
        port = own_broker.port
        own_broker.stop()
        wait_for(lambda: all(w.status("/readyz") == 503 for w in workers), 30, "workers unready without a broker")
        restarted = stack.enter_context(EmbeddedBroker(port))
        assert restarted.bootstrap_servers == bootstrap
        Topics.create(bootstrap, topics, partitions=2)
        ends = produce(bootstrap, topics.input, events_bytes(second))
        out = stack.enter_context(_Reader(bootstrap, topics.output))
        ids = _all_accounted(bootstrap, topics, ends, out)
        expected = expected_flags(tiny_model.path, second)
        assert_flagged(ids, expected, bootstrap=bootstrap, topic=topics.output, workers=workers)
        for w in workers:
            assert w.process.poll() is None, w.log()
            wait_for(lambda w=w: w.status("/readyz") == 200, 30, "ready again")  # type: ignore[misc]
            assert w.status("/healthz") == 200


class _Reader:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.reader = TopicReader(bootstrap, topic)

    def __enter__(self) -> TopicReader:
        return self.reader

    def __exit__(self, *exc: object) -> None:
        self.reader.close()


def test_input_from_a_transactional_producer_is_committed_to_its_end_and_the_worker_stays_live(
    kafka_client: str, kafka_broker: Any, tiny_model: TinyModel
) -> None:
    """Found in review: each transaction's commit marker takes an offset that is never handed out;
    the worker committed last record + 1, one short for good, so its lag stayed 1 and liveness
    failed after the no-progress timeout with nothing to do (an orchestrator restarts it for ever)."""
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=1)
    events = renumber(tiny_model.normal_events[:40] + tiny_model.attack_events[:10], "tx")
    producer = LibrdkafkaProducer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topics.group}"})
    producer.init_transactions(30)
    for start in (0, 25):  # two transactions: two markers, the last one at the end of the log
        producer.begin_transaction()
        for value in events_bytes(events[start : start + 25]):
            producer.produce(topics.input, value=value, partition=0)
        producer.commit_transaction(30)
    end = {0: len(events) + 2}
    worker = WorkerProcess(
        tiny_model.path, bootstrap, topics, env={"WORKER_NO_PROGRESS_TIMEOUT_S": "5"}, client=kafka_client
    )
    try:
        worker.wait_ready()
        wait_for(
            lambda: committed_offsets(bootstrap, topics.group, topics.input, end) == end, 30, "committed to the end"
        )
        assert worker.metric("kestrel_events_total") == len(events)
        time.sleep(6)  # past the no-progress timeout: nothing is pending, so the worker stays live
        assert worker.status("/healthz") == 200, worker.log()
        assert worker.metric("kestrel_consumer_lag") == 0
    finally:
        worker.stop_quietly()


def test_stop_during_an_outage_is_prompt_and_says_why(kafka_client: str, tiny_model: TinyModel) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    topics = Topics("events", "anomalies", "events.dlq", "g")
    worker = WorkerProcess(tiny_model.path, nobody, topics, env={"WORKER_SHUTDOWN_TIMEOUT_S": "5"}, client=kafka_client)
    try:
        # kafka-python fails to connect (broker_unavailable); librdkafka connects lazily (poll_failed).
        wait_for(lambda: _outage_lines(worker.log()) > 0, 15, "the worker to report the outage")
        assert worker.status("/healthz") == 200 and worker.status("/readyz") == 503
        started = time.monotonic()
        assert worker.terminate(30) == 0, worker.log()  # nothing was read: nothing is left uncommitted
        assert time.monotonic() - started < 7.0
        log = worker.log()
        assert "worker_stopped" in log and "SIGTERM" in log
        assert _outage_lines(log) == 1  # once per outage, not once per retry
    finally:
        worker.stop_quietly()


def _outage_lines(log: str) -> int:
    return log.count("broker_unavailable") + log.count("poll_failed")


def test_stop_while_the_broker_is_frozen_is_prompt(
    kafka_client: str, own_broker: EmbeddedBroker, tiny_model: TinyModel
) -> None:
    bootstrap = own_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=1)
    worker = WorkerProcess(
        tiny_model.path, bootstrap, topics, env={"WORKER_SHUTDOWN_TIMEOUT_S": "5"}, client=kafka_client
    )
    try:
        worker.wait_ready()
        produce(bootstrap, topics.input, events_bytes(renumber(tiny_model.normal_events[:50], "z")))
        wait_for(lambda: worker.metric("kestrel_events_total") >= 50, 30, "events scored")
        os.kill(own_broker.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            code = worker.terminate(30)
            assert time.monotonic() - started < 9.0, worker.log()
            assert code in (0, 1) and "worker_stopped" in worker.log()
        finally:
            os.kill(own_broker.pid, signal.SIGCONT)
    finally:
        worker.stop_quietly()


def test_a_flood_of_idle_connections_does_not_silence_the_health_endpoint(
    kafka_broker: Any, tiny_model: TinyModel
) -> None:
    # The endpoint does not depend on the Kafka client: one client is enough here.
    bootstrap = kafka_broker.bootstrap_servers
    topics = Topics.unique(bootstrap, partitions=1)
    worker = WorkerProcess(tiny_model.path, bootstrap, topics)
    try:
        worker.wait_ready()
        with ExitStack() as stack:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            for i in range(max(50, min(400, soft - 300))):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", worker.port), timeout=5))
                if i % 2:
                    with contextlib.suppress(OSError):  # the server may already have shed it
                        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never finish the request
            for _ in range(5):
                started = time.monotonic()
                assert worker.status("/healthz") == 200
                assert time.monotonic() - started < 2.5
        produce(bootstrap, topics.input, [orjson.dumps(tiny_model.normal_events[0])])
        wait_for(lambda: worker.metric("kestrel_events_total") >= 1, 30, "still processing")
    finally:
        worker.stop_quietly()
