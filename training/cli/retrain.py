"""``python -m training retrain``: the retrain job's command line (for a CronJob or by hand).

Exit codes (a scheduler alerts on 1):

* :data:`EXIT_PROMOTED` (0): the candidate passed the gate and is live (dry run: would be).
* :data:`EXIT_FAILED` (1): bad data, training error, broken registry or live model, Kafka unreachable.
* :data:`EXIT_USAGE` (2): bad command-line usage.
* :data:`EXIT_KEPT` (3): the gate refused the candidate, or the live model changed while the job
  ran (compare-and-swap promotion); the live model stays (dry run: would stay).

One JSON summary goes to stdout; ``error: ...`` lines to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from detector.errors import DetectorError, UsageError
from detector.kafka_checks import normalised_servers
from training.cli.commands import check_plotting, fit_config_from_args
from training.fit import FitConfig
from training.retrain.data import FileOptions
from training.retrain.feedback import FeedbackOptions
from training.retrain.gate import GateConfig
from training.retrain.job import RetrainOptions, SpecRoles, run_retrain
from training.retrain.kafka_security import KafkaSecurity
from training.retrain.kafka_source import KafkaWindow
from training.retrain.verdicts import FEEDBACK_TOPIC

EXIT_PROMOTED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_KEPT = 3


def add_retrain_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``retrain`` (with ``run_command=run_retrain_command``) to a parser's subparsers."""
    from training.cli.main import add_data_options, add_training_options  # noqa: PLC0415 - cli imports this module

    retrain = subparsers.add_parser(
        "retrain",
        help="train a candidate on recent normals, gate it against the live model, promote or keep",
        description="Train a candidate on recent normals, gate it against the live model, promote or keep.",
        epilog="exit codes: 0 promoted, 3 kept by the gate, 1 failed (data, training, registry), 2 usage",
    )
    retrain.add_argument(
        "data", nargs="*", type=Path, metavar="DATA", help="CSV/JSONL files of recent events, oldest first"
    )
    retrain.add_argument("--registry", required=True, type=Path, metavar="DIR", help="model registry directory")
    kafka = retrain.add_argument_group("Kafka source")
    kafka.add_argument("--from-kafka", action="store_true", help="also read recent events from the input topic")
    kafka.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("WORKER_KAFKA__BOOTSTRAP_SERVERS") or "localhost:9092",
        metavar="HOST:PORT",
        help="Kafka brokers (default: $WORKER_KAFKA__BOOTSTRAP_SERVERS, else localhost:9092)",
    )
    kafka.add_argument(
        "--topic",
        default=os.environ.get("WORKER_KAFKA__INPUT_TOPIC") or "events",
        help="input topic (default: $WORKER_KAFKA__INPUT_TOPIC, else events)",
    )
    window = kafka.add_mutually_exclusive_group()
    window.add_argument("--since-minutes", type=float, metavar="M", help="events of the last M minutes")
    window.add_argument("--last", type=int, metavar="N", help="the newest N events")
    kafka.add_argument("--kafka-timeout-s", type=float, default=120.0, help="stop reading after this long")
    kafka.add_argument(
        "--max-events", type=int, default=1_000_000, help="most events held while reading (the newest are kept)"
    )
    add_kafka_security_options(kafka)
    add_data_options(retrain)
    gate = retrain.add_argument_group("gate")
    gate.add_argument("--anomalies", type=Path, metavar="FILE", help="labelled anomalies for the recall check")
    gate.add_argument(
        "--holdout-fraction",
        type=float,
        default=None,
        help="newest normals held out (default: max(0.2, 20/target-FPR rows), at most half)",
    )
    gate.add_argument("--fpr-tolerance", type=float, default=None, help="absolute; default half the target FPR")
    gate.add_argument("--recall-tolerance", type=float, default=0.02, help="recall the candidate may lose (0.02)")
    gate.add_argument(
        "--confidence", type=float, default=0.95, help="confidence of the exact (Clopper-Pearson) FPR test (0.95)"
    )
    gate.add_argument("--keep-flagged", action="store_true", help="train also on unlabelled rows the live model flags")
    gate.add_argument("--dry-run", action="store_true", help="train and decide; write nothing to the registry")
    feedback = retrain.add_argument_group("analyst feedback (see python -m training feedback)")
    feedback.add_argument("--feedback", type=Path, action="append", default=[], metavar="FILE", help="verdicts file")
    feedback.add_argument(
        "--feedback-topic",
        metavar="TOPIC",
        help=f"read verdicts from this topic (with --from-kafka; e.g. {FEEDBACK_TOPIC})",
    )
    feedback.add_argument(
        "--anomaly-records", type=Path, action="append", default=[], metavar="FILE", help="JSONL anomaly records"
    )
    feedback.add_argument(
        "--records-topic", metavar="TOPIC", help="the workers' output topic, whose records carry the events"
    )
    signing = retrain.add_argument_group("model signing (optional)")
    signing.add_argument("--signing-key", type=Path, metavar="FILE", help="sign the candidate (Ed25519 private PEM)")
    signing.add_argument(
        "--public-key",
        default=os.environ.get("WORKER_MODEL_PUBLIC_KEY") or None,
        metavar="PEM",
        help="accept only signed models (file or PEM; default: $WORKER_MODEL_PUBLIC_KEY)",
    )
    add_training_options(retrain)
    retrain.add_argument(
        "--calibration-fraction",
        type=float,
        default=None,
        help=f"normals held out to calibrate; a holdout under {FitConfig().cross_fit_below:,} normals is not used:"
        " every normal is calibrated on by cross-fitting",
    )
    retrain.set_defaults(run_command=run_retrain_command)
    return retrain


def add_kafka_security_options(group: argparse._ArgumentGroup) -> None:
    """SASL/SSL options; each defaults to the worker's ``WORKER_KAFKA__*`` variable (password: env only)."""
    group.add_argument(
        "--security-protocol",
        choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
        help="default: $WORKER_KAFKA__SECURITY_PROTOCOL, else PLAINTEXT",
    )
    group.add_argument(
        "--sasl-mechanism",
        choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        help="default: $WORKER_KAFKA__SASL_MECHANISM (password only from $WORKER_KAFKA__SASL_PASSWORD)",
    )
    group.add_argument("--sasl-username", help="default: $WORKER_KAFKA__SASL_USERNAME")
    group.add_argument("--ssl-cafile", type=Path, metavar="FILE", help="default: $WORKER_KAFKA__SSL_CAFILE")


def security_from_args(args: argparse.Namespace) -> KafkaSecurity:
    """The worker's security settings from the environment, overridden by the options (ValueError if bad)."""
    return KafkaSecurity.from_env(
        security_protocol=args.security_protocol,
        sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username,
        ssl_cafile=args.ssl_cafile,
    )


def _check_finite(args: argparse.Namespace) -> None:
    """Found in review: ``--fpr-tolerance nan`` passed every candidate (comparisons with NaN are
    false), ``inf`` promoted and then failed writing the report, ``--kafka-timeout-s nan`` crashed."""
    given = {
        "--fpr-tolerance": args.fpr_tolerance,
        "--recall-tolerance": args.recall_tolerance,
        "--since-minutes": args.since_minutes,
        "--kafka-timeout-s": args.kafka_timeout_s,
    }
    for flag, value in given.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
    if args.kafka_timeout_s is not None and args.kafka_timeout_s <= 0:
        raise ValueError("--kafka-timeout-s must be positive")


def options_from_args(args: argparse.Namespace) -> RetrainOptions:
    """Build the job's options; raises ValueError for inconsistent usage."""
    if not args.data and not args.from_kafka:
        raise ValueError("give DATA files and/or --from-kafka")
    if args.from_kafka and args.since_minutes is None and args.last is None:
        raise ValueError("--from-kafka needs --since-minutes M or --last N")
    if (args.since_minutes is not None or args.last is not None) and not args.from_kafka:
        raise ValueError("--since-minutes and --last need --from-kafka")
    if (args.last is not None and args.last < 1) or (args.since_minutes is not None and args.since_minutes <= 0):
        raise ValueError("--last and --since-minutes must be positive")
    _check_finite(args)
    if args.holdout_fraction is not None and not 0 < args.holdout_fraction < 1:
        raise ValueError("--holdout-fraction must lie in (0, 1)")
    if not 0 < args.confidence < 1:
        raise ValueError("--confidence must lie in (0, 1)")
    if (args.fpr_tolerance is not None and args.fpr_tolerance < 0) or args.recall_tolerance < 0:
        raise ValueError("tolerances must not be negative")
    if (args.truth_column is None) != (args.normal_value is None):
        raise ValueError("--truth-column and --normal-value go together")
    if (args.feedback_topic or args.records_topic) and not args.from_kafka:
        raise ValueError("--feedback-topic and --records-topic need --from-kafka")
    if args.max_events < 1:
        raise ValueError("--max-events must be positive")
    kafka = None
    if args.from_kafka:
        kafka = KafkaWindow(
            normalised_servers(args.bootstrap_servers),
            args.topic,
            args.last,
            args.since_minutes,
            max_events=args.max_events,
            timeout_s=args.kafka_timeout_s,
            security=security_from_args(args),
        )
    text = tuple(c for c in (args.id_column, args.timestamp_column) if c)
    files = FileOptions(args.truth_column, args.normal_value, tuple(c for c in args.drop_columns.split(",") if c), text)

    def configure(base: FitConfig) -> FitConfig:
        return fit_config_from_args(args, base)

    return RetrainOptions(
        registry_dir=args.registry,
        data=tuple(args.data),
        kafka=kafka,
        files=files,
        anomalies=args.anomalies,
        holdout_fraction=args.holdout_fraction,
        gate=GateConfig(args.fpr_tolerance, args.recall_tolerance, args.confidence),
        keep_flagged=args.keep_flagged,
        spec_file=args.spec,
        roles=SpecRoles(args.id_column, args.timestamp_column, args.label_column),
        configure=configure,
        dry_run=args.dry_run,
        signing_key=args.signing_key,
        public_key=args.public_key,
        feedback=FeedbackOptions(
            tuple(args.feedback), args.feedback_topic, tuple(args.anomaly_records), args.records_topic
        ),
    )


def run_retrain_command(args: argparse.Namespace) -> int:
    """Run the job; print a JSON summary; return the exit code (see the module docstring)."""
    try:
        options = options_from_args(args)
        if not options.dry_run:  # a dry run draws no report (found in review: it was refused too)
            check_plotting("retrain (its evaluation report)")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_retrain(options)
    except UsageError as exc:  # a training option's value, checked when the job builds its config
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DetectorError, OSError) as exc:  # anything else is a bug: it keeps its traceback
        print(f"error: retrain failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILED
    summary = {
        "decision": result.report["decision"],
        "promoted": result.promoted,
        "dry_run": options.dry_run,
        "candidate_version": result.candidate_version,
        "live_version": result.report["live_version"],
        "reason": result.report["reason"],
        "reports": [str(p) for p in result.report_paths],
    }
    if "report_error" in result.report:  # promoted, but the final decision.json was not written
        summary["report_error"] = result.report["report_error"]
    print(json.dumps(summary))  # one line: a log collector takes it as one record
    return EXIT_PROMOTED if result.report["decision"] == "promote" else EXIT_KEPT
