"""Helpers for worker integration tests: topics, producing, reading back, worker subprocesses."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from expectations import Expected
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from worker.embedded_broker import free_port
from worker.kafka_io import KafkaSource
from worker.outcomes import RawRecord
from worker.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]


class WorkerLogs:
    """Where worker subprocesses write their logs. The tests' conftest points ``directory`` at
    pytest's own temporary directory (kept for the last few runs, for a failure's post-mortem);
    left unset (the benchmarks), the first worker makes a temporary directory that is removed when
    the process exits."""

    directory: Path | None = None

    @classmethod
    def path(cls) -> Path:
        """``directory``, made on first use when nothing set it."""
        if cls.directory is None:
            cls.directory = Path(tempfile.mkdtemp(prefix="kestrel-worker-logs-"))
            atexit.register(shutil.rmtree, cls.directory, ignore_errors=True)
        return cls.directory


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    """Poll ``condition`` until true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    dlq: str
    group: str

    @classmethod
    def unique(cls, bootstrap: str, partitions: int = 3) -> Topics:
        tag = uuid.uuid4().hex[:10]
        topics = cls(f"events-{tag}", f"anomalies-{tag}", f"dlq-{tag}", f"group-{tag}")
        cls.create(bootstrap, topics, partitions)
        return topics

    @staticmethod
    def create(bootstrap: str, topics: Topics, partitions: int = 3) -> None:
        """Create the three topics (again, e.g. on a restarted in-memory broker)."""
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics(
                [NewTopic(topics.input, partitions, 1), NewTopic(topics.output, 1, 1), NewTopic(topics.dlq, 1, 1)]
            )
        finally:
            admin.close()


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | None],
    keys: Iterable[bytes | None] | None = None,
    **producer_config: Any,
) -> dict[int, int]:
    """Produce values; return the end offset (last offset + 1) per partition written.

    ``producer_config`` overrides KafkaProducer settings (e.g. bigger batches for a benchmark).
    """
    producer = KafkaProducer(**({"bootstrap_servers": bootstrap, "linger_ms": 5} | producer_config))
    futures = []
    key_list = list(keys) if keys is not None else None
    for i, value in enumerate(values):
        key = key_list[i] if key_list is not None else None
        futures.append(producer.send(topic, value=value, key=key))
    producer.flush(120)
    ends: dict[int, int] = {}
    for future in futures:
        meta = future.get(30)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    producer.close()
    return ends


def events_bytes(events: Iterable[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) for e in events]


@contextmanager
def source_that_read(
    bootstrap: str, topic: str, client: str, n: int, what: str
) -> Iterator[tuple[Any, list[RawRecord]]]:
    """The worker's source for ``client`` (``kafka-python`` or ``confluent``) in a group of its own,
    once it has polled ``n`` records of ``topic``, and those records; closed on exit."""
    from worker.confluent_io import ConfluentSource  # noqa: PLC0415 - librdkafka only where a test asks

    settings = KafkaSettings(bootstrap_servers=bootstrap, input_topic=topic, group_id=f"g-{uuid.uuid4().hex}")
    source: Any = (KafkaSource if client == "kafka-python" else ConfluentSource)(
        settings, lambda p, lost=False: None, lambda p: None
    )
    got: list[RawRecord] = []

    def more() -> bool:
        got.extend(source.poll(100, 200))
        return len(got) >= n

    try:
        wait_for(more, 30, what)
        yield source, got
    finally:
        source.close(1000)


@dataclass
class TopicReader:
    """Reads everything from a topic as it arrives (assign + seek to beginning, no group).

    Each record is kept once, by (partition, offset), and a stretch of offsets the reader moved past
    is read again (once per stretch): the embedded broker (Tansu 0.6, memory storage) advances a
    partition's high watermark before it stores the batch, so a reader that polls while two or
    more producers write one partition (several workers' outputs) can be handed a later batch
    before an earlier one is stored, and move past the earlier. The log holds every record; a
    re-read finds nothing that is not in it (``benchmarks/embedded_broker_reader_race.py``).
    """

    bootstrap: str
    topic: str
    messages: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        parts = self._consumer.partitions_for_topic(self.topic) or {0}
        self._tps = {p: TopicPartition(self.topic, p) for p in parts}
        self._consumer.assign(list(self._tps.values()))
        self._consumer.seek_to_beginning()
        self._beginnings: dict[int, int] = {}
        self._offsets: dict[int, set[int]] = {p: set() for p in parts}
        self._reread: set[tuple[int, int]] = set()

    def drain(self) -> list[Any]:
        polled = self._consumer.poll(timeout_ms=200)
        for batch in polled.values():
            for m in batch:
                if m.offset not in self._offsets[m.partition]:
                    self._offsets[m.partition].add(m.offset)
                    self.messages.append(m)
        if polled:
            self._read_missed_again()
        return self.messages

    def drain_all(self, quiet_s: float = 2.0) -> list[Any]:
        """Read until nothing has come for ``quiet_s`` seconds (for already-written data); the
        records in log order per partition.

        Quiet is measured in time, not in polls: on a loaded machine one fetch round trip to the
        embedded broker can outlast several 200 ms polls (three quiet polls once ended a read
        halfway through a topic whose records were all acknowledged)."""
        last_new = time.monotonic()
        while time.monotonic() - last_new < quiet_s:
            before = len(self.messages)
            if len(self.drain()) > before:
                last_new = time.monotonic()
        if self._reread:
            self.messages.sort(key=lambda m: (m.partition, m.offset))
        return self.messages

    def _read_missed_again(self) -> None:
        """Seek back to the first offset not read below each partition's highest and not sought
        before (each offset once: a hole the broker never fills does not hide a later one)."""
        for p, offsets in self._offsets.items():
            if not offsets:
                continue
            if p not in self._beginnings:
                self._beginnings[p] = self._consumer.beginning_offsets([self._tps[p]])[self._tps[p]]
            start, top = self._beginnings[p], max(offsets)
            if len(offsets) < top - start + 1:  # a hole read again before (a permanent one) is passed over
                first = next((o for o in range(start, top) if o not in offsets and (p, o) not in self._reread), None)
                if first is not None:
                    self._reread.add((p, first))
                    self._consumer.seek(self._tps[p], first)

    def wait_count(self, count: int, timeout_s: float) -> list[Any]:
        wait_for(lambda: len(self.drain()) >= count, timeout_s, f"{count} messages on {self.topic}")
        return self.messages

    def close(self) -> None:
        self._consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions}
    finally:
        consumer.close(autocommit=False)


@dataclass
class WorkerProcess:
    """``python -m worker`` as a real subprocess with its own metrics port."""

    model_dir: Path
    bootstrap: str
    topics: Topics
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: The Kafka client the worker uses (``--kafka-client``).
    client: str = "kafka-python"

    #: How the worker is given ``model_dir``: a model directory, or a registry (subclasses).
    model_flag = "--model"

    def __post_init__(self) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "worker", self.model_flag, str(self.model_dir)]
        command += ["--bootstrap-servers", self.bootstrap, "--input-topic", self.topics.input]
        command += ["--output-topic", self.topics.output, "--dead-letter-topic", self.topics.dlq]
        command += ["--group-id", self.topics.group, "--metrics-host", "127.0.0.1", "--metrics-port", str(self.port)]
        command += ["--log-format", "text", "--kafka-client", self.client, *self.extra]
        self.log_path = WorkerLogs.path() / f"worker-{self.port}-{uuid.uuid4().hex[:8]}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as reply:
            return str(reply.read().decode())

    def metric(self, name: str, text: str | None = None) -> float:
        """Sum of all samples of ``name`` (any labels), in ``text`` if given (one scrape read for
        several metrics), else in a new scrape."""
        total = 0.0
        for line in (self.metrics_text() if text is None else text).splitlines():
            if line.startswith(name) and (line[len(name)] in " {"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        wait_for(lambda: self.status("/readyz") == 200 or self.process.poll() is not None, timeout_s, "readiness")
        assert self.process.poll() is None, f"worker exited early:\n{self.log()}"

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.wait(10)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop_quietly(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


#: What each worker counted, for a report on missing outputs.
REPORTED_COUNTERS = (
    "kestrel_events_total",
    "kestrel_anomalies_total",
    "kestrel_anomaly_records_undeliverable_total",
    "kestrel_publish_failures_total",
)


def assert_flagged(
    ids: Iterable[str],
    expected: Expected,
    *,
    bootstrap: str,
    topic: str,
    workers: Iterable[WorkerProcess],
) -> None:
    """Every id ``expected`` must flag was read back from ``topic``, and none it may not flag.

    When some are missing, the message says where they went: whether a fresh read of the topic finds
    them (then the log holds them and only the test's reader missed them) and what each worker
    counted (events read, anomalies, outputs given up, failed publishes)."""
    read = set(ids)
    missing = expected.must_flag - read
    if missing:
        fresh = TopicReader(bootstrap, topic)
        try:
            found = {m.key.decode() for m in fresh.drain_all(quiet_s=3.0) if m.key is not None} & missing
        finally:
            fresh.close()
        counts: list[dict[str, float | str]] = []
        for w in workers:
            try:
                counts.append({name: w.metric(name) for name in REPORTED_COUNTERS})
            except OSError as exc:  # a worker killed on purpose, or gone
                counts.append({"unreachable": str(exc)})
        raise AssertionError(
            f"{len(missing)} expected anomaly records not read back from {topic} (first {sorted(missing)[:12]});"
            f" a fresh read finds {len(found)} of them; the workers counted {counts}"
        )
    assert read <= expected.may_flag, sorted(read - expected.may_flag)[:12]


def assert_one_partition_set_aside(
    model_dir: Path,
    bootstrap: str,
    topics: Topics,
    client: str,
    ends: dict[int, int],
    expected: dict[int, int],
    at: int,
) -> None:
    """A worker on ``topics`` commits ``expected`` (every partition to its end but the one it cannot
    read, at ``at``), sets that partition aside (logged once, counted), and stays live past its
    no-progress timeout: the set-aside partition is not pending work."""
    worker = WorkerProcess(model_dir, bootstrap, topics, env={"WORKER_NO_PROGRESS_TIMEOUT_S": "5"}, client=client)
    try:
        worker.wait_ready()
        wait_for(lambda: committed_offsets(bootstrap, topics.group, topics.input, ends) == expected, 60, "committed")
        wait_for(lambda: worker.metric("kestrel_unreadable_partitions") == 1, 20, "the partition set aside")
        time.sleep(6)  # past the no-progress timeout
        assert worker.process.poll() is None and worker.status("/healthz") == 200, worker.log()
        assert committed_offsets(bootstrap, topics.group, topics.input, ends) == expected
        assert worker.metric("kestrel_events_total") == sum(expected.values())  # every partition from offset 0
        log = worker.log()
        assert log.count("partition_unreadable") == 1 and f"paused at offset {at}" in log, log
    finally:
        worker.stop_quietly()
