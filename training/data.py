"""Training/evaluation data: column and value checks and the truth split (file reading is in
:mod:`detector.table_reader`, shared with the worker's replayer)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from detector.errors import DataError, InvalidEventError
from detector.schema import FeatureSpec
from detector.table_reader import Record, convert_cell, iter_records, load_records
from detector.values import MISSING, canonical_category, parse_numeric

__all__ = [
    "Record",
    "as_text",
    "check_values",
    "convert_cell",
    "iter_records",
    "load_records",
    "require_columns",
    "split_by_truth",
]


def require_columns(records: Sequence[Record], columns: Iterable[str | None], path: Path | str) -> None:
    """Raise DataError naming the first column absent from the data."""
    present: set[str] = set().union(*records)  # JSON Lines rows may each leave out optional fields
    for column in columns:
        if column is not None and column not in present:
            close = difflib.get_close_matches(column, present, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            others = [c for c in sorted(present) if c not in close]
            listed = ", ".join(others[:12]) + (f" and {len(others) - 12} more" if len(others) > 12 else "")
            raise DataError(f"{path}: no column {column!r} ({hint}columns include: {listed})")


def split_by_truth(
    records: Sequence[Record], truth_column: str, normal_value: str, *, missing_is_anomalous: bool = False
) -> tuple[list[Record], list[bool]]:
    """Strip the truth column; return records and ``is_anomaly`` flags (value != normal_value).

    The truth value is compared as a string, so ``--normal-value 0`` matches a numeric 0 too.

    ``missing_is_anomalous``: a row without a truth value is anomalous (a file of anomalies whose
    truth column marks only some rows normal); otherwise such rows are refused.

    Raises:
        DataError: rows without a truth value (empty, null or missing): neither normal nor
            anomalous (found in review: counted as anomalies without a word, and left out of training).
    """
    out: list[Record] = []
    flags: list[bool] = []
    unlabelled: list[int] = []
    for number, record in enumerate(records, start=1):
        truth = as_text(record.get(truth_column))
        if not truth.strip() and not missing_is_anomalous:
            unlabelled.append(number)
        flags.append(truth != normal_value)
        out.append({k: v for k, v in record.items() if k != truth_column})
    if unlabelled:
        shown = ", ".join(map(str, unlabelled[:5])) + (" ..." if len(unlabelled) > 5 else "")
        raise DataError(
            f"{len(unlabelled)} {'row has' if len(unlabelled) == 1 else 'rows have'} no {truth_column!r} value"
            f" (data row{'s' if len(unlabelled) > 1 else ''} {shown}): a row without a truth"
            " value is neither normal nor anomalous; fill it in or leave those rows out"
        )
    return out, flags


def as_text(value: Any) -> str:
    """A truth value as the text ``--normal-value`` is compared with (``1.0`` -> ``"1"``, ``None`` -> ``""``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def check_values(rows: list[Record], is_anomaly: list[bool], spec: FeatureSpec, path: Path | str | None = None) -> None:
    """Raise DataError naming the file (when given), the 1-based data row and the field of the first normal row
    that breaks ``spec``.

    The trainer would find the same problem, but only as an index into its own train split.
    """
    optional = set(spec.optional)
    for i, (row, anomalous) in enumerate(zip(rows, is_anomaly, strict=True)):
        if anomalous:
            continue
        try:
            for field in spec.numeric:
                value = row.get(field, MISSING)
                if type(value) is not int and not (type(value) is float and value - value == 0.0):
                    parse_numeric(value, field, field in optional)
            for field in spec.categorical:
                value = row.get(field, MISSING)
                if type(value) is not str:
                    canonical_category(value, field, field in optional)
        except InvalidEventError as exc:
            raise DataError(f"{'' if path is None else f'{path}: '}row {i + 1}: {exc}") from exc
