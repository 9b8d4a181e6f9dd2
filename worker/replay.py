"""Replayer: publish a CSV or JSONL file (gzip or not) to a topic as JSON events.

    python -m worker.replay DATA --topic events --bootstrap-servers localhost:9092 [--rate 2000]

For backfills, load tests and trying the worker on your own data. Each row becomes one JSON
object; an id (``--id-field``, default ``event_id``) and an event time (``--timestamp-field``,
default ``ts``, epoch seconds at send time) are added when the row has none. The record key is
the event id. ``--rate 0`` sends as fast as possible. Delivery is confirmed (acks=all) before
the command reports success; it prints a JSON summary on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from detector.errors import DataError
from detector.table_reader import iter_records
from worker.errors import BrokerError, PublishError
from worker.settings import KafkaSettings

FLUSH_EVERY = 2000


class Publisher(Protocol):
    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None: ...
    def flush(self, timeout_s: float) -> None: ...


@dataclass(frozen=True)
class ReplayOptions:
    """How to turn rows into events and how fast to send them.

    Attributes:
        rate: events per second; 0 = as fast as possible.
        limit: stop after this many events (None = the whole file).
        id_field / timestamp_field: added when missing (``None`` = never add).
        drop: columns left out of the events.
        id_prefix: prefix of generated ids (default: a random run id, so replays never collide).
    """

    topic: str
    rate: float = 0.0
    limit: int | None = None
    id_field: str | None = "event_id"
    timestamp_field: str | None = "ts"
    drop: frozenset[str] = frozenset()
    id_prefix: str = ""


@dataclass(frozen=True)
class ReplaySummary:
    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def to_events(
    rows: Iterable[Mapping[str, Any]], options: ReplayOptions, clock: Callable[[], float]
) -> Iterator[dict[str, Any]]:
    """Rows -> events: drop columns, add id and timestamp when missing."""
    prefix = options.id_prefix or uuid.uuid4().hex[:8]
    for i, row in enumerate(rows):
        if options.limit is not None and i >= options.limit:
            return
        event = {k: v for k, v in row.items() if k not in options.drop}
        if options.id_field and event.get(options.id_field) in (None, ""):
            event[options.id_field] = f"{prefix}-{i}"
        if options.timestamp_field and event.get(options.timestamp_field) in (None, ""):
            event[options.timestamp_field] = round(clock(), 6)
        yield event


def replay(
    rows: Iterable[Mapping[str, Any]],
    publisher: Publisher,
    options: ReplayOptions,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Send rows as JSON events at ``options.rate``; return once every event is acknowledged."""
    start = time.perf_counter()
    sent = 0
    for event in to_events(rows, options, clock):
        if options.rate > 0:
            due = start + sent / options.rate
            delay = due - time.perf_counter()
            if delay > 0:
                sleep(delay)
        key = event.get(options.id_field) if options.id_field else None
        publisher.send(options.topic, orjson.dumps(event), None if key is None else str(key).encode(), [])
        sent += 1
        if sent % FLUSH_EVERY == 0:
            publisher.flush(60.0)
            if on_progress is not None:
                on_progress(sent)
    publisher.flush(60.0)
    return ReplaySummary(sent, time.perf_counter() - start)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker.replay", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, metavar="DATA", help="CSV (with header) or JSONL, gzip or not")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--bootstrap-servers", default="localhost:9092")
    parser.add_argument("--rate", type=float, default=0.0, help="events per second (0 = as fast as possible)")
    parser.add_argument("--limit", type=int, default=None, help="send at most N events")
    parser.add_argument("--id-field", default="event_id", help="id field added when missing ('' = never)")
    parser.add_argument("--timestamp-field", default="ts", help="time field added when missing ('' = never)")
    parser.add_argument("--drop-columns", default="", metavar="A,B", help="columns left out of the events")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from worker.kafka_io import KafkaPublisher  # noqa: PLC0415 - --help works without importing kafka

    options = ReplayOptions(
        topic=args.topic,
        rate=args.rate,
        limit=args.limit,
        id_field=args.id_field or None,
        timestamp_field=args.timestamp_field or None,
        drop=frozenset(c for c in args.drop_columns.split(",") if c),
    )
    try:
        if args.rate < 0 or (args.limit is not None and args.limit < 0):
            raise DataError("--rate and --limit must not be negative")
        text = [c for c in (options.id_field, options.timestamp_field) if c]
        rows = iter_records(args.data, text_columns=text)
        first = next(rows, None)  # a missing or unreadable file fails here, before connecting
        if first is None:
            raise DataError(f"{args.data}: no records")
        sink = KafkaPublisher(KafkaSettings(bootstrap_servers=args.bootstrap_servers))
        summary = replay(itertools.chain([first], rows), sink, options)
        sink.close(5.0)
    except (DataError, BrokerError, PublishError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps({"sent": summary.sent, "seconds": round(summary.seconds, 3), "rate": round(summary.rate, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
