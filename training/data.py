"""Training/evaluation data: column checks and the truth split (file reading is in
:mod:`detector.table_reader`, shared with the worker's replayer)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from detector.errors import DataError
from detector.table_reader import Record, convert_cell, iter_records, load_records

__all__ = ["Record", "convert_cell", "iter_records", "load_records", "require_columns", "split_by_truth"]


def require_columns(records: Sequence[Record], columns: Iterable[str | None], path: Path | str) -> None:
    """Raise DataError naming the first column absent from the data."""
    present = set(records[0]) if records else set()
    for column in columns:
        if column is not None and column not in present:
            known = ", ".join(sorted(present)[:12])
            raise DataError(f"{path}: no column {column!r} (columns include: {known})")


def split_by_truth(records: Sequence[Record], truth_column: str, normal_value: str) -> tuple[list[Record], list[bool]]:
    """Strip the truth column; return records and ``is_anomaly`` flags (value != normal_value).

    The truth value is compared as a string, so ``--normal-value 0`` matches a numeric 0 too.
    """
    out: list[Record] = []
    flags: list[bool] = []
    for record in records:
        truth = record.get(truth_column)
        flags.append(_as_text(truth) != normal_value)
        out.append({k: v for k, v in record.items() if k != truth_column})
    return out, flags


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)
