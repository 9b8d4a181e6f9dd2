"""Infer a :class:`FeatureSpec` from training records.

Rules (documented in the README):

* a column whose every present value is a number (or numeric string) is numeric, otherwise it is
  categorical — except that a column of numbers with a few (<= 1%) stray non-numeric values
  ("nan", "n/a") is refused with an error naming the row, rather than silently made categorical;
* a column with any missing/null value is optional (imputed + missing indicator);
* a numeric column is log-scaled when it is non-negative, reaches at least 100 and is heavy-tailed:
  its maximum is at least 50 times its 90th percentile (both plus one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from detector.errors import SpecError
from detector.schema import FeatureSpec

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
) -> FeatureSpec:
    """Infer which fields are numeric, categorical, optional and log-scaled.

    Args:
        records: training records (dicts), as loaded from CSV/JSONL.
        id_field, timestamp_field, label_field: roles that are not features.
        exclude: more fields that are not features (e.g. the truth column).

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
            _refuse_mostly_numeric(field, values)
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


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return False
    try:
        return math.isfinite(float(value))
    except (ValueError, OverflowError):
        return False


def _refuse_mostly_numeric(field: str, values: list[Any]) -> None:
    """A column of numbers with a few stray strings ("nan", "n/a") is a data error, not a category."""
    present = [(i, v) for i, v in enumerate(values) if v is not None and v != ""]
    bad = [(i, v) for i, v in present if not _is_number(v)]
    if present and len(bad) <= _STRAY_SHARE * len(present):
        row, value = bad[0]
        raise SpecError(
            f"column {field!r} is numeric except for {len(bad)} value(s), e.g. row {row + 1}: {str(value)[:40]!r}; "
            "fix or blank those cells, or give a spec that declares the column"
        )


def _as_numbers(values: list[Any]) -> np.ndarray | None:
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            return None
        try:
            out[i] = float(value)
        except ValueError:
            return None
        if not math.isfinite(out[i]):
            return None
    return out if len(values) else None


def _is_heavy_tailed(values: np.ndarray) -> bool:
    if values.min() < 0 or values.max() < _HEAVY_TAIL_MIN_MAX:
        return False
    q90 = float(np.quantile(values, 0.9))
    return bool((values.max() + 1.0) / (q90 + 1.0) >= _HEAVY_TAIL_RATIO)
