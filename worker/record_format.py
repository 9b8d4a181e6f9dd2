"""Records read back from a topic, shown to a person (one line each) or to a program (JSON lines).

Pure: no Kafka. Used by ``python -m worker.tail``. Three kinds of record are recognised:
an anomaly record (:mod:`worker.anomaly_record`), a dead letter (``kestrel.error.*`` headers,
see :mod:`worker.output_guard`) and anything else (shown as compact JSON, or as text).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from worker.wide_integers import may_be_wide_integer

ERROR_PREFIX = "kestrel.error."
SOURCE_PREFIX = "kestrel.source."
MAX_TEXT = 200


@dataclass(frozen=True)
class TailRecord:
    """One record read back from a topic."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()  # a header value may be null
    topic: str = ""


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _text(raw: bytes | None, limit: int = MAX_TEXT) -> str:
    if raw is None:
        return "(null)"
    text = raw.decode("utf-8", "backslashreplace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and math.isfinite(value) else "-"


def _headers(record: TailRecord) -> dict[str, str]:
    return {name: (value or b"").decode("utf-8", "backslashreplace") for name, value in record.headers}


def is_dead_letter(record: TailRecord) -> bool:
    return any(name.startswith(ERROR_PREFIX) for name, _ in record.headers)


def format_anomaly(anomaly: Mapping[str, Any]) -> str:
    """``ANOMALY id score S (threshold T) p=P nearest C (d=D): top deviation``."""
    explanation = anomaly.get("explanation")
    fields = explanation.get("fields") if isinstance(explanation, Mapping) else None
    top = fields[0] if isinstance(fields, list) and fields and isinstance(fields[0], Mapping) else None
    why = f"{top.get('field')}={top.get('value')!r} ({_number(top.get('deviation'), '.1f')}σ)" if top else "-"
    return (
        f"ANOMALY {anomaly.get('event_id')} score {_number(anomaly.get('score'), '.3f')} "
        f"(threshold {_number(anomaly.get('threshold'), '.3f')}) p={_number(anomaly.get('p_value'), '.4g')} "
        f"nearest {anomaly.get('nearest_class')} (d={_number(anomaly.get('nearest_distance'), '.3f')}): {why}"
    )


def format_dead_letter(record: TailRecord) -> str:
    """``DEAD LETTER topic/partition@offset type/reason: message | value``."""
    h = _headers(record)
    source = f"{h.get(SOURCE_PREFIX + 'topic', '?')}/{h.get(SOURCE_PREFIX + 'partition', '?')}"
    source += f"@{h.get(SOURCE_PREFIX + 'offset', '?')}"
    shown = {ERROR_PREFIX + name for name in ("type", "reason", "message")}
    extra = [
        f"{k.removeprefix(ERROR_PREFIX)}={v}" for k, v in h.items() if k.startswith(ERROR_PREFIX) and k not in shown
    ]
    reason = f"{h.get(ERROR_PREFIX + 'type', '?')}/{h.get(ERROR_PREFIX + 'reason', '?')}"
    notes = f" [{', '.join(extra)}]" if extra else ""
    return f"DEAD LETTER {source} {reason}: {h.get(ERROR_PREFIX + 'message', '')}{notes} | {_text(record.value, 80)}"


def format_line(record: TailRecord) -> str:
    """One line for a person: ``partition@offset`` then the record by kind (control characters
    from the record, e.g. a newline or a terminal escape in a value, are shown escaped)."""
    return _escape_controls(_format_line(record))


def _format_line(record: TailRecord) -> str:
    where = f"{record.partition}@{record.offset}"
    if is_dead_letter(record):
        return f"{where} {format_dead_letter(record)}"
    parsed = _json_object(record.value)
    if parsed is not None and {"event_id", "score", "p_value"} <= parsed.keys():
        return f"{where} {format_anomaly(parsed)}"
    key = "" if record.key is None else f" key={_text(record.key, 60)}"
    body = _text(record.value) if parsed is None else _compact(parsed, record.value or b"")
    return f"{where}{key} {body}"


def _any_wide(value: Any) -> bool:
    """Whether ``value`` holds, at any depth, a float that may have been an integer beyond 64 bits
    (depth-first with a stack: a value may be nested 1,024 levels deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if may_be_wide_integer(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _compact(parsed: dict[str, Any], raw: bytes) -> str:
    """A JSON object as compact JSON; as received (line breaks as spaces) where orjson would write
    it differently: nested deeper than it writes, or an integer beyond 64 bits, at any depth, that
    its parse holds as a float (found in review: a traceback, and a rounded id)."""
    if not _any_wide(parsed):
        try:
            return orjson.dumps(parsed).decode()
        except orjson.JSONEncodeError:
            pass
    return raw.replace(b"\n", b" ").replace(b"\r", b" ").strip().decode("utf-8", "backslashreplace")


def _escape_controls(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def to_json(record: TailRecord) -> dict[str, Any]:
    """One JSON object for a program: coordinates, key, headers and the value.

    ``headers`` is a list of ``[name, value]`` pairs in the record's order, as Kafka keeps them (a
    name may repeat: a dead letter carries the input's own headers before the worker's); a header
    value that is not UTF-8 is ``[name, null, base64]``. The value is ``value`` when it is a JSON
    document (written as received, so integers beyond 64 bits stay exact), else ``value_text``
    (UTF-8) or ``value_base64``; ``value`` is null for a tombstone. The key is ``key`` (UTF-8) or
    ``key_base64``.
    """
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp_ms,
        **_bytes_fields("key", record.key),
        "headers": [_header(name, value) for name, value in record.headers],
    }
    return out | _value_fields(record.value)


def _bytes_fields(name: str, raw: bytes | None) -> dict[str, Any]:
    """``{name: text}`` when ``raw`` is UTF-8 (or None), else ``{name_base64: ...}``: bytes that
    are not text stay recoverable (found in review: decoded with escapes, the key ``b"\\xff"`` and
    the text ``\\xff`` came out the same)."""
    if raw is None:
        return {name: None}
    try:
        return {name: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(raw).decode()}


def _header(name: str, value: bytes | None) -> list[str | None]:
    if value is None:  # found in review: shown as an empty value
        return [name, None]
    try:
        return [name, value.decode("utf-8")]
    except UnicodeDecodeError:
        return [name, None, base64.b64encode(value).decode()]


def _value_fields(value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {"value": None}
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            return {"value_text": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"value_base64": base64.b64encode(value).decode()}
    # The document itself, not orjson's parse of it: that holds an integer beyond 64 bits as a
    # float (found in review: an id was printed rounded). A line break can only be whitespace
    # between tokens in JSON, so making it a space keeps one record per line, and the same document.
    return {"value": orjson.Fragment(value.replace(b"\n", b" ").replace(b"\r", b" ").strip())}


def json_line(record: TailRecord) -> str:
    return orjson.dumps(to_json(record)).decode()
