"""Recent events from the input Kafka topic (the only training module that imports ``kafka``).

Reads without a consumer group (assign + seek, nothing committed), so the retrain job never
disturbs the workers' offsets. The window is either the last ``N`` events (newest by record
timestamp over all partitions) or everything stamped since ``M`` minutes ago (filtered by record
timestamp, since a broker's offset for a time may come early); the end offsets are fixed
when reading starts, so a busy topic cannot keep the job reading forever.

Memory is bounded by ``cap = min(last, max_events)`` events, newest kept:

* a last-``N`` window may reach back to each partition's beginning: offsets are not events (a
  transactional producer's commit markers and aborted records take offsets too; found in review:
  ``--last 5`` on a topic of one-event transactions read 2 events), so ``end - cap`` is no bound;
* the partitions are read backwards in chunks (newest chunk first), into a heap that keeps the
  ``cap`` newest values by record timestamp and drops older ones as they arrive; reading stops once
  a whole chunk adds nothing newer than what the full heap holds, or (a since-window) nothing
  stamped inside the window;
* so a timeout keeps the newest part of the window read so far, not the oldest.

Values are parsed only after reading (raw bytes are smaller than parsed dicts).
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CorruptRecordError, KafkaError, UnsupportedCodecError

from detector.errors import DataError
from detector.kafka_python_quirks import close_producer, raised_while_decoding, unreadable_batch_text
from training.retrain.kafka_security import KafkaSecurity

logger = logging.getLogger(__name__)

#: Offsets read per partition per backward step (at least; a large cap reads in 8 steps).
MIN_CHUNK = 2_000
#: Longest read past the end offsets fixed at the start (records that arrive meanwhile).
END_GRACE_S = 2.0

Row = tuple[int, int, int, bytes | None]  # (timestamp ms, partition, offset, value)


@dataclass(frozen=True)
class KafkaWindow:
    """Which events to read.

    Attributes:
        bootstrap_servers: ``host:port[,host:port]``.
        topic: the input topic the workers consume.
        last: read the newest ``last`` events (over all partitions), or
        since_minutes: read every event of the last ``since_minutes`` minutes (one of the two).
        max_events: never hold more than this many events (the newest win), also while reading.
        timeout_s: give up reading after this long (the newest events read so far are kept).
        security: SASL/SSL settings, the same as the worker's (``WORKER_KAFKA__*``).
    """

    bootstrap_servers: str
    topic: str
    last: int | None = None
    since_minutes: float | None = None
    max_events: int = 1_000_000
    timeout_s: float = 120.0
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @property
    def cap(self) -> int:
        return self.max_events if self.last is None else min(self.last, self.max_events)


@dataclass(frozen=True)
class KafkaEvents:
    """Events read (oldest first by record timestamp) and how many values were not JSON objects."""

    events: list[dict[str, Any]]
    skipped: int
    timed_out: bool = False


def read_recent_events(window: KafkaWindow) -> KafkaEvents:
    """Read the window's events; values that are not JSON objects are skipped (the DLQ has them).

    Raises:
        DataError: the broker cannot be reached or the topic does not exist.
    """
    if (window.last is None) == (window.since_minutes is None):
        raise DataError("give exactly one of --last and --since-minutes with --from-kafka")
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=window.bootstrap_servers,
            enable_auto_commit=False,
            group_id=None,
            # As the worker: records of aborted or open transactions are not normal traffic to learn.
            isolation_level="read_committed",
            bootstrap_timeout_ms=int(min(window.timeout_s, 30.0) * 1000),
            **window.security.client_config(),
        )
    except KafkaError as exc:
        raise DataError(f"cannot reach Kafka at {window.bootstrap_servers}: {exc}") from exc
    try:
        return _read(consumer, window)
    except Exception as exc:
        if not isinstance(exc, (CorruptRecordError, UnsupportedCodecError)) and not raised_while_decoding(exc):
            if isinstance(exc, KafkaError):
                raise DataError(f"reading {window.topic} from {window.bootstrap_servers} failed: {exc}") from exc
            raise
        raise DataError(
            f"reading {window.topic} from {window.bootstrap_servers} failed: {unreadable_batch_text(consumer, exc)};"
            " a window that leaves it out (--last, --since-minutes) or data files can train"
        ) from exc
    finally:
        consumer.close(autocommit=False)


def _read(consumer: KafkaConsumer, window: KafkaWindow) -> KafkaEvents:
    partitions = consumer.partitions_for_topic(window.topic)
    if not partitions:
        raise DataError(f"topic {window.topic!r} does not exist on {window.bootstrap_servers}")
    tps = [TopicPartition(window.topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends: dict[TopicPartition, int] = consumer.end_offsets(tps)
    since_ms = None if window.since_minutes is None else max(0, int((time.time() - window.since_minutes * 60) * 1000))
    starts = _start_offsets(consumer, tps, ends, window.cap, since_ms)
    newest = _NewestRows(window.cap, not_before_ms=since_ms or 0)
    timed_out = _read_backwards(consumer, tps, starts, ends, newest, time.monotonic() + window.timeout_s)
    if timed_out:
        logger.warning("kafka_read_timed_out", extra={"rows": len(newest.heap), "timeout_s": window.timeout_s})
    events: list[dict[str, Any]] = []
    skipped = 0
    for _, _, _, value in sorted(newest.heap):
        parsed = _parse(value)
        if parsed is None:
            skipped += 1
        else:
            events.append(parsed)
    return KafkaEvents(events, skipped, timed_out)


class _NewestRows:
    """The ``cap`` newest rows by (timestamp, partition, offset) stamped at or after ``not_before_ms``:
    a min-heap that drops the oldest."""

    def __init__(self, cap: int, not_before_ms: int = 0) -> None:
        self.cap = cap
        self.not_before_ms = not_before_ms
        self.heap: list[Row] = []

    def offer(self, row: Row) -> bool:
        """Keep ``row`` if it is in the window and among the newest ``cap``; returns whether it was kept."""
        if row[0] < self.not_before_ms:
            return False
        if len(self.heap) < self.cap:
            heapq.heappush(self.heap, row)
            return True
        if row[:3] <= self.heap[0][:3]:
            return False
        heapq.heapreplace(self.heap, row)
        return True


def _read_backwards(
    consumer: KafkaConsumer,
    tps: list[TopicPartition],
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    newest: _NewestRows,
    deadline: float,
) -> bool:
    """Read ``[start, end)`` of every partition in backward chunks; returns whether it timed out."""
    chunk = max(MIN_CHUNK, -(-newest.cap // 8))
    high = dict(ends)
    first = True
    while True:
        low = {tp: max(starts[tp], high[tp] - chunk) for tp in tps}
        active = [tp for tp in tps if first or low[tp] < high[tp]]
        if not active:
            return False
        consumer.assign(active)
        for tp in active:
            consumer.seek(tp, low[tp])
        kept = _read_chunk(consumer, active, low, high, newest, deadline, open_ended=first)
        if kept is None:
            return True
        if kept == 0 and (len(newest.heap) >= newest.cap or newest.not_before_ms > 0):
            # A whole chunk added nothing: all of it older than the full window, or than the window's
            # start time (reached where a broker's offset for that time came early).
            return False
        high, first = low, False


def _read_chunk(
    consumer: KafkaConsumer,
    tps: list[TopicPartition],
    low: dict[TopicPartition, int],
    high: dict[TopicPartition, int],
    newest: _NewestRows,
    deadline: float,
    *,
    open_ended: bool,
) -> int | None:
    """Poll ``[low, high)`` of each partition; returns rows kept, or ``None`` on timeout.

    The newest chunk is open-ended: the end offsets alone are not trusted to stop reading (some
    Kafka-protocol brokers report a batch-based high watermark), so it also reads on until a poll
    returns nothing or each partition's newest record is no older than the job's start, but at
    most :data:`END_GRACE_S` past the end offsets (a partition that gets no new records, while
    others do, would otherwise hold the read until the timeout).
    """
    started_ms = int(time.time() * 1000)
    newest_ts: dict[TopicPartition, int] = {}
    kept = 0
    at_end_since: float | None = None
    while time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500)
        for tp, batch in polled.items():
            for m in batch:
                if open_ended or m.offset < high[tp]:
                    kept += newest.offer((m.timestamp, tp.partition, m.offset, m.value))
            newest_ts[tp] = max(newest_ts.get(tp, 0), *(m.timestamp for m in batch))
        at_end = all(consumer.position(tp) >= high[tp] for tp in tps)
        if not open_ended and at_end:
            return kept
        if at_end:
            at_end_since = at_end_since if at_end_since is not None else time.monotonic()
            caught_up = all(newest_ts.get(tp, 0) >= started_ms for tp in tps)
            if not polled or caught_up or time.monotonic() - at_end_since >= END_GRACE_S:
                return kept
    return None


def _start_offsets(
    consumer: KafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int], cap: int, since_ms: int | None
) -> dict[TopicPartition, int]:
    """Where each partition's window starts: its beginning for a last-``N`` window (reading
    backwards stops once a whole chunk adds nothing to the full window), the offset for
    ``since_ms`` for a since-window.

    The offset for ``since_ms`` may come early (a broker may answer with the start of the record
    batch that holds the time, and producers may stamp records out of order), so the rows read are
    also filtered by their timestamps (:class:`_NewestRows`)."""
    beginnings: dict[TopicPartition, int] = consumer.beginning_offsets(tps)
    if since_ms is None:
        return beginnings
    found = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    return {tp: ends[tp] if found.get(tp) is None else max(beginnings[tp], found[tp].offset) for tp in tps}


def _parse(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested deeper than it reads
        return None
    return parsed if isinstance(parsed, dict) else None


def produce_values(
    bootstrap_servers: str,
    topic: str,
    values: list[tuple[str, bytes]],
    security: KafkaSecurity,
    timeout_s: float = 30.0,
) -> None:
    """Send keyed values and wait until the broker acknowledged every one.

    Raises:
        DataError: the broker cannot be reached or refused a value (some may have been written:
            a verdict repeated later is harmless, the latest per event wins).
    """
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", retries=3, **security.client_config())
    except KafkaError as exc:
        raise DataError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
    try:
        futures = [producer.send(topic, key=key.encode("utf-8"), value=value) for key, value in values]
        producer.flush(timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
    except KafkaError as exc:
        raise DataError(f"writing to {topic} on {bootstrap_servers} failed: {exc}") from exc
    finally:
        close_producer(producer, 5.0)  # found in review: its close raised over the error above
