"""Event files as Excel and friends write them: a byte-order mark, tab or semicolon delimiters, a JSON array."""

from __future__ import annotations

import codecs
import gzip
import re
import subprocess
import sys
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


def test_a_quote_never_closed_is_an_error_not_rows_swallowed_unseen(tmp_path: Path) -> None:
    """Found in review: a stray opening quote read every later row into one cell, silently."""
    path = tmp_path / "data.csv"
    path.write_text('a,b\n0,ok\n1,"abc\n2,x\n3,y\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.csv:3: a quoted cell opened in this row is never closed"):
        load_records(path)


def test_a_cell_beyond_the_csv_field_limit_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1," + "x" * 200_000 + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.csv:2: a cell longer than"):
        load_records(path)


def test_a_corrupted_gzip_stream_is_a_data_error(tmp_path: Path) -> None:
    """Found in review: a damaged deflate stream raised ``zlib.error`` (a traceback in the CLI)."""
    rows = "".join(f"{i * 0.37:.5f},{i * 1.91:.5f}\n" for i in range(5000))
    damaged = bytearray(gzip.compress(("x,y\n" + rows).encode()))
    for i in range(200, 260):
        damaged[i] ^= 0xFF
    path = tmp_path / "data.csv.gz"
    path.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match="cannot read"):
        load_records(path)


def test_a_json_line_python_cannot_hold_is_a_line_error_and_later_lines_are_read(tmp_path: Path) -> None:
    """Found in review: an integer of over 4,300 digits raised ``ValueError`` out of the reader."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": ' + b"1" * 5000 + b'}\n{"a": 2}\n')
    lines = list(iter_lines(path))
    assert [line.record for line in lines] == [{"a": 1}, None, {"a": 2}]
    assert lines[1].error is not None and lines[1].error.startswith(f"{path}:2: invalid JSON")


def test_a_json_line_nested_too_deeply_is_a_line_error(tmp_path: Path) -> None:
    """``RecursionError`` too; run in a child process (in 3.11 it can upset a later compile)."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b'}\n{"a": 2}\n')
    code = (
        "import sys; from detector.table_reader import iter_lines; "
        "print([(l.record, (l.error or '').split(' (')[0]) for l in iter_lines(sys.argv[1])])"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == repr([(None, f"{path}:1: invalid JSON"), ({"a": 2}, "")])


@pytest.mark.parametrize(
    ("name", "text", "cell"),
    [
        ("after.csv", 'a,b\n1,"Smith" Jr\n2,x\n', "Smith Jr"),
        ("space.csv", 'a,b\n1,"Smith" \n2,x\n', "Smith "),
        ("inches.tsv", 'a\tb\n1\t"17" monitor\n2\tx\n', "17 monitor"),
        ("no-newline.csv", 'a,b\n1,"Smith" Jr\n2,"x"', "Smith Jr"),
    ],
)
def test_text_after_a_closing_quote_is_read_as_before(tmp_path: Path, name: str, text: str, cell: str) -> None:
    """Only a quote that is never closed stops the read (found in review: a strict reader refused
    whole files for a space or text after a closing quote, which were read leniently before)."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert [r["b"] for r in load_records(path, text_columns=["b"])] == [cell, "x"]
