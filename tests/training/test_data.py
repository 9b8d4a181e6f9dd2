"""Data loading: CSV and JSONL, gzip or not; cell conversion; errors that name the problem."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.errors import DataError
from training.data import convert_cell, iter_records, load_records, require_columns, split_by_truth

CSV_TEXT = "id,n,x,name,empty\n007,1,2.5,tcp,\n008,-3,1e3,udp,\n"
EXPECTED = [
    # "007" is not a JSON number's spelling (leading zero): it stays text, as in a live event.
    {"id": "007", "n": 1, "x": 2.5, "name": "tcp", "empty": None},
    {"id": "008", "n": -3, "x": 1000.0, "name": "udp", "empty": None},
]


def write(path: Path, text: str, compress: bool) -> Path:
    if compress:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "compress"), [("d.csv", False), ("d.csv.gz", True), ("d.gz", True), ("d", False)])
def test_csv_with_header_plain_and_gzip(tmp_path: Path, name: str, compress: bool) -> None:
    assert load_records(write(tmp_path / name, CSV_TEXT, compress)) == EXPECTED


def test_csv_text_columns_are_not_converted(tmp_path: Path) -> None:
    records = load_records(write(tmp_path / "d.csv", CSV_TEXT, False), text_columns=["n"])
    assert [r["n"] for r in records] == ["1", "-3"]
    assert records[1]["x"] == 1000.0


@pytest.mark.parametrize(("name", "compress"), [("d.jsonl", False), ("d.jsonl.gz", True), ("d.ndjson", False)])
def test_jsonl_plain_and_gzip(tmp_path: Path, name: str, compress: bool) -> None:
    rows = [{"a": 1, "b": "x", "c": None}, {"a": 2.5, "b": [1], "nested": {"k": True}}]
    text = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    assert load_records(write(tmp_path / name, text, compress)) == rows


def test_format_is_sniffed_without_a_known_suffix(tmp_path: Path) -> None:
    assert load_records(write(tmp_path / "data.gz", '{"a": 1}\n', True)) == [{"a": 1}]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("", None),
        ("12", 12),
        ("-4", -4),
        ("-0", 0),
        ("0.00", 0.0),
        ("1e-3", 0.001),
        ("1E+3", 1000.0),
        ("12345678901234567890123", 12345678901234567890123),
        ("1" * 5000, float("inf")),  # past Python's int-parsing limit: a float, as a JSON parser gives
        # Exactly what the worker reads as a number in a string (detector.values): no layout
        # spaces, no '+', no bare '.', no leading zeros, no '_', ASCII digits only.
        ("   ", "   "),
        (" 12", " 12"),
        ("12 ", "12 "),
        ("+5", "+5"),
        (".5", ".5"),
        ("3.", "3."),
        ("007", "007"),
        ("1_000", "1_000"),
        ("١٢", "١٢"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("tcp", "tcp"),
        ("1,5", "1,5"),
        ("0x1f", "0x1f"),
    ],
)
def test_convert_cell(cell: str, expected: Any) -> None:
    converted = convert_cell(cell)
    assert converted == expected
    assert type(converted) is type(expected)


@given(st.text(max_size=12))
def test_convert_cell_never_raises(cell: str) -> None:
    value = convert_cell(cell)
    assert value is None or isinstance(value, int | float | str)


def test_wrong_cell_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b\n1,2\n3\n", False)
    with pytest.raises(DataError, match=r"d\.csv:3: expected 2 cells, found 1"):
        load_records(path)


def test_duplicate_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="duplicate column names in header: a"):
        load_records(write(tmp_path / "d.csv", "a,b,a\n1,2,3\n", False))


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": \n', False)
    with pytest.raises(DataError, match=r"d\.jsonl:2: invalid JSON"):
        load_records(path)


def test_non_object_json_line_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n[1, 2]\n', False)
    with pytest.raises(DataError, match=r"d\.jsonl:2: expected a JSON object, got list"):
        load_records(path)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [("d.csv", "", "empty file"), ("d.jsonl", "", "no records"), ("d.csv", "a,b\n", "no records")],
)
def test_empty_files(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_records(write(tmp_path / name, text, False))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data file not found"):
        load_records(tmp_path / "absent.csv")


def test_corrupt_gzip_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(CSV_TEXT.encode())[:-12])
    with pytest.raises(DataError, match="cannot read"):
        load_records(path)


def test_non_utf8_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(DataError, match=r"d.csv:2: not UTF-8"):  # the row named, not only the file
        load_records(path)
    path.write_bytes(b"a,\xe9\n1,1\n")
    with pytest.raises(DataError, match=r"d.csv:1: the header is not UTF-8"):
        load_records(path)


def test_missing_column_error_text() -> None:
    records = [{"b": 1, "a": 2}]
    require_columns(records, ["a", None, "b"], "file.csv")
    with pytest.raises(DataError, match=r"^file\.csv: no column 'label' \(columns include: a, b\)$"):
        require_columns(records, ["a", "label"], "file.csv")


def test_missing_column_error_names_the_near_matches_first() -> None:
    """A typo's likely column is named even when it sorts after the first dozen."""
    records = [{f"col_{i:02d}": i for i in range(20)} | {"label": "normal", "service": "http"}]
    with pytest.raises(DataError) as caught:
        require_columns(records, ["labels"], "test.csv")
    message = str(caught.value)
    assert message.startswith("test.csv: no column 'labels' (did you mean 'label'? columns include: col_00,")
    assert message.endswith("and 9 more)")
    with pytest.raises(DataError, match=r"did you mean 'service'\?"):
        require_columns(records, ["service_knd"], "test.csv")


def test_iter_records_streams_lazily(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", CSV_TEXT, False)
    stream = iter_records(path)
    assert next(stream) == EXPECTED[0]


def test_split_by_truth_with_text_and_numeric_truth_values() -> None:
    records: list[dict[str, Any]] = [
        {"v": 1, "truth": "normal"},
        {"v": 2, "truth": "attack"},
        {"v": 3, "truth": 0},
        {"v": 4, "truth": 0.0},
        {"v": 5, "truth": 1},
    ]
    rows, flags = split_by_truth(records, "truth", "normal")
    assert rows == [{"v": i} for i in range(1, 6)]
    assert flags == [False, True, True, True, True]
    _, numeric_flags = split_by_truth(records, "truth", "0")
    assert numeric_flags == [True, True, False, False, True]
    # A row without a truth value is neither (found in review: it was an anomaly without a word).
    for missing in ({"v": 6, "truth": None}, {"v": 6, "truth": " "}, {"v": 6}):
        with pytest.raises(DataError, match=r"1 row has no 'truth' value \(data row 6\)"):
            split_by_truth([*records, missing], "truth", "normal")


def test_a_column_absent_from_the_first_json_line_is_still_found() -> None:
    """Found in review: only the first record was looked at, and a JSON Lines file whose first
    row left out an optional field was refused with "no column"."""
    require_columns([{"x": 1}, {"x": 2, "y": 3}], ["x", "y", None], "events.jsonl")
    with pytest.raises(DataError, match="no column 'z'"):
        require_columns([{"x": 1}, {"x": 2, "y": 3}], ["z"], "events.jsonl")
