"""Single-value parsing against the event contract: exact reasons, and never an unexpected exception."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from detector.errors import InvalidEventError
from detector.table_reader import convert_cell
from detector.values import MISSING, canonical_category, finite_number_block, number_from_text, parse_numeric

#: RFC 8259's number grammar, written out independently of detector.values.
JSON_NUMBER = r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?"
json_number_texts = st.from_regex(re.compile(JSON_NUMBER, re.ASCII), fullmatch=True)
#: Characters Python's float() skips or reads as digits but the JSON grammar refuses.
LENIENT_EXTRAS = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\xa0", "\u2003", "\u3000", "_"]
NON_ASCII_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not "0" <= c <= "9")

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
    [
        (3, 3.0),
        (-2.5, -2.5),
        ("12", 12.0),
        ("-1.5e3", -1500.0),
        ("1E5", 100000.0),
        ("1e+5", 100000.0),
        ("0", 0.0),
        ("-0", 0.0),
        ("0.25", 0.25),
        (2**70, float(2**70)),
    ],
)
def test_numbers_and_numeric_strings_are_accepted(value: Any, expected: float) -> None:
    assert parse_numeric(value, "x", optional=False) == expected


@pytest.mark.parametrize(
    "value",
    [" 12 ", "12 ", " 12", "\t12", "12\n", "1_000", "١٢", "１２", "+5", ".5", "5.", "007", "-", "1e", "1e5 ", "1.5.2"],
)
def test_numeric_strings_not_spelled_as_json_numbers_are_the_wrong_type(value: str) -> None:
    assert reason_of(lambda: parse_numeric(value, "bytes", optional=False)) == ("wrong_type", "bytes")


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, "nan", "NaN", "+nan", "inf", "-inf", "Infinity", "-INFINITY", "1e999", "-1e999"],
)
def test_nan_and_inf_in_float_and_string_form_are_not_finite(value: Any) -> None:
    assert reason_of(lambda: parse_numeric(value, "bytes", optional=False)) == ("not_finite", "bytes")


@pytest.mark.parametrize("value", [" nan", "NaN ", "ınf", "İnf", "nan1", "infinit"])
def test_nan_and_inf_words_with_anything_around_or_non_ascii_letters_are_the_wrong_type(value: str) -> None:
    assert reason_of(lambda: parse_numeric(value, "bytes", optional=False)) == ("wrong_type", "bytes")


def test_an_int_beyond_float_range_is_not_finite_even_past_the_int_printing_limit() -> None:
    assert reason_of(lambda: parse_numeric(10**400, "n", optional=False)) == ("not_finite", "n")
    # str() of an int over 4300 digits raises ValueError in Python 3.11; that must not escape.
    assert reason_of(lambda: parse_numeric(10**5000, "n", optional=False)) == ("not_finite", "n")


@pytest.mark.parametrize("value", [True, False, [1], {"a": 1}, "abc", "0x10", "1,5", b"1", " ", "\x00"])
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


@given(text=json_number_texts)
@example(text="-0")
@example(text="1" * 5000)
def test_strings_spelled_as_json_numbers_are_accepted_and_equal_float(text: str) -> None:
    number = float(text)
    if math.isfinite(number):
        assert parse_numeric(text, "f", optional=False) == number
        parsed = number_from_text(text)
        assert parsed is not None and float(parsed) == number  # an int for integer spellings, as JSON
    else:  # "1e999": a number, beyond float range
        assert reason_of(lambda: parse_numeric(text, "f", optional=False)) == ("not_finite", "f")


@given(
    text=json_number_texts,
    extra=st.sampled_from(LENIENT_EXTRAS),
    where=st.sampled_from(["before", "after", "inside"]),
)
def test_json_numbers_with_whitespace_or_underscores_are_the_wrong_type(text: str, extra: str, where: str) -> None:
    if where == "inside" and len(text) < 2:
        text += "0"  # "7" has no inside; "70" does
    spelled = {"before": extra + text, "after": text + extra, "inside": text[:1] + extra + text[1:]}[where]
    assert reason_of(lambda: parse_numeric(spelled, "f", optional=False)) == ("wrong_type", "f")
    assert number_from_text(spelled) is None


@given(text=json_number_texts, digit=NON_ASCII_DIGITS, data=st.data())
def test_json_numbers_with_a_non_ascii_digit_are_the_wrong_type(text: str, digit: str, data: st.DataObject) -> None:
    positions = [i for i, c in enumerate(text) if c.isdigit()]
    at = data.draw(st.sampled_from(positions))
    spelled = text[:at] + digit + text[at + 1 :]
    assert reason_of(lambda: parse_numeric(spelled, "f", optional=False)) == ("wrong_type", "f")
    assert number_from_text(spelled) is None


@given(cell=st.text(max_size=12) | json_number_texts | st.sampled_from(["nan", "-Infinity", " 7", "1e999", "007"]))
def test_csv_cells_and_event_strings_agree_on_what_is_a_number(cell: str) -> None:
    """A CSV cell becomes a number exactly when the same text in an event would be read as one."""
    converted = convert_cell(cell)
    if cell == "":
        assert converted is None
        return
    if isinstance(converted, str):
        with pytest.raises(InvalidEventError) as info:
            parse_numeric(cell, "f", optional=False)
        assert info.value.reason in {"wrong_type", "not_finite"}  # not_finite: "nan", "inf" words
        return
    assert type(converted) in (int, float)
    if math.isfinite(converted):
        assert parse_numeric(cell, "f", optional=False) == float(converted)
    else:
        assert reason_of(lambda: parse_numeric(cell, "f", optional=False)) == ("not_finite", "f")


def test_finite_number_block_converts_only_all_finite_ints_and_floats() -> None:
    block = finite_number_block([1, 2.5, -3])
    assert block is not None
    assert block.tolist() == [1.0, 2.5, -3.0]
    for values in ([], [1, True], [1, "2"], [1.0, float("nan")], [1.0, math.inf], [1, 10**400], [1, None]):
        assert finite_number_block(values) is None, values


def test_csv_cells_are_cached_only_when_short_and_read_alike_either_way() -> None:
    from detector import table_reader  # noqa: PLC0415 - the cache is private to the reader

    long_number, long_text = "1" * 60, "free text " * 10
    before = table_reader._convert_short.cache_info().currsize
    assert convert_cell(long_number) == int(long_number)
    assert convert_cell(long_text) == long_text
    assert table_reader._convert_short.cache_info().currsize == before  # long cells are not kept
    assert convert_cell("0.25") == 0.25 and convert_cell("0.25") is convert_cell("0.25")  # cached


@pytest.mark.parametrize(
    ("value", "number"),
    [(np.float32(0.5), 0.5), (np.float64(-2.25), -2.25), (np.int64(3), 3.0), (np.int32(-7), -7.0), (np.uint8(9), 9.0)],
)
def test_numpy_numbers_read_as_the_python_numbers_they_hold(value: Any, number: float) -> None:
    """What ``DataFrame.to_dict("records")`` or an array's rows give a library user."""
    assert parse_numeric(value, "x", optional=False) == number
    block = finite_number_block([value, 1, 2.5])
    assert block is not None and block.tolist() == [number, 1.0, 2.5]


def test_numpy_booleans_and_non_finite_numbers_are_refused_like_python_ones() -> None:
    for value, reason in (
        (np.bool_(True), "wrong_type"),
        (np.float32("nan"), "not_finite"),
        (np.float64("inf"), "not_finite"),
    ):
        with pytest.raises(InvalidEventError) as caught:
            parse_numeric(value, "x", optional=False)
        assert caught.value.reason == reason
    assert finite_number_block([np.bool_(False), 1]) is None
    assert finite_number_block([np.float32("nan")]) is None


def test_numpy_category_codes_read_as_the_python_codes() -> None:
    assert canonical_category(np.int64(3), "c", optional=False) == "3"
    assert canonical_category(np.float32(2.0), "c", optional=False) == "2"
    assert canonical_category(np.str_("tcp"), "c", optional=False) == "tcp"
    assert canonical_category(np.bool_(True), "c", optional=False) == "true"
    with pytest.raises(InvalidEventError, match="got float"):
        canonical_category(np.float32(2.5), "c", optional=False)
