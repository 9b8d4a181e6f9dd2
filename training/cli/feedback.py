"""``python -m training feedback``: record analysts' verdicts on flagged events.

One verdict from the options, or many from a CSV/JSONL file (``--file``); every verdict is
validated before anything is written (one-line ``error: ...`` otherwise: exit 1 for a file, 2 for
the command line). Verdicts go
to the feedback topic (default ``anomalies.feedback``) or, with ``--to-file``, to a JSONL file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from detector.errors import DataError
from detector.kafka_checks import normalised_servers
from training.cli.retrain import add_kafka_security_options, security_from_args
from training.retrain.kafka_source import produce_values
from training.retrain.verdicts import FEEDBACK_TOPIC, VERDICTS, Verdict, append_verdicts, parse_verdicts, verdict_from

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def add_feedback_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``feedback`` (with ``run_command=run_feedback_command``) to a parser's subparsers."""
    feedback = subparsers.add_parser(
        "feedback",
        help="record verdicts on flagged events (false_positive / confirmed) for the retrain job",
        description="Record analysts' verdicts on flagged events for the retrain job.",
        epilog="exit codes: 0 recorded, 1 could not read --file, a bad verdict in it, or could not write "
        "(nothing written), 2 a bad verdict on the command line or usage",
    )
    feedback.add_argument("event_id", nargs="?", metavar="EVENT_ID", help="the flagged event's id")
    feedback.add_argument("--verdict", choices=VERDICTS, help="with EVENT_ID")
    feedback.add_argument("--note", default="", help="with EVENT_ID: why")
    feedback.add_argument("--file", type=Path, metavar="FILE", help="CSV (with header) or JSONL of verdicts")
    feedback.add_argument("--by", default=None, help="who decided (default: $USER); fills verdicts without one")
    where = feedback.add_argument_group("destination")
    where.add_argument("--to-file", type=Path, metavar="FILE", help="append to this JSONL file instead of Kafka")
    where.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("WORKER_KAFKA__BOOTSTRAP_SERVERS", "localhost:9092"),
        help="Kafka bootstrap servers (default: $WORKER_KAFKA__BOOTSTRAP_SERVERS, else localhost:9092)",
    )
    where.add_argument("--topic", default=FEEDBACK_TOPIC, help=f"feedback topic (default: {FEEDBACK_TOPIC})")
    add_kafka_security_options(where)
    feedback.set_defaults(run_command=run_feedback_command)
    return feedback


def verdicts_from_args(args: argparse.Namespace) -> list[Verdict]:
    """The verdicts to record; ValueError (DataError) with a one-line message when invalid."""
    if (args.event_id is None) == (args.file is None):
        raise ValueError("give EVENT_ID with --verdict, or --file")
    by = args.by or os.environ.get("USER") or "unknown"
    if args.file is not None:
        if args.verdict is not None:
            raise ValueError("--verdict goes with EVENT_ID; in --file each row has its own")
        try:
            text = args.file.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") dropped
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {args.file}: {exc}") from exc
        return parse_verdicts(text, str(args.file), defaults={"by": by})
    if args.verdict is None:
        raise ValueError("EVENT_ID needs --verdict false_positive|confirmed")
    raw: dict[str, Any] = {"event_id": args.event_id, "verdict": args.verdict, "by": by, "note": args.note}
    return [verdict_from(raw, "command line")]


def run_feedback_command(args: argparse.Namespace) -> int:
    """Validate, then write every verdict; print a JSON summary; return the exit code."""
    try:
        verdicts = verdicts_from_args(args)
        security = security_from_args(args) if args.to_file is None else None
        servers = normalised_servers(args.bootstrap_servers) if args.to_file is None else ""
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        # A --file that cannot be read or holds a bad verdict fails the command (as for fit and
        # score); a bad verdict on the command line is a bad command line.
        return EXIT_USAGE if args.file is None else EXIT_FAILED
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.to_file is not None:
            append_verdicts(args.to_file, verdicts)
            destination = str(args.to_file)
        else:
            assert security is not None
            produce_values(servers, args.topic, [(v.event_id, v.to_json()) for v in verdicts], security)
            destination = f"kafka topic {args.topic}"
    except (DataError, OSError) as exc:
        print(f"error: feedback not recorded: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FAILED
    counts = {v: sum(1 for x in verdicts if x.verdict == v) for v in VERDICTS}
    print(json.dumps({"recorded": len(verdicts), **counts, "to": destination}))
    return EXIT_OK
