r"""Parsing of single event values against the contract (the slow, exact path).

Numeric strings: a string is read as a number only when it is spelled exactly as a JSON number
(RFC 8259, section 6): ``-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?``, ASCII digits only, the
whole string, nothing around it. So ``"12"``, ``"-0.5"``, ``"1E5"`` and ``"1e-3"`` are numbers;
``" 12 "``, ``"1_000"``, ``"+5"``, ``".5"``, ``"5."``, ``"007"``, ``"0x10"``, ``"١٢"`` (non-ASCII digits)
and ``"12\n"`` are the wrong type. The spellings of NaN and infinity that Python's ``float``
knows (``"nan"``, ``"NaN"``, ``"inf"``, ``"-Infinity"``, any case, optional sign, nothing around
them) are numbers that are not finite, as is a JSON number beyond float range (``"1e999"``).
CSV cells follow the same rule (:func:`number_from_text`, used by :mod:`detector.table_reader`),
so training data and live events agree on what is a number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from detector.errors import InvalidEventError

#: RFC 8259 number; ``[0-9]`` rather than ``\d``, which would also match non-ASCII digits.
_JSON_NUMBER: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?P<real>(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
#: NaN and infinity as ``float`` spells them: refused as not finite rather than as the wrong type.
_NON_FINITE: Final = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE | re.ASCII)


class _Missing:
    """Sentinel for a field absent from an event (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def number_from_text(text: str) -> int | float | None:
    """The number ``text`` spells as a JSON number (see the module docstring), else ``None``.

    An integer spelling (no fraction, no exponent) gives an ``int``, as a JSON parser would; one
    too long for ``int`` (over 4300 digits) gives a ``float`` (infinite). Any other spelling gives a
    ``float``, infinite when beyond float range (``"1e999"``). NaN and infinity words give ``None``.
    """
    match = _JSON_NUMBER.fullmatch(text)
    if match is None:
        return None
    if not match["real"]:
        try:
            return int(text)
        except ValueError:  # Python refuses to parse ints over 4300 digits
            return float(text)
    return float(text)


#: Types a block of values may hold to be converted at once: Python's and NumPy's numbers (what
#: ``DataFrame.to_dict("records")`` or rows of an array give), never a boolean.
NUMBER_TYPES: Final = frozenset(
    {int, float, np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64}
    | {np.uint8, np.uint16, np.uint32, np.uint64}
)


def python_scalar(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (``np.float32`` -> ``float``, ``np.int64`` ->
    ``int``, ``np.bool_`` -> ``bool``, ``np.str_`` -> ``str``); anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


def finite_number_block(values: Sequence[Any]) -> NDArray[np.float64] | None:
    """``values`` as one float array when every one is a number of :data:`NUMBER_TYPES` (no ``bool``) and the
    result is finite; else ``None``, and the caller parses value by value (:func:`parse_numeric`),
    which gives the same numbers and names whatever is wrong (a string, NaN, an int beyond float range).
    """
    if not values or not set(map(type, values)) <= NUMBER_TYPES:
        return None
    try:
        block = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    return block if np.isfinite(block).all() else None


def parse_numeric(value: Any, field: str, optional: bool) -> float:
    """Parse one numeric value.

    Accepts JSON numbers, and strings spelled exactly as JSON numbers (see the module
    docstring). Returns NaN for a missing/null value (or ``""``) of an optional field (imputed later).

    Raises:
        InvalidEventError: missing (non-optional), wrong type (bool, list, object, a string that
            is not a JSON number's spelling) or not finite (NaN, inf, in number or string form).
    """
    value = python_scalar(value)
    if value is MISSING or value is None or value == "":
        if optional:
            return math.nan
        raise InvalidEventError(f"missing numeric field {field!r}", reason="missing_field", field=field)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidEventError(
            f"field {field!r} must be a number, got {type(value).__name__}", reason="wrong_type", field=field
        )
    if isinstance(value, str):
        number = _number_in_string(value, field)
    else:
        try:
            number = float(value)
        except OverflowError as exc:  # an int beyond float range
            raise InvalidEventError(
                f"field {field!r} is too large to be finite", reason="not_finite", field=field
            ) from exc
    if not math.isfinite(number):
        raise InvalidEventError(f"field {field!r} is not finite ({number})", reason="not_finite", field=field)
    return number


def _number_in_string(text: str, field: str) -> float:
    """A JSON number's spelling or a NaN/infinity word -> float; anything else is the wrong type."""
    if _JSON_NUMBER.fullmatch(text) is None and _NON_FINITE.fullmatch(text) is None:
        raise InvalidEventError(
            f"field {field!r} must be a number (a string must be spelled as a JSON number), got {text[:40]!r}",
            reason="wrong_type",
            field=field,
        )
    return float(text)  # never raises on these spellings; "1e999" gives inf


def canonical_category(value: Any, field: str, optional: bool) -> str | None:
    """Canonical string of one categorical value; ``None`` for missing in an optional field.

    Integers, integral floats and booleans are accepted (``1``, ``1.0`` -> ``"1"``;
    ``True`` -> ``"true"``) because categorical codes often arrive as numbers.

    Raises:
        InvalidEventError: missing (non-optional) or wrong type (list, object, NaN).
    """
    value = python_scalar(value)
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
