"""Infer a :class:`FeatureSpec` from training records.

Rules (documented in docs/training.md):

* a column whose every present value is a number (or a string spelled as a JSON number: exactly
  what the worker accepts, see :mod:`detector.values`) is numeric, otherwise it is categorical —
  except that a column of numbers with a few (<= 1%) stray non-numeric values ("nan", "n/a") is
  refused with an error naming the row, rather than silently made categorical, and so is a column
  whose only non-numbers are numbers in a spelling events may not use (" 12", "+5", "007");
* a column with any missing/null value is optional (imputed + missing indicator);
* a numeric column is log-scaled when it is non-negative, reaches at least 100 and is heavy-tailed:
  its maximum is at least 50 times its 90th percentile (both plus one).

:func:`likely_key_columns` names the inferred features that look like an id or a timestamp (a
different value in nearly every row), so the trainer can warn before they become features.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from detector.errors import InvalidEventError, SpecError
from detector.schema import FeatureSpec
from detector.values import finite_number_block, parse_numeric

_HEAVY_TAIL_RATIO = 50.0
_HEAVY_TAIL_MIN_MAX = 100.0
_STRAY_SHARE = 0.01


def infer_spec(
    records: Sequence[Mapping[str, Any]],
    *,
    id_field: str | None = None,
    timestamp_field: str | None = None,
    label_field: str | None = None,
    exclude: Iterable[str] = (),
    row_numbers: Sequence[int] | None = None,
) -> FeatureSpec:
    """Infer which fields are numeric, categorical, optional and log-scaled.

    Args:
        records: training records (dicts), as loaded from CSV/JSONL.
        id_field, timestamp_field, label_field: roles that are not features.
        exclude: more fields that are not features (e.g. the truth column).
        row_numbers: the 1-based data row of each record in its file, for messages (default:
            the records are the file's rows, in order).

    Raises:
        SpecError: no usable feature is left.
    """
    skipped = {f for f in (id_field, timestamp_field, label_field) if f} | set(exclude)
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in skipped and key not in columns:
                columns.append(key)
    numeric: list[str] = []
    categorical: list[str] = []
    optional: list[str] = []
    log_scale: list[str] = []
    for field in columns:
        values = [r.get(field) for r in records]
        present = [v for v in values if v is not None and v != ""]
        if len(present) < len(values):
            optional.append(field)
        numbers = _as_numbers(present)
        if numbers is None:
            _refuse_mostly_numeric(field, values, row_numbers or range(1, len(values) + 1))
            categorical.append(field)
            continue
        numeric.append(field)
        if _is_heavy_tailed(numbers):
            log_scale.append(field)
    try:
        return FeatureSpec(
            numeric=numeric,
            categorical=categorical,
            log_scale=log_scale,
            optional=optional,
            id_field=id_field,
            timestamp_field=timestamp_field,
            label_field=label_field,
        )
    except ValueError as exc:
        raise SpecError(f"cannot infer a feature spec: {exc}") from exc


def _number(value: Any) -> float | None:
    """The finite number the worker would read from ``value`` (a present value), else ``None``."""
    try:
        number = parse_numeric(value, "", optional=False)
    except InvalidEventError:
        return None
    return number


def _is_misspelt_number(value: Any) -> bool:
    """A string Python reads as a finite number but the worker refuses (" 12", "+5", "007", "1_000")."""
    if not isinstance(value, str):
        return False
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def _refuse_mostly_numeric(field: str, values: list[Any], rows: Sequence[int]) -> None:
    """A column of numbers with a few stray strings ("nan", "n/a"), with numbers the worker would
    refuse (" 12"), or with text among numbers that are not whole, is a data error, not a category.
    ``rows[i]`` is the 1-based data row of ``values[i]``, for the message."""
    present = [(i, v) for i, v in enumerate(values) if v is not None and v != ""]
    bad = [(i, v) for i, v in present if _number(v) is None]
    not_finite = [(i, v) for i, v in bad if isinstance(v, float)]  # JSON Lines' NaN / Infinity tokens
    if not_finite:
        row, value = not_finite[0]
        raise SpecError(
            f"column {field!r} holds {len(not_finite)} bare {value!r} value(s), e.g. row {rows[row]}: not JSON "
            "(Python's json.dumps writes them) and refused in events; write null for a missing value"
        )
    if bad and all(_is_misspelt_number(v) for _, v in bad):
        row, value = bad[0]
        raise SpecError(
            f"column {field!r} holds numbers spelled in a way events may not use, e.g. row {rows[row]}: "
            f"{str(value)[:40]!r}; write them as JSON numbers (no spaces, '+', leading zeros or '_'), "
            "or give a spec that declares the column categorical"
        )
    if present and len(bad) <= _STRAY_SHARE * len(present):
        row, value = bad[0]
        raise SpecError(
            f"column {field!r} is numeric except for {len(bad)} value(s), e.g. row {rows[row]}: {str(value)[:40]!r}; "
            "fix or blank those cells, or give a spec that declares the column"
        )
    fractional = [(i, v) for i, v in present if isinstance(v, float) and math.isfinite(v) and not v.is_integer()]
    if bad and fractional:  # text and numbers with a fraction: neither numeric nor categorical
        (row, value), (number_row, number) = bad[0], fractional[0]
        raise SpecError(
            f"column {field!r} mixes text ({len(bad)} value(s), e.g. row {rows[row]}: {str(value)[:40]!r}) with "
            f"numbers that are not whole (e.g. row {rows[number_row]}: {number!r}), which is neither a numeric nor a "
            "categorical column (a category is text or a whole number); fix or blank the text cells, or drop "
            "the column, or for a categorical column write its values as JSON Lines strings"
        )


def _as_numbers(values: list[Any]) -> np.ndarray | None:
    block = finite_number_block(values)  # the usual column: one conversion, no parsing
    if block is not None:
        return block
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        number = _number(value)
        if number is None:
            return None
        out[i] = number
    return out if len(values) else None


def _is_heavy_tailed(values: np.ndarray) -> bool:
    if values.min() < 0 or values.max() < _HEAVY_TAIL_MIN_MAX:
        return False
    q90 = float(np.quantile(values, 0.9))
    return bool((values.max() + 1.0) / (q90 + 1.0) >= _HEAVY_TAIL_RATIO)


_KEY_MIN_ROWS = 20
_KEY_DISTINCT_SHARE = 0.95
_EPOCH_SECONDS = (9e8, 4.2e9)  # 1998..2103: a number in this range in every row reads as a Unix time


def likely_key_columns(records: Sequence[Mapping[str, Any]], spec: FeatureSpec) -> list[str]:
    """Feature columns that look like an event id or a timestamp rather than a feature.

    A categorical column whose values are (nearly, >= 95%) all distinct, or a numeric column of
    distinct whole numbers that only grow or of distinct epoch-second-like times. Such a column
    teaches the model nothing that generalises, and the worker then requires it in every event.
    Checked only with at least 20 rows.
    """
    if len(records) < _KEY_MIN_ROWS:
        return []
    found = []
    for field in spec.features:
        if not _nearly_all_distinct(records, field):
            continue
        present = [r.get(field) for r in records if r.get(field) not in (None, "")]
        if field in spec.categorical or _looks_like_key_numbers(_as_numbers(present)):
            found.append(field)
    return found


def crowded_categorical_columns(
    records: Sequence[Mapping[str, Any]], spec: FeatureSpec, max_categories: int
) -> dict[str, int]:
    """Categorical features with more distinct values than the featurizer keeps, and how many.

    The featurizer keeps the ``max_categories`` most frequent values of a column; the rest share
    one "other" value. When most rows hold a value outside the kept ones, a row with a kept (but
    rare) value is the odd one out, and scores as anomalous for a value the column holds everywhere.
    """
    out = {}
    for field in spec.categorical:
        distinct = len({str(r.get(field)) for r in records if r.get(field) not in (None, "")})
        if distinct > max_categories:
            out[field] = distinct
    return out


def _nearly_all_distinct(records: Sequence[Mapping[str, Any]], field: str) -> bool:
    """Whether ``field`` is present in at least 20 rows and >= 95% of its present values are distinct
    (compared as text). Stops at the first repeat too many: more than 5% of *all* rows repeating
    means more than 5% of the present ones do (most columns stop within their first few hundred rows).
    """
    seen: set[str] = set()
    repeats, too_many = 0, (1.0 - _KEY_DISTINCT_SHARE) * len(records)
    for record in records:
        value = record.get(field)
        if value is None or value == "":
            continue
        text = str(value)
        if text in seen:
            repeats += 1
            if repeats > too_many:
                return False
        else:
            seen.add(text)
    present = len(seen) + repeats
    return present >= _KEY_MIN_ROWS and len(seen) >= _KEY_DISTINCT_SHARE * present


def _looks_like_key_numbers(values: np.ndarray | None) -> bool:
    if values is None:
        return False
    whole_and_growing = bool(np.all(values == np.round(values)) and np.all(np.diff(values) > 0))
    epoch_like = bool(np.all((values >= _EPOCH_SECONDS[0]) & (values <= _EPOCH_SECONDS[1])))
    return whole_and_growing or epoch_like
