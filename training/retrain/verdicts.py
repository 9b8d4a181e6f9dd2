"""Analyst verdicts on flagged events: the schema, parsing and validation, and where they are kept.

A verdict is one JSON object::

    {"event_id": "e-42", "verdict": "false_positive", "by": "alice", "at": "2026-01-05T10:00:00+00:00",
     "note": "nightly backup"}

``verdict`` is ``false_positive`` (the event is normal: the retrain job trains on it even though
the live model flags it) or ``confirmed`` (a real anomaly: the job uses it as a labelled anomaly in
the recall check). For one event the latest verdict (by ``at``, then arrival) wins.

Verdicts are kept on a Kafka topic (default :data:`FEEDBACK_TOPIC`, key = event id) or appended to
a JSONL file. Every verdict of a batch is validated before anything is written; a file gets the
whole batch in one append. No Kafka import here (see :mod:`training.feedback_io`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from detector.errors import DataError

FEEDBACK_TOPIC = "anomalies.feedback"
VERDICTS = ("false_positive", "confirmed")

logger = logging.getLogger(__name__)


def _id_text(value: object) -> object:
    """An integer id (a JSON number) as its text: the worker's event ids may be integers, of any
    size, and its anomaly records' ``event_id`` is their text (found in review: an integer id was
    refused, and dropped without a word from the feedback topic)."""
    return str(value) if type(value) is int else value


class Verdict(BaseModel):
    """One analyst verdict on one flagged event."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    event_id: Annotated[str, BeforeValidator(_id_text)] = Field(min_length=1, max_length=512)
    verdict: Literal["false_positive", "confirmed"]
    by: str = Field(min_length=1, max_length=200)
    at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    note: str = Field(default="", max_length=2000)

    def to_json(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True).encode("utf-8")


def verdict_from(raw: Mapping[str, Any], where: str) -> Verdict:
    """Validate one raw verdict; DataError with a one-line message naming ``where`` and the field."""
    cleaned = {k: v for k, v in raw.items() if not (k in ("at", "note") and v in ("", None))}
    try:
        return Verdict.model_validate(cleaned)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "record"
        if field == "verdict":
            got = str(raw.get("verdict"))[:40]
            raise DataError(f"{where}: unknown verdict {got!r} (use {' or '.join(VERDICTS)})") from None
        raise DataError(f"{where}: {field}: {first['msg']}") from None


def parse_verdicts(text: str, source: str, defaults: Mapping[str, Any] | None = None) -> list[Verdict]:
    """Verdicts of a CSV (header row) or JSONL text; ``defaults`` fill missing fields (e.g. ``by``).

    Raises:
        DataError: the first malformed line or invalid verdict, as ``source:line: message``.
    """
    base = dict(defaults or {})
    if not text.strip():
        raise DataError(f"{source}: no verdicts")
    try:
        rows = list(_jsonl_rows(text, source) if _looks_like_jsonl(text) else _csv_rows(text, source))
    except csv.Error as exc:
        raise DataError(f"{source}: not a CSV of verdicts: {exc}") from None
    if not rows:
        raise DataError(f"{source}: no verdicts")
    return [verdict_from({**base, **row}, f"{source}:{line}") for line, row in rows]


def read_verdict_file(path: Path) -> list[Verdict]:
    """Verdicts kept in a JSONL (or CSV) file; DataError names the file and line of the first bad one.

    In a JSONL store a line that is not JSON at all is skipped with a warning: it is what a torn
    append leaves (:func:`append_verdicts` writes its own lines after it), and one such line must
    not stop every later retrain. A JSON line that is not a valid verdict is still an error.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") dropped
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read feedback file {path}: {exc}") from exc
    if not text.strip():
        return []
    if _looks_like_jsonl(text):
        lines = json_lines(text)
        for number, line in enumerate(lines, start=1):
            if line.strip() and not _is_json(line):
                logger.warning("feedback_line_skipped", extra={"file": str(path), "line": number})
                lines[number - 1] = ""  # keeps the other lines' numbers in later errors
        text = "\n".join(lines)
        if not text.strip():
            return []
    return parse_verdicts(text, str(path))


def json_lines(text: str) -> list[str]:
    """The lines of a JSON Lines text: split at ``\\n`` only (a trailing ``\\r`` dropped). JSON writers put
    U+2028, U+2029 and U+0085 raw inside strings, where ``str.splitlines`` would cut a record in two
    (found in review: a verdict with one in its note was skipped as torn)."""
    return [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser reads
        return False
    return True


def append_verdicts(path: Path, verdicts: Iterable[Verdict]) -> int:
    """Append the (already validated) verdicts to a JSONL file in one write; returns how many."""
    payload = b"".join(v.to_json() + b"\n" for v in verdicts)
    with path.open("ab") as fh:
        if fh.tell() > 0 and not _ends_with_newline(path):
            payload = b"\n" + payload  # a torn earlier append: keep ours on lines of their own
        fh.write(payload)
    return payload.count(b"\n")


def latest_verdicts(verdicts: Iterable[Verdict]) -> dict[str, Verdict]:
    """The winning verdict per event id: latest ``at``; on a tie, the one that came later."""
    latest: dict[str, Verdict] = {}
    for verdict in verdicts:
        known = latest.get(verdict.event_id)
        if known is None or verdict.at >= known.at:
            latest[verdict.event_id] = verdict
    return latest


def _looks_like_jsonl(text: str) -> bool:
    return text.lstrip()[:1] in ("{", "[")


def _jsonl_rows(text: str, source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(json_lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser reads
            raise DataError(f"{source}:{number}: not JSON ({str(exc).split(':')[0]})") from None
        if not isinstance(row, dict):
            raise DataError(f"{source}:{number}: a verdict must be a JSON object")
        yield number, row


def _csv_rows(text: str, source: str) -> Iterable[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "event_id" not in reader.fieldnames:
        raise DataError(f"{source}:1: a CSV of verdicts needs a header with event_id and verdict")
    for row in reader:
        if None in row:
            raise DataError(f"{source}:{reader.line_num}: more cells than header columns")
        yield reader.line_num, {k: v for k, v in row.items() if v is not None}


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) == b"\n"
