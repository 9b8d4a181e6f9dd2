"""Reading event files: CSV with a header (``.tsv``: tab-delimited), or JSON Lines; gzip or not.

Shared by the trainer (training data) and the worker's replayer (publishing a file to a topic).
A CSV cell becomes a number exactly when a live event's string would be read as one
(:func:`detector.values.number_from_text`): the whole cell spelled as a JSON number, ASCII digits,
no surrounding spaces (``12`` -> ``12``, ``1.5e3`` -> ``1500.0``; ``" 12"``, ``+5``, ``.5``, ``007``,
``1_000`` stay strings, which a numeric column then refuses, naming the row). An empty cell
becomes ``None``; every other cell stays a string (so ``"nan"`` in a numeric column is reported as
a bad value, not silently accepted). Columns named in ``text_columns`` (ids, timestamps) are never
converted.

A leading UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped. A CSV whose header is one column
holding another delimiter (``a;b;c``, or ``a,b,c`` in a ``.tsv``) and a JSON array where JSON Lines
are expected are refused, naming the file: read as they are, they would give one meaningless column
or one error per line.

:func:`iter_lines` yields every line with its number, its record or why it is invalid, and (JSONL)
its bytes as read, so the replayer can publish a file unchanged and skip invalid lines;
:func:`iter_records` stops at the first invalid line.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from detector.errors import DataError
from detector.values import number_from_text

Record = dict[str, Any]


@dataclass(frozen=True)
class SourceLine:
    """One non-blank line (CSV: one row) of an event file.

    Attributes:
        line_no: 1-based line number in the (decompressed) file; a CSV row's first line.
        record: the parsed record, ``None`` when the line is invalid.
        raw: JSONL only: the line's bytes as read, without the line ending; ``None`` for CSV.
        error: why the line is invalid (``"path:line: ..."``), ``None`` when it is valid.
    """

    line_no: int
    record: Record | None
    raw: bytes | None = None
    error: str | None = None


def _decompressed(raw: IO[bytes]) -> IO[bytes]:
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw))
    return raw


#: Bytes looked at for a byte-order mark and the first non-blank character.
_PEEK_BYTES = 4096


def _peek(fh: IO[bytes]) -> tuple[int, str]:
    """Where the text starts (past a UTF-8 byte-order mark) and its first non-blank character ("" if none)."""
    head = fh.read(_PEEK_BYTES)
    start = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
    return start, head[start:].lstrip()[:1].decode("latin-1")


def _format_of(path: Path, first_char: str) -> str:
    """``"jsonl"``, ``"csv"`` or ``"tsv"``: from the last suffix but ``.gz``, else from the first character."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffixes and suffixes[-1] == ".tsv":
        return "tsv"
    if suffixes and suffixes[-1] in (".csv", ".txt"):
        return "csv"
    return "jsonl" if first_char in ("{", "[") else "csv"


def convert_cell(cell: str) -> Any:
    """CSV cell -> ``None`` (empty), ``int``/``float`` (a JSON number's exact spelling) or the string itself.

    Short cells are cached: a table repeats most of its cells ("0", "tcp", "0.00") and every result
    is immutable (NSL-KDD's 25,192 rows × 43 cells: 0.71 → 0.24 s to read, 5,174 distinct); a long
    one (free text) is converted on its own, so the cache never holds more than a few MB."""
    return _convert_short(cell) if len(cell) <= _CACHED_CELL_CHARS else _convert(cell)


#: Cells up to this long go through the cache (65,536 of them at most).
_CACHED_CELL_CHARS = 40


def _convert(cell: str) -> Any:
    if cell == "":
        return None
    number = number_from_text(cell)
    return cell if number is None else number


_convert_short = functools.lru_cache(maxsize=1 << 16)(_convert)


def iter_lines(path: Path, text_columns: Iterable[str] = ()) -> Iterator[SourceLine]:
    """Stream every non-blank line of a CSV (with header) or JSONL file, gzip or not.

    An invalid line (bad JSON, not an object, not UTF-8, a CSV row with the wrong number of cells)
    is yielded with its ``error``; the caller decides whether to stop or skip it.

    Raises:
        DataError: missing or unreadable file, a CSV without a header, with duplicate names or a
            one-column header holding another delimiter, a JSON array instead of JSON Lines.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    keep = set(text_columns)
    try:
        with path.open("rb") as raw, _decompressed(raw) as fh:
            start, first_char = _peek(fh)
            fmt = _format_of(path, first_char)
            fh.seek(start)  # past a byte-order mark: it is not part of the first name or line
            if fmt == "jsonl":
                if first_char == "[":
                    raise DataError(
                        f"{path}: looks like a JSON array (its first character is '['); "
                        "expected JSON Lines (one JSON object per line)"
                    )
                yield from _iter_jsonl(fh, path)
            else:
                # Bytes that are not UTF-8 come through as escapes, and their row is an invalid line
                # (found in review: one such byte ended the whole read, ``replay --skip-invalid`` too).
                text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", newline="")
                yield from _iter_csv(text, path, keep, "\t" if fmt == "tsv" else ",")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def iter_records(path: Path, text_columns: Iterable[str] = ()) -> Iterator[Record]:
    """Stream records from a CSV (with header) or JSONL file, gzip or not.

    Raises:
        DataError: missing/unreadable file, CSV row with the wrong number of cells, bad JSON line.
    """
    for line in iter_lines(path, text_columns):
        if line.record is None:
            raise DataError(line.error or f"{path}:{line.line_no}: invalid line")
        yield line.record


#: Delimiters a one-column header is checked for, by name.
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _check_delimiter(header: list[str], path: Path, delimiter: str) -> None:
    """Refuse a one-column header holding another delimiter: guessing could split a file wrongly."""
    if len(header) != 1:
        return
    found = {d: header[0].count(d) for d in _DELIMITERS if d != delimiter}
    other = max(found, key=lambda d: found[d])
    if not found[other]:
        return
    shown = header[0] if len(header[0]) <= 40 else header[0][:37] + "..."
    if delimiter == "\t":
        expected = "a .tsv file is read tab-separated (name a comma-separated file .csv)"
    elif other == "\t":
        expected = "expected comma-separated CSV (name a tab-separated file .tsv)"
    else:
        expected = "expected comma-separated CSV (save it with commas, or tab-separated as .tsv)"
    raise DataError(f"{path}: looks {_DELIMITERS[other]}-delimited (its header is one column, {shown!r}); {expected}")


#: What a byte that is not UTF-8 decodes to with ``errors="surrogateescape"`` (UTF-8 text never holds it).
_ESCAPED = re.compile("[\udc80-\udcff]")


class _RowLines:
    """The lines a ``csv.reader`` takes from ``fh``, keeping those of the row being read (``row``,
    emptied by the caller between rows) and whether the file ended inside it (``ended``)."""

    def __init__(self, fh: IO[str]) -> None:
        self._lines = iter(fh)
        self.row: list[str] = []
        self.ended = False

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        try:
            line = next(self._lines)
        except StopIteration:
            self.ended = True
            raise
        self.row.append(line)
        return line


def _check_closed(lines: _RowLines, path: Path, at: int, delimiter: str) -> None:
    """Refuse a row that ran to the end of the file inside a quoted cell. Read leniently (a stray
    quote mid-cell, text after a closing quote: as before), such a row holds every later line of
    the file in one cell, unseen; only the row that ends the file can be one."""
    if not lines.ended:
        return
    try:
        for _ in csv.reader(lines.row, delimiter=delimiter, strict=True):
            pass
    except csv.Error as exc:
        if "unexpected end of data" in str(exc):
            raise DataError(
                f"{path}:{at}: a quoted cell opened in this row is never closed (it runs to the end of "
                f"the file, line {at + len(lines.row) - 1}: check its quotes)"
            ) from exc


def _iter_csv(fh: IO[str], path: Path, keep: set[str], delimiter: str = ",") -> Iterator[SourceLine]:
    lines = _RowLines(fh)
    reader = csv.reader(lines, delimiter=delimiter)
    line_no = 1  # where the row being read starts
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}: empty file (a CSV needs a header row)")
        _check_closed(lines, path, 1, delimiter)
        if _ESCAPED.search("".join(lines.row)):
            raise DataError(f"{path}:1: the header is not UTF-8")
        header = [h.strip() for h in header]
        _check_delimiter(header, path, delimiter)
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{path}: duplicate column names in header: {', '.join(dupes)}")
        convert = [(name, name not in keep) for name in header]
        short = _convert_short
        line_no = reader.line_num + 1
        lines.row = []
        for row in reader:
            at, line_no = line_no, reader.line_num + 1
            _check_closed(lines, path, at, delimiter)
            escaped = _ESCAPED.search(lines.row[0] if len(lines.row) == 1 else "".join(lines.row))
            lines.row = []
            if not row:
                continue
            if escaped is not None:
                yield SourceLine(at, None, error=f"{path}:{at}: not UTF-8")
                continue
            if len(row) != len(header):
                yield SourceLine(at, None, error=f"{path}:{at}: expected {len(header)} cells, found {len(row)}")
                continue
            cells = zip(convert, row, strict=True)
            # convert_cell inlined: one call per cell, not two (this loop is most of reading a table).
            yield SourceLine(
                at,
                {
                    name: ((short(cell) if len(cell) <= _CACHED_CELL_CHARS else _convert(cell)) if conv else cell)
                    for (name, conv), cell in cells
                },
            )
    except csv.Error as exc:  # a cell over the field limit: the file cannot be split into rows past it
        limit = f"a cell longer than {csv.field_size_limit():,} characters (an unclosed quote?)"
        problem = limit if "field larger than field limit" in str(exc) else f"malformed CSV row ({exc})"
        raise DataError(f"{path}:{line_no}: {problem}") from exc


def _iter_jsonl(fh: IO[bytes], path: Path) -> Iterator[SourceLine]:
    for line_no, line in enumerate(fh, start=1):
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            continue
        yield _parse_json_line(raw, line_no, path)


def _parse_json_line(raw: bytes, line_no: int, path: Path) -> SourceLine:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return SourceLine(line_no, None, raw, f"{path}:{line_no}: not UTF-8")
    except json.JSONDecodeError as exc:
        return SourceLine(line_no, None, raw, f"{path}:{line_no}: invalid JSON ({exc.msg})")
    except (ValueError, RecursionError) as exc:  # an integer of over 4,300 digits; nesting too deep
        return SourceLine(line_no, None, raw, f"{path}:{line_no}: invalid JSON ({type(exc).__name__}: {exc})")
    if not isinstance(obj, dict):
        return SourceLine(line_no, None, raw, f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
    return SourceLine(line_no, obj, raw)


def load_records(path: Path, text_columns: Iterable[str] = ()) -> list[Record]:
    """All records of a file (see :func:`iter_records`); raises DataError when it has none."""
    records = list(iter_records(path, text_columns))
    if not records:
        raise DataError(f"{path}: no records")
    return records
