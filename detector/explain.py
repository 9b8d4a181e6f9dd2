"""Explanations: which fields of an event deviate most from its nearest centroid's members.

For every centroid the trainer stores the mean and spread of its training members in featurized
space. The deviation of a field is the largest ``|x - mean| / spread`` over the field's columns
(one column for a numeric field, the one-hot block for a categorical one), in units of the
centroid's own spread ("sigmas"). Spreads are floored at :data:`MIN_SPREAD` so that a column that
never varies inside a class (one service, always) gives a large but finite deviation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

MIN_SPREAD = 0.1


class FieldDeviation(NamedTuple):
    """One field of an explanation (a named tuple: thousands are built per second in the worker)."""

    field: str
    value: Any
    deviation: float

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "deviation": round(self.deviation, 3)}


class Explainer:
    """Per-centroid feature statistics and the top-deviating-fields explanation.

    Args:
        feature_mean: ``(K, F)`` mean of each centroid's training members (featurized).
        feature_spread: ``(K, F)`` standard deviation of the same (floored at ``MIN_SPREAD``).
        column_fields: ``(F,)`` the event field of each featurized column.
    """

    def __init__(
        self, feature_mean: NDArray[np.float32], feature_spread: NDArray[np.float32], column_fields: list[str]
    ) -> None:
        if feature_mean.ndim != 2 or feature_mean.shape != feature_spread.shape:
            shapes = f"{feature_mean.shape} / {feature_spread.shape}"
            raise ValueError(f"explainer statistics must be two (K, F) matrices, got {shapes}")
        if feature_mean.shape[1] != len(column_fields):
            raise ValueError("explainer statistics do not match the featurizer width")
        if not (np.all(np.isfinite(feature_mean)) and np.all(np.isfinite(feature_spread))):
            raise ValueError("explainer statistics must be finite")
        self.feature_mean = feature_mean.astype(np.float32)
        self.feature_spread = np.maximum(feature_spread, MIN_SPREAD).astype(np.float32)
        fields = list(dict.fromkeys(column_fields))
        order = np.argsort([fields.index(f) for f in column_fields], kind="stable")
        sorted_fields = [column_fields[i] for i in order]
        self._order = order
        self._starts = np.array([sorted_fields.index(f) for f in fields], dtype=np.intp)
        self._fields = fields

    def explain(
        self,
        features: NDArray[np.float32],
        centroid: NDArray[np.intp],
        records: Sequence[Mapping[str, Any]],
        top: int = 3,
    ) -> list[list[FieldDeviation]]:
        """Top ``top`` deviating fields for each row (rows = flagged events, usually few)."""
        if len(records) == 0:
            return []
        dev = np.abs(features - self.feature_mean[centroid]) / self.feature_spread[centroid]
        per_field = np.maximum.reduceat(dev[:, self._order], self._starts, axis=1)
        ranked = np.argsort(-per_field, axis=1)[:, :top]
        top_deviation = np.take_along_axis(per_field, ranked, axis=1).tolist()
        fields = self._fields
        return [
            [FieldDeviation(fields[j], record.get(fields[j]), d) for j, d in zip(columns, deviations, strict=True)]
            for columns, deviations, record in zip(ranked.tolist(), top_deviation, records, strict=True)
        ]


#: Longest value shown in an explanation's text (the fields list keeps the whole value).
MAX_SHOWN = 80


def describe(deviations: Sequence[FieldDeviation], class_name: str) -> str:
    """One-line text, e.g. ``src_bytes=54540 (12.3σ), service='ftp' (8.0σ) vs class 'web'``.

    Values are shown as Python literals cut to :data:`MAX_SHOWN` characters: a long text value would
    otherwise appear twice in an anomaly record, the second time escaped (up to six times longer).
    """
    parts = [f"{d.field}={_shown(d.value)} ({d.deviation:.1f}σ)" for d in deviations]
    return f"{', '.join(parts)} vs class {class_name!r}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."
