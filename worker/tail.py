"""Watch a topic: one line per record (anomalies, dead letters, feedback or any JSON topic).

    python -m worker.tail --topic anomalies [--from-beginning] [--max N] [--json]

An anomaly record shows its event id, score, threshold, p-value, nearest class and the field that
deviates most; a dead letter its ``kestrel.error.*`` reason headers and source coordinates; any
other record its key and compact JSON. ``--json`` prints one JSON object per record instead.
Without ``--from-beginning`` only records published from now on are shown. Reads without a
consumer group (commits nothing). The connection uses the worker's settings from the
environment (``WORKER_KAFKA__BOOTSTRAP_SERVERS``, ``WORKER_KAFKA__SECURITY_PROTOCOL``,
``WORKER_KAFKA__SASL_*``, ``WORKER_KAFKA__SSL_CAFILE``); ``--bootstrap-servers`` overrides.
Ctrl-C stops cleanly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Protocol

from pydantic import ValidationError

from detector.cli_help import DefaultsHelpFormatter
from worker.errors import BrokerError
from worker.record_format import TailRecord, format_line, json_line
from worker.settings import check_topic_name, tool_env_warnings, tool_kafka_settings


class RecordSource(Protocol):
    def poll(self, timeout_ms: int = 200) -> list[TailRecord]: ...
    def close(self) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker.tail",
        description=__doc__.splitlines()[0],
        epilog="Exit codes: 0 done or stopped with Ctrl-C, 1 broker unreachable or no such topic, "
        "2 bad command line or settings.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--topic", default="anomalies", help="topic to read (anomalies, events.dlq, feedback, ...)")
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka bootstrap servers (default: $WORKER_KAFKA__BOOTSTRAP_SERVERS, else localhost:9092)",
    )
    parser.add_argument("--from-beginning", action="store_true", help="show the records already on the topic too")
    parser.add_argument("--max", type=int, default=None, metavar="N", help="stop after N records (default: never)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per record instead of a pretty line (headers as [name, value] pairs, in order)",
    )
    return parser


def follow(source: RecordSource, limit: int | None) -> Iterator[TailRecord]:
    """Records as they arrive, ``limit`` of them (endless when None)."""
    seen = 0
    while limit is None or seen < limit:
        for record in source.poll(500)[: None if limit is None else limit - seen]:
            seen += 1
            yield record


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max is not None and args.max < 0:
        print("error: --max must not be negative", file=sys.stderr)
        return 2
    try:
        check_topic_name(args.topic)
    except ValueError as exc:
        print(f"error: --topic: {exc}", file=sys.stderr)
        return 2
    try:
        for warning in tool_env_warnings(os.environ):
            print(f"warning: {warning}", file=sys.stderr)
        settings = tool_kafka_settings(os.environ, args.bootstrap_servers)
    except ValidationError as exc:
        print(f"error: invalid Kafka settings: {exc.errors()[0]['msg']}", file=sys.stderr)
        return 2
    from worker.topic_tools import TopicFollower  # noqa: PLC0415 - --help works without importing kafka

    try:
        source = TopicFollower(settings, args.topic, from_beginning=args.from_beginning)
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    show = json_line if args.json else format_line
    shown = 0
    try:
        for record in follow(source, args.max):
            print(show(record), flush=True)
            shown += 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): stop as Ctrl-C does. Python's own flush of stdout at
        # exit would fail again, so stdout now points at /dev/null (the Python docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        source.close()
    if not args.json:
        print(f"{shown} records", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
