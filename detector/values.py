"""Parsing of single event values against the contract (the slow, exact path)."""

from __future__ import annotations

import math
from typing import Any, Final

from detector.errors import InvalidEventError


class _Missing:
    """Sentinel for a field absent from an event (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def parse_numeric(value: Any, field: str, optional: bool) -> float:
    """Parse one numeric value.

    Accepts JSON numbers and numeric strings. Returns NaN for a missing/null value of an
    optional field (imputed later).

    Raises:
        InvalidEventError: missing (non-optional), wrong type (bool, list, object, non-numeric
            string) or not finite (NaN, inf).
    """
    if value is MISSING or value is None or value == "":
        if optional:
            return math.nan
        raise InvalidEventError(f"missing numeric field {field!r}", reason="missing_field", field=field)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidEventError(
            f"field {field!r} must be a number, got {type(value).__name__}", reason="wrong_type", field=field
        )
    try:
        number = float(value)
    except OverflowError as exc:  # an int beyond float range; str(value) itself may refuse (> 4300 digits)
        raise InvalidEventError(f"field {field!r} is too large to be finite", reason="not_finite", field=field) from exc
    except ValueError as exc:  # only a str gets here: float() of an int or float never raises ValueError
        raise InvalidEventError(
            f"field {field!r} must be a number, got {str(value)[:40]!r}", reason="wrong_type", field=field
        ) from exc
    if not math.isfinite(number):
        raise InvalidEventError(f"field {field!r} is not finite ({number})", reason="not_finite", field=field)
    return number


def canonical_category(value: Any, field: str, optional: bool) -> str | None:
    """Canonical string of one categorical value; ``None`` for missing in an optional field.

    Integers, integral floats and booleans are accepted (``1``, ``1.0`` -> ``"1"``;
    ``True`` -> ``"true"``) because categorical codes often arrive as numbers.

    Raises:
        InvalidEventError: missing (non-optional) or wrong type (list, object, NaN).
    """
    if value is MISSING or value is None:
        if optional:
            return None
        raise InvalidEventError(f"missing categorical field {field!r}", reason="missing_field", field=field)
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError as exc:  # Python refuses to print ints over 4300 digits
            raise InvalidEventError(
                f"field {field!r} is an integer code too large to use", reason="wrong_type", field=field
            ) from exc
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise InvalidEventError(
        f"field {field!r} must be a string or integer code, got {type(value).__name__}",
        reason="wrong_type",
        field=field,
    )
