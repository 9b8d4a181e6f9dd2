"""Event timestamps: epoch seconds, epoch milliseconds or ISO-8601 strings."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

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


#: The first second Python's datetime can represent (0001-01-01T00:00:00Z).
EARLIEST_SECONDS = -62135596800.0


def iso_utc(seconds: float) -> str | None:
    """ISO-8601 UTC text of a unix time in seconds; ``None`` if unrepresentable.

    Rounded to the microsecond, then cut to milliseconds, as ``datetime.isoformat`` does.
    """
    return iso_utc_many(np.array([seconds], dtype=np.float64))[0]


def iso_utc_many(seconds: NDArray[np.float64]) -> list[str | None]:
    """:func:`iso_utc` of each value in one vectorised call (NaN and out-of-range values give ``None``).

    Example: ``1700000000.0137`` -> ``"2023-11-14T22:13:20.013+00:00"``.
    """
    usable = np.isfinite(seconds) & (seconds >= EARLIEST_SECONDS) & (seconds < LATEST_SECONDS + 1.0)
    # As datetime does: round to the microsecond (so 1099006878.916 stays .916), then cut to the ms.
    micros = np.round(np.where(usable, seconds, 0.0) * 1e6).astype(np.int64)
    millis = (micros // 1000).astype("datetime64[ms]")
    texts = np.datetime_as_string(millis, unit="ms").tolist()
    return [f"{text}+00:00" if ok else None for text, ok in zip(texts, usable.tolist(), strict=True)]
