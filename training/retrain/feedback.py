"""Analyst verdicts in the retrain job: false positives become normal rows, confirmed become anomalies.

Rules (stated in the decision report's ``data`` counts):

* The latest verdict per event id wins (:func:`training.retrain.verdicts.latest_verdicts`).
* A verdict needs its event. The job looks it up by the feature spec's id field among the rows of
  its window (files, input topic) and in anomaly records (the worker's output topic or JSONL
  exports), whose ``event`` field is the original event. Events not found are counted, not fatal.
* ``false_positive`` events are normal training rows *even though the live model flags them*: they
  bypass the "leave out what the live model flags" rule, and go before the unlabelled rows so they
  land in the training part, not the holdout.
* ``confirmed`` events are labelled anomalies for the recall check, never training rows.
* Every event is checked against the spec the job trains under (the live model's); events that no
  longer fit it are skipped and counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import DataError
from detector.schema import FeatureSpec
from training.retrain.data import valid_rows
from training.retrain.kafka_source import KafkaWindow, read_recent_events
from training.retrain.verdicts import Verdict, json_lines, latest_verdicts, read_verdict_file, verdict_from

logger = logging.getLogger(__name__)

Record = dict[str, Any]


@dataclass(frozen=True)
class FeedbackOptions:
    """Where the verdicts and the events they refer to are.

    Attributes:
        verdict_files: JSONL/CSV files of verdicts (``training feedback --to-file``).
        verdict_topic: read verdicts from this topic (with the job's Kafka connection), or ``None``.
        record_files: JSONL files of anomaly records (each with ``event_id`` and ``event``).
        record_topic: the worker's output topic, read over the job's Kafka window, or ``None``.
    """

    verdict_files: tuple[Path, ...] = ()
    verdict_topic: str | None = None
    record_files: tuple[Path, ...] = ()
    record_topic: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.verdict_files or self.verdict_topic)


@dataclass
class FeedbackRows:
    """The window's rows after the verdicts are applied."""

    unlabelled: list[Record]
    false_positives: list[Record] = field(default_factory=list)
    confirmed: list[Record] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def read_verdicts(options: FeedbackOptions, window: KafkaWindow | None) -> dict[str, Verdict]:
    """The winning verdict per event id from the files and the topic.

    Raises:
        DataError: a verdict file is malformed, or the topic is asked for without a Kafka window.
    """
    verdicts: list[Verdict] = []
    for path in options.verdict_files:
        verdicts.extend(read_verdict_file(path))
    if options.verdict_topic is not None:
        refused: list[str] = []
        for i, raw in enumerate(_topic_values(options.verdict_topic, window, whole_topic=True)):
            try:
                verdicts.append(verdict_from(raw, f"{options.verdict_topic}[{i}]"))
            except DataError as exc:  # a bad value on a shared topic must not stop the job
                refused.append(str(exc))
        if refused:
            logger.warning(
                "feedback_verdicts_invalid",
                extra={"topic": options.verdict_topic, "count": len(refused), "first": refused[0]},
            )
    return latest_verdicts(verdicts)


def read_record_events(options: FeedbackOptions, window: KafkaWindow | None) -> dict[str, Record]:
    """``event_id -> event`` from anomaly records (files, then the output topic)."""
    records: list[Mapping[str, Any]] = []
    for path in options.record_files:
        records.extend(_jsonl_objects(path))
    if options.record_topic is not None:
        records.extend(_topic_values(options.record_topic, window, whole_topic=False))
    records = [_unwrapped(r) for r in records]
    usable = [r for r in records if isinstance(r.get("event"), dict) and r.get("event_id") is not None]
    if len(usable) < len(records):  # e.g. records whose event was left out for size: named, not silent
        logger.warning("anomaly_records_without_event", extra={"count": len(records) - len(usable)})
    return {str(r["event_id"]): dict(r["event"]) for r in usable}


def _unwrapped(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """An anomaly record as saved by ``python -m worker tail --json`` (the record under ``value``,
    next to its topic, partition and offset; found in review: such files matched no verdict, silently)."""
    value = record.get("value")
    return value if "event_id" not in record and isinstance(value, dict) else record


def apply_verdicts(
    rows: Sequence[Record], verdicts: Mapping[str, Verdict], record_events: Mapping[str, Record], spec: FeatureSpec
) -> FeedbackRows:
    """Split the window's unlabelled ``rows`` by the verdicts (see the module docstring)."""
    if spec.id_field is None:
        raise DataError("feedback needs a feature spec with an id field (verdicts name events by id)")
    id_field = spec.id_field
    in_window = {str(r[id_field]): r for r in rows if r.get(id_field) is not None}
    result = FeedbackRows([r for r in rows if str(r.get(id_field)) not in verdicts])
    found: dict[str, list[Record]] = {"false_positive": [], "confirmed": []}
    missing = 0
    for event_id, verdict in verdicts.items():
        event = in_window.get(event_id) or record_events.get(event_id)
        if event is None:
            missing += 1
        else:
            found[verdict.verdict].append(event)
    result.false_positives = valid_rows(found["false_positive"], spec, strict=False, what="feedback")
    result.confirmed = valid_rows(found["confirmed"], spec, strict=False, what="feedback")
    result.counts = {
        "feedback_verdicts": len(verdicts),
        "feedback_false_positive_rows": len(result.false_positives),
        "feedback_confirmed_rows": len(result.confirmed),
        "feedback_events_not_found": missing,
        "feedback_events_invalid": sum(map(len, found.values())) - len(result.false_positives) - len(result.confirmed),
    }
    return result


def _topic_values(topic: str, window: KafkaWindow | None, *, whole_topic: bool) -> Iterable[Mapping[str, Any]]:
    if window is None:
        raise DataError(f"reading {topic} needs --from-kafka (the broker and window)")
    if whole_topic:  # verdicts may predate the window: read the newest max_events of the topic
        source = KafkaWindow(
            window.bootstrap_servers,
            topic,
            last=window.max_events,
            max_events=window.max_events,
            timeout_s=window.timeout_s,
            security=window.security,
        )
    else:
        source = KafkaWindow(
            window.bootstrap_servers,
            topic,
            window.last,
            window.since_minutes,
            window.max_events,
            window.timeout_s,
            window.security,
        )
    return read_recent_events(source).events


def _jsonl_objects(path: Path) -> list[Mapping[str, Any]]:
    try:
        lines = json_lines(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read anomaly records {path}: {exc}") from exc
    out: list[Mapping[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            raise DataError(f"{path}:{number}: not JSON") from None
        except RecursionError:  # an anomaly record around an event nested deeper than this parser reads
            logger.warning("anomaly_record_too_deep", extra={"file": str(path), "line": number})
            continue
        if isinstance(value, dict):
            out.append(value)
    return out
