"""Reading event files: CSV with a header, or JSON Lines; gzip or not.

Shared by the trainer (training data) and the worker's replayer (publishing a file to a topic).
A CSV cell becomes a number exactly when a live event's string would be read as one
(:func:`detector.values.number_from_text`): the whole cell spelled as a JSON number, ASCII digits,
no surrounding spaces (``12`` -> ``12``, ``1.5e3`` -> ``1500.0``; ``" 12"``, ``+5``, ``.5``, ``007``,
``1_000`` stay strings, which a numeric column then refuses, naming the row). An empty cell
becomes ``None``; every other cell stays a string (so ``"nan"`` in a numeric column is reported as
a bad value, not silently accepted). Columns named in ``text_columns`` (ids, timestamps) are never
converted.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from detector.errors import DataError
from detector.values import number_from_text

Record = dict[str, Any]


def _open_text(path: Path) -> IO[str]:
    raw = path.open("rb")
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw), encoding="utf-8", newline="")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _format_of(path: Path, first_char: str) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffixes and suffixes[-1] in (".csv", ".txt", ".tsv"):
        return "csv"
    return "jsonl" if first_char == "{" else "csv"


def convert_cell(cell: str) -> Any:
    """CSV cell -> ``None`` (empty), ``int``/``float`` (a JSON number's exact spelling) or the string itself."""
    if cell == "":
        return None
    number = number_from_text(cell)
    return cell if number is None else number


def iter_records(path: Path, text_columns: Iterable[str] = ()) -> Iterator[Record]:
    """Stream records from a CSV (with header) or JSONL file, gzip or not.

    Raises:
        DataError: missing/unreadable file, CSV row with the wrong number of cells, bad JSON line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    keep = set(text_columns)
    try:
        with _open_text(path) as fh:
            head = fh.read(1)
            fmt = _format_of(path, head)
            fh.seek(0)
            if fmt == "jsonl":
                yield from _iter_jsonl(fh, path)
            else:
                yield from _iter_csv(fh, path, keep)
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def _iter_csv(fh: IO[str], path: Path, keep: set[str]) -> Iterator[Record]:
    reader = csv.reader(fh)
    header = next(reader, None)
    if not header:
        raise DataError(f"{path}: empty file (a CSV needs a header row)")
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{path}: duplicate column names in header: {', '.join(dupes)}")
    convert = [(name, name not in keep) for name in header]
    for line_no, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line_no}: expected {len(header)} cells, found {len(row)}")
        yield {name: (convert_cell(cell) if conv else cell) for (name, conv), cell in zip(convert, row, strict=True)}


def _iter_jsonl(fh: IO[str], path: Path) -> Iterator[Record]:
    for line_no, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
        yield obj


def load_records(path: Path, text_columns: Iterable[str] = ()) -> list[Record]:
    """All records of a file (see :func:`iter_records`); raises DataError when it has none."""
    records = list(iter_records(path, text_columns))
    if not records:
        raise DataError(f"{path}: no records")
    return records
