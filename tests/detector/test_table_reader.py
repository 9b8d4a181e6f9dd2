"""Event files as Excel and friends write them: a byte-order mark, tab or semicolon delimiters, a JSON array."""

from __future__ import annotations

import codecs
import gzip
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.errors import DataError
from detector.table_reader import iter_lines, load_records

ROWS = [{"a": 1, "b": 2.5, "c": "x"}, {"a": -3, "b": None, "c": "y,z"}]
CSV_TEXT = 'a,b,c\r\n1,2.5,x\r\n-3,,"y,z"\r\n'
TSV_TEXT = "a\tb\tc\r\n1\t2.5\tx\r\n-3\t\ty,z\r\n"
JSONL_TEXT = '{"a": 1, "b": 2.5, "c": "x"}\n{"a": -3, "b": null, "c": "y,z"}\n'


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("d.csv", CSV_TEXT),
        ("d.csv.gz", CSV_TEXT),
        ("d", CSV_TEXT),
        ("d.tsv", TSV_TEXT),
        ("d.jsonl", JSONL_TEXT),
        ("d.jsonl.gz", JSONL_TEXT),
        ("d.gz", JSONL_TEXT),
    ],
)
def test_a_byte_order_mark_is_dropped(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path / name, codecs.BOM_UTF8 + text.encode())
    assert load_records(path) == ROWS


def test_a_jsonl_line_after_a_byte_order_mark_keeps_its_number_and_bytes_without_the_mark(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", codecs.BOM_UTF8 + JSONL_TEXT.encode())
    first = next(iter_lines(path))
    assert (first.line_no, first.raw) == (1, b'{"a": 1, "b": 2.5, "c": "x"}')


@given(st.lists(st.sampled_from(["a", "b", "é", "1", "2.5", "", "x y"]), min_size=3, max_size=3))
def test_csv_reads_the_same_with_or_without_a_byte_order_mark(cells: list[str]) -> None:
    text = "k0,k1,k2\n" + ",".join(cells) + "\n"
    with tempfile.TemporaryDirectory() as tmp:  # tmp_path would be shared by every example
        plain = load_records(write(Path(tmp) / "p.csv", text.encode()))
        marked = load_records(write(Path(tmp) / "m.csv", codecs.BOM_UTF8 + text.encode()))
    assert plain == marked
    assert list(marked[0]) == ["k0", "k1", "k2"]


@pytest.mark.parametrize("name", ["d.tsv", "d.tsv.gz", "D.TSV"])
def test_tsv_is_read_tab_delimited(tmp_path: Path, name: str) -> None:
    assert load_records(write(tmp_path / name, TSV_TEXT.encode())) == ROWS


@pytest.mark.parametrize(
    ("name", "text", "kind", "expected"),
    [
        ("d.csv", "a;b;c\n1;2;3\n", "semicolon", "comma-separated CSV"),
        ("d.csv.gz", "a;b;c\n1,5;2;3\n", "semicolon", "comma-separated CSV"),
        ("d.txt", "a\tb\n1\t2\n", "tab", r"\.tsv"),
        ("d.csv", "a|b|c\n1|2|3\n", "pipe", "comma-separated CSV"),
        ("d", "a;b;c\n1;2;3\n", "semicolon", "comma-separated CSV"),
        ("d.tsv", "a,b,c\n1,2,3\n", "comma", "tab-separated"),
    ],
)
def test_a_file_that_looks_otherwise_delimited_is_refused_naming_it(
    tmp_path: Path, name: str, text: str, kind: str, expected: str
) -> None:
    path = write(tmp_path / name, text.encode())
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: .*looks {kind}-delimited.*{expected}") as caught:
        load_records(path)
    assert "\n" not in str(caught.value)


def test_one_column_files_and_delimiters_inside_cells_are_still_read(tmp_path: Path) -> None:
    assert load_records(write(tmp_path / "one.csv", b"a\n1\nx;y\n")) == [{"a": 1}, {"a": "x;y"}]
    assert load_records(write(tmp_path / "two.csv", b"a,b\nx;y,p\tq\n")) == [{"a": "x;y", "b": "p\tq"}]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("d.json", '[\n  {"a": 1},\n  {"a": 2}\n]\n'),
        ("d.json.gz", '[{"a": 1}, {"a": 2}]'),
        ("d.jsonl", '\n  [{"a": 1}]\n'),
        ("d", '[{"a": 1}]\n'),
        ("d.json", '\ufeff[{"a": 1}]\n'),
    ],
)
def test_a_json_array_is_refused_as_not_json_lines(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path / name, text.encode())
    with pytest.raises(DataError, match=r"looks like a JSON array.*JSON Lines \(one JSON object per line\)"):
        load_records(path)
    with pytest.raises(DataError, match="JSON array"):  # the replayer's path too
        next(iter_lines(path))


def test_a_later_json_array_line_is_still_a_line_error(tmp_path: Path) -> None:
    lines = list(iter_lines(write(tmp_path / "d.jsonl", b'{"a": 1}\n[1]\n')))
    assert [line.error for line in lines] == [None, f"{tmp_path / 'd.jsonl'}:2: expected a JSON object, got list"]
