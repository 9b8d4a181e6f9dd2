"""Replayer: publish a CSV or JSONL file (gzip or not) to a topic, one event per line.

    python -m worker.replay DATA --topic events --bootstrap-servers localhost:9092 [--rate 2000]

For backfills, load tests and trying the worker on your own data. Faithful by default: a JSONL
line is published byte for byte as read (``NaN`` stays ``NaN``, so the worker dead-letters it), a
CSV row as one compact JSON object; no field is added and records have no key. Ask for changes
explicitly: ``--add-id FIELD`` / ``--add-timestamp FIELD`` fill a generated id / the send time
(epoch seconds) where an event has none, ``--key-field FIELD`` keys each record by that field,
``--drop-columns`` leaves columns out. An invalid line stops the replay (naming the line and how
many events were already published; exit code 1) unless ``--skip-invalid`` skips and counts it. ``--rate 0``
sends as fast as possible. Delivery is confirmed (acks=all) before the command reports success;
it prints one JSON line on stdout: ``{"published", "skipped", "seconds", "rate"}``.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from detector.cli_help import DefaultsHelpFormatter
from detector.errors import DataError, UsageError
from detector.table_reader import SourceLine, iter_lines
from worker.errors import BrokerError, PublishError, RecordRefusedError
from worker.settings import KafkaSettings, check_topic_name, tool_env_warnings, tool_kafka_settings

FLUSH_EVERY = 2000
EXIT_FAILED = 1
EXIT_USAGE = 2
SHOW_SKIPPED = 10


class Publisher(Protocol):
    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None: ...
    def flush(self, timeout_s: float) -> None: ...


class ReplayStoppedError(DataError):
    """The replay stopped before the file's end (Ctrl-C, the file could not be read further, or the
    broker did not acknowledge): ``published`` events were sent before it, all acknowledged when
    ``acknowledged`` (found in review: only "interrupted" was said, and a backfill could not tell
    where to resume; with the broker gone, not even how many were sent)."""

    def __init__(self, message: str, published: int, acknowledged: bool, line_no: int | None) -> None:
        """``line_no``: where to resume after. When ``acknowledged``, the last line published or
        skipped; else the last line up to which every event was acknowledged (``None``: none)."""
        super().__init__(message)
        self.published = published
        self.acknowledged = acknowledged
        self.line_no = line_no


class _SendFailedError(PublishError):
    """A send failed at the broker; ``acknowledged``: every event sent before it was (flushed once)."""

    def __init__(self, message: str, acknowledged: bool) -> None:
        super().__init__(message)
        self.acknowledged = acknowledged


class InvalidLineError(DataError):
    """A line of the replayed file is invalid; ``published`` events before it were acknowledged."""

    def __init__(self, message: str, line_no: int, published: int) -> None:
        super().__init__(message)
        self.line_no = line_no
        self.published = published


@dataclass(frozen=True)
class ReplayOptions:
    """Which lines to send, how to change them (nothing by default) and how fast.

    Attributes:
        rate: events per second; 0 = as fast as possible.
        limit: stop after this many published events (None = the whole file).
        skip_invalid: skip and count invalid lines instead of stopping at the first.
        add_id / add_timestamp: field filled with a generated id / the send time (epoch seconds)
            where an event has none (``None`` = never).
        key_field: the record key is this field's value (``None`` = no key).
        drop: columns left out of the events.
        id_prefix: prefix of generated ids (default: a random run id, so replays never collide).
    """

    topic: str
    rate: float = 0.0
    limit: int | None = None
    skip_invalid: bool = False
    add_id: str | None = None
    add_timestamp: str | None = None
    key_field: str | None = None
    drop: frozenset[str] = frozenset()
    id_prefix: str = ""

    @property
    def rewrites(self) -> bool:
        """Whether events are changed (then they are parsed and re-encoded, NaN kept as ``NaN``)."""
        return bool(self.add_id or self.add_timestamp or self.drop)


@dataclass(frozen=True)
class ReplaySummary:
    published: int
    seconds: float
    skipped: tuple[str, ...] = ()  # why the first SHOW_SKIPPED skipped lines were invalid, in file order
    skipped_count: int = 0  # all skipped lines (a file of bad lines costs no memory per line)

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def encode(
    record: dict[str, Any], raw: bytes | None, options: ReplayOptions, new_id: str, now: float
) -> tuple[bytes, dict[str, Any]]:
    """The bytes published for one valid line (``raw`` as read unless ``options`` ask for changes), and the event."""
    if raw is not None and not options.rewrites:
        return raw, record
    event = {k: v for k, v in record.items() if k not in options.drop}
    if options.add_id and event.get(options.add_id) in (None, ""):
        event[options.add_id] = new_id
    if options.add_timestamp and event.get(options.add_timestamp) in (None, ""):
        event[options.add_timestamp] = round(now, 6)
    # json (not orjson): NaN and Infinity are written as such, not turned into null.
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), event


def key_of(event: dict[str, Any], options: ReplayOptions) -> bytes | None:
    """The record key: the event's ``key_field`` value as text (None without a key field or value)."""
    key = event.get(options.key_field) if options.key_field else None
    return None if key is None else str(key).encode()


def replay(
    lines: Iterable[SourceLine],
    publisher: Publisher,
    options: ReplayOptions,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Publish lines at ``options.rate``; return once every event is acknowledged.

    Raises:
        InvalidLineError: an invalid line without ``skip_invalid`` (after flushing those before it).
        ReplayStoppedError: Ctrl-C, the file could not be read further, or some events were not
            acknowledged (after flushing what was sent).
    """
    prefix = options.id_prefix or uuid.uuid4().hex[:8]
    start = time.perf_counter()
    published, skipped_count, done = 0, 0, None  # done: the last line published or skipped
    acknowledged_to: int | None = None  # the last line up to which every event was acknowledged
    skipped: list[str] = []
    try:
        for line in lines:
            if options.limit is not None and published >= options.limit:
                break
            if line.record is None:
                error: str | None = line.error or f"line {line.line_no}: invalid"
            else:
                if options.rate > 0:
                    delay = start + published / options.rate - time.perf_counter()
                    if delay > 0:
                        sleep(delay)
                error = _publish(line.record, line, publisher, options, f"{prefix}-{published}", clock(), published)
            if error is not None:
                if not options.skip_invalid:
                    publisher.flush(60.0)
                    raise InvalidLineError(error, line.line_no, published)
                skipped_count += 1
                if len(skipped) < SHOW_SKIPPED:
                    skipped.append(error)
                done = line.line_no
                continue
            published, done = published + 1, line.line_no
            if published % FLUSH_EVERY == 0:
                publisher.flush(60.0)
                acknowledged_to = done
                if on_progress is not None:
                    on_progress(published)
        publisher.flush(60.0)  # inside: a Ctrl-C while the last events are acknowledged says so too
    except InvalidLineError:
        raise
    except PublishError as exc:  # the broker; a flush is never asked twice (its failures are told once)
        acknowledged = isinstance(exc, _SendFailedError) and exc.acknowledged
        raise ReplayStoppedError(str(exc), published, acknowledged, done if acknowledged else acknowledged_to) from exc
    except (KeyboardInterrupt, DataError) as exc:  # Ctrl-C, or the file cannot be read further
        acknowledged = _flushed(publisher, 10.0 if isinstance(exc, KeyboardInterrupt) else 60.0)
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        raise ReplayStoppedError(what, published, acknowledged, done if acknowledged else acknowledged_to) from exc
    return ReplaySummary(published, time.perf_counter() - start, tuple(skipped), skipped_count)


def _flushed(publisher: Publisher, timeout_s: float) -> bool:
    """Whether every event sent so far was acknowledged within ``timeout_s``."""
    try:
        publisher.flush(timeout_s)
    except (PublishError, KeyboardInterrupt):
        return False
    return True


def _publish(
    record: dict[str, Any],
    line: SourceLine,
    publisher: Publisher,
    options: ReplayOptions,
    new_id: str,
    now: float,
    published: int,
) -> str | None:
    """Send one valid line's event; why it cannot be sent when that is the line's own fault (an
    invalid line then, skipped with ``--skip-invalid``), else ``None``.

    Raises:
        PublishError: the broker side failed (the message names the line; the events sent before
            it are flushed first, and :func:`replay` says how many were published and acknowledged).
    """
    try:
        value, event = encode(record, line.raw, options, new_id, now)
        key = key_of(event, options)
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800"), which JSON lets through
        return f"line {line.line_no}: cannot be written as UTF-8 ({exc.reason} at {exc.start})"
    try:
        publisher.send(options.topic, value, key, [])
    except RecordRefusedError as exc:
        return f"line {line.line_no}: the producer refused it ({exc})"
    except PublishError as exc:
        raise _SendFailedError(f"line {line.line_no}: {exc}", _flushed(publisher, 60.0)) from exc
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker.replay",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 every event published, 1 failed (data file, invalid line, broker), 2 bad command line, "
        "130 interrupted.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("data", type=Path, metavar="DATA", help="CSV (with header) or JSONL file, gzip or not")
    parser.add_argument("--topic", required=True, help="topic to publish to")
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka bootstrap servers (default: $WORKER_KAFKA__BOOTSTRAP_SERVERS, else localhost:9092)",
    )
    parser.add_argument("--rate", type=float, default=0.0, help="events per second (0 = as fast as possible)")
    parser.add_argument("--limit", type=int, default=None, help="publish at most N events (default: all)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip and count invalid lines instead of stopping")
    parser.add_argument("--add-id", default=None, metavar="FIELD", help="fill FIELD with a generated id where missing")
    parser.add_argument(
        "--add-timestamp", default=None, metavar="FIELD", help="fill FIELD with the send time (epoch s) where missing"
    )
    parser.add_argument("--key-field", default=None, metavar="FIELD", help="key each record by this field's value")
    parser.add_argument("--drop-columns", default="", metavar="A,B", help="columns left out (default: none)")
    return parser


def options_from(args: argparse.Namespace) -> ReplayOptions:
    if args.rate < 0 or (args.limit is not None and args.limit < 0):
        raise UsageError("--rate and --limit must not be negative")
    try:  # found in review: refused by the producer at each send, it was reported as invalid lines
        check_topic_name(args.topic)
    except ValueError as exc:
        raise UsageError(f"--topic: {exc}") from exc
    return ReplayOptions(
        topic=args.topic,
        rate=args.rate,
        limit=args.limit,
        skip_invalid=args.skip_invalid,
        add_id=args.add_id or None,
        add_timestamp=args.add_timestamp or None,
        key_field=args.key_field or None,
        drop=frozenset(c for c in args.drop_columns.split(",") if c),
    )


def run(args: argparse.Namespace) -> ReplaySummary:
    """Read, connect, publish (raises the errors :func:`main` reports)."""
    from worker.kafka_publisher import KafkaPublisher  # noqa: PLC0415 - --help works without importing kafka

    options = options_from(args)
    text = [c for c in (options.add_id, options.add_timestamp, options.key_field) if c]
    lines = iter_lines(args.data, text_columns=text)
    first = next(lines, None)  # a missing or unreadable file fails here, before connecting
    if first is None:
        raise DataError(f"{args.data}: no records")
    try:  # the brokers and security (SASL, TLS) of the worker's WORKER_KAFKA__* variables, as tail
        for warning in tool_env_warnings(os.environ):
            print(f"warning: {warning}", file=sys.stderr)
        settings = tool_kafka_settings(os.environ, args.bootstrap_servers)
    except ValidationError as exc:
        raise UsageError(f"invalid Kafka settings: {exc.errors()[0]['msg']}") from exc
    warn_if_new_topic(settings, options.topic)
    sink = KafkaPublisher(settings)
    try:
        return replay(itertools.chain([first], lines), sink, options)
    finally:
        sink.close(5.0)


def warn_if_new_topic(settings: KafkaSettings, topic: str) -> None:
    """A topic the broker does not have yet is most often a typo: say so before publishing (a broker
    that creates topics on first use would otherwise take the events where no worker reads).

    Raises:
        BrokerError: no broker answers (before any event is read or published).
    """
    from worker.topic_tools import existing_topics  # noqa: PLC0415 - --help works without importing kafka

    topics = existing_topics(settings)
    if topics is None or topic in topics:
        return
    names = sorted(t for t in topics if not t.startswith("__"))
    close = difflib.get_close_matches(topic, names, n=3, cutoff=0.6)
    if close:
        known = "did you mean " + " or ".join(repr(t) for t in close) + "?"
    else:
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        known = "existing: " + (", ".join(names[:10]) + more or "none")
    print(
        f"warning: topic {topic!r} does not exist on {settings.bootstrap_servers} yet ({known}); "
        "publishing creates it where the broker creates topics on first use; check that the worker's "
        "--input-topic is the same name",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except InvalidLineError as exc:
        print(f"error: {exc}; {exc.published} events were published before it (--skip-invalid skips such lines)",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    except ReplayStoppedError as exc:
        sent = f"{exc.published} events were published before it" + (
            " (all acknowledged)" if exc.acknowledged else " (not all acknowledged)"
        )
        if exc.line_no is None:
            where = "" if exc.acknowledged else "; no line is known to be acknowledged: resume from the start"
        else:
            where = f"; every line up to {exc.line_no} was {'handled' if exc.acknowledged else 'acknowledged'}"
        print(f"error: {exc}; {sent}{where}", file=sys.stderr)
        return 130 if isinstance(exc.__cause__, KeyboardInterrupt) else EXIT_FAILED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, BrokerError, PublishError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    for error in summary.skipped:
        print(f"skipped {error}", file=sys.stderr)
    if summary.skipped_count > len(summary.skipped):
        print(f"skipped {summary.skipped_count - len(summary.skipped)} more invalid lines", file=sys.stderr)
    counts = {"published": summary.published, "skipped": summary.skipped_count}
    print(json.dumps(counts | {"seconds": round(summary.seconds, 3), "rate": round(summary.rate, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
