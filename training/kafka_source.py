"""Recent events from the input Kafka topic (the only training module that imports ``kafka``).

Reads without a consumer group (assign + seek, nothing committed), so the retrain job never
disturbs the workers' offsets. The window is either the last ``N`` events (newest by record
timestamp over all partitions) or everything since ``M`` minutes ago; the end offsets are fixed
when reading starts, so a busy topic cannot keep the job reading forever.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from detector.errors import DataError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaWindow:
    """Which events to read.

    Attributes:
        bootstrap_servers: ``host:port[,host:port]``.
        topic: the input topic the workers consume.
        last: read the newest ``last`` events (over all partitions), or
        since_minutes: read every event of the last ``since_minutes`` minutes (one of the two).
        max_events: never keep more than this many events (the newest win).
        timeout_s: give up reading after this long (the events read so far are kept).
    """

    bootstrap_servers: str
    topic: str
    last: int | None = None
    since_minutes: float | None = None
    max_events: int = 1_000_000
    timeout_s: float = 120.0


@dataclass(frozen=True)
class KafkaEvents:
    """Events read (oldest first by record timestamp) and how many values were not JSON objects."""

    events: list[dict[str, Any]]
    skipped: int


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
            bootstrap_timeout_ms=int(min(window.timeout_s, 30.0) * 1000),
        )
    except KafkaError as exc:
        raise DataError(f"cannot reach Kafka at {window.bootstrap_servers}: {exc}") from exc
    try:
        return _read(consumer, window)
    except KafkaError as exc:
        raise DataError(f"reading {window.topic} from {window.bootstrap_servers} failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)


def _read(consumer: KafkaConsumer, window: KafkaWindow) -> KafkaEvents:
    partitions = consumer.partitions_for_topic(window.topic)
    if not partitions:
        raise DataError(f"topic {window.topic!r} does not exist on {window.bootstrap_servers}")
    tps = [TopicPartition(window.topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    ends: dict[TopicPartition, int] = consumer.end_offsets(tps)
    starts = _start_offsets(consumer, tps, ends, window)
    for tp in tps:
        consumer.seek(tp, starts[tp])
    rows = _poll_until_caught_up(consumer, tps, ends, window.timeout_s)
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    keep = window.last if window.last is not None else window.max_events
    rows = rows[-min(keep, window.max_events) :] if rows else rows
    events: list[dict[str, Any]] = []
    skipped = 0
    for _, _, _, value in rows:
        parsed = _parse(value)
        if parsed is None:
            skipped += 1
        else:
            events.append(parsed)
    return KafkaEvents(events, skipped)


def _poll_until_caught_up(
    consumer: KafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int], timeout_s: float
) -> list[tuple[int, int, int, bytes | None]]:
    """Poll until every partition reached its end offset and the topic is quiet or caught up to now.

    The end offsets alone are not trusted to stop reading (some Kafka-protocol brokers report
    a batch-based high watermark); reading also continues until a poll returns nothing or each
    partition's newest record is no older than the job's start.
    """
    started_ms = int(time.time() * 1000)
    newest: dict[TopicPartition, int] = {}
    rows: list[tuple[int, int, int, bytes | None]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500)
        for tp, batch in polled.items():
            rows.extend((m.timestamp, tp.partition, m.offset, m.value) for m in batch)
            newest[tp] = max(newest.get(tp, 0), *(m.timestamp for m in batch))
        at_end = all(consumer.position(tp) >= ends[tp] for tp in tps)
        caught_up = all(newest.get(tp, 0) >= started_ms for tp in tps)
        if at_end and (not polled or caught_up):
            return rows
    logger.warning("kafka_read_timed_out", extra={"rows": len(rows), "timeout_s": timeout_s})
    return rows


def _start_offsets(
    consumer: KafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int], window: KafkaWindow
) -> dict[TopicPartition, int]:
    beginnings: dict[TopicPartition, int] = consumer.beginning_offsets(tps)
    if window.last is not None:
        # Each partition's last N cover the newest N overall; the surplus is cut after sorting.
        return {tp: max(beginnings[tp], ends[tp] - window.last) for tp in tps}
    assert window.since_minutes is not None
    since_ms = max(0, int((time.time() - window.since_minutes * 60.0) * 1000))
    found = consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    return {tp: ends[tp] if found.get(tp) is None else found[tp].offset for tp in tps}


def _parse(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return None
    return parsed if isinstance(parsed, dict) else None
