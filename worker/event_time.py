"""Event timestamps: epoch seconds, epoch milliseconds or ISO-8601 strings."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

#: Epoch numbers above this are milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
MILLISECONDS_ABOVE = 1e11
#: The last second Python's datetime can represent (9999-12-31T23:59:59Z); later times are unusable.
LATEST_SECONDS = 253402300799.0


def epoch_seconds(value: Any) -> float | None:
    """Unix time in seconds of an event timestamp value, or ``None`` when it is absent or unusable.

    Accepts epoch seconds, epoch milliseconds (values above :data:`MILLISECONDS_ABOVE`) as JSON
    numbers or numeric strings, and ISO-8601 strings (naive times are taken as UTC).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _iso_seconds(value)
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return _in_range(number / 1000.0 if number > MILLISECONDS_ABOVE else number)


def _in_range(seconds: float) -> float | None:
    """``seconds`` when it is a representable time from 1970 on (e.g. not a microsecond epoch)."""
    return seconds if 0.0 <= seconds <= LATEST_SECONDS else None


def _iso_seconds(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return _in_range(moment.timestamp())
    except (OverflowError, OSError, ValueError):
        return None


def iso_utc(seconds: float) -> str | None:
    """ISO-8601 UTC text (millisecond precision) of a unix time in seconds; ``None`` if unrepresentable."""
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None
