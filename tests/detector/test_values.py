"""Single-value parsing against the event contract: exact reasons, and never an unexpected exception."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.errors import InvalidEventError
from detector.values import MISSING, canonical_category, parse_numeric

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
any_value = json_values | st.just(MISSING) | st.sampled_from(["nan", "NaN", "inf", "-Infinity", "1e999", " 7 ", "x1"])


def reason_of(call: Any) -> tuple[str, str | None]:
    with pytest.raises(InvalidEventError) as info:
        call()
    return info.value.reason, info.value.field


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (-2.5, -2.5), ("12", 12.0), (" 12 ", 12.0), ("-1.5e3", -1500.0), ("0", 0.0), (2**70, float(2**70))],
)
def test_numbers_and_numeric_strings_are_accepted(value: Any, expected: float) -> None:
    assert parse_numeric(value, "x", optional=False) == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_nan_and_inf_in_float_and_string_form_are_not_finite(value: Any) -> None:
    assert reason_of(lambda: parse_numeric(value, "bytes", optional=False)) == ("not_finite", "bytes")


def test_an_int_beyond_float_range_is_not_finite_even_past_the_int_printing_limit() -> None:
    assert reason_of(lambda: parse_numeric(10**400, "n", optional=False)) == ("not_finite", "n")
    # str() of an int over 4300 digits raises ValueError in Python 3.11; that must not escape.
    assert reason_of(lambda: parse_numeric(10**5000, "n", optional=False)) == ("not_finite", "n")


@pytest.mark.parametrize("value", [True, False, [1], {"a": 1}, "abc", "0x10", "1,5", b"1"])
def test_wrong_types_name_the_field(value: Any) -> None:
    reason, field = reason_of(lambda: parse_numeric(value, "duration", optional=False))
    assert (reason, field) == ("wrong_type", "duration")


@pytest.mark.parametrize("value", [MISSING, None, ""])
def test_missing_numeric_is_rejected_unless_optional(value: Any) -> None:
    assert reason_of(lambda: parse_numeric(value, "dur", optional=False)) == ("missing_field", "dur")
    assert math.isnan(parse_numeric(value, "dur", optional=True))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("tcp", "tcp"), ("", ""), (7, "7"), (7.0, "7"), (-3, "-3"), (True, "true"), (False, "false")],
)
def test_categorical_values_are_canonicalised(value: Any, expected: str) -> None:
    assert canonical_category(value, "proto", optional=False) == expected


@pytest.mark.parametrize("value", [1.5, math.nan, math.inf, [1], {"a": "b"}])
def test_categorical_wrong_types_are_rejected(value: Any) -> None:
    assert reason_of(lambda: canonical_category(value, "proto", optional=False)) == ("wrong_type", "proto")


def test_categorical_int_past_the_int_printing_limit_is_rejected_not_crashing() -> None:
    assert reason_of(lambda: canonical_category(10**5000, "proto", optional=False)) == ("wrong_type", "proto")


def test_missing_categorical_is_rejected_unless_optional() -> None:
    assert reason_of(lambda: canonical_category(MISSING, "proto", optional=False)) == ("missing_field", "proto")
    assert reason_of(lambda: canonical_category(None, "proto", optional=False)) == ("missing_field", "proto")
    assert canonical_category(MISSING, "proto", optional=True) is None
    assert canonical_category(None, "proto", optional=True) is None


@given(value=any_value, optional=st.booleans())
def test_parse_numeric_raises_only_invalid_event_error(value: Any, optional: bool) -> None:
    try:
        number = parse_numeric(value, "f", optional)
    except InvalidEventError as exc:
        assert exc.field == "f"
        assert exc.reason in {"missing_field", "wrong_type", "not_finite"}
        return
    assert isinstance(number, float)
    assert math.isfinite(number) or (optional and math.isnan(number))


@given(value=any_value, optional=st.booleans())
def test_canonical_category_raises_only_invalid_event_error(value: Any, optional: bool) -> None:
    try:
        text = canonical_category(value, "c", optional)
    except InvalidEventError as exc:
        assert exc.field == "c"
        assert exc.reason in {"missing_field", "wrong_type"}
        return
    assert isinstance(text, str) or (optional and text is None)
