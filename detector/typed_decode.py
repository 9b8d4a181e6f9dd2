"""Raw JSON event bytes straight to feature columns, typed by the spec (the streaming fast path).

One ``msgspec`` decode per value into a struct generated from the :class:`FeatureSpec` replaces
``orjson.loads`` to a dict followed by per-value type checks. It accepts a strict subset of what
the exact path (a JSON object + :meth:`Featurizer.transform_valid`) accepts, and reads it the
same way: JSON numbers for numeric fields (not booleans, not numeric strings), strings for
categorical fields, null or absent for optional fields; unknown fields are ignored. Anything
else — a numeric string, an integer category code, a missing field, invalid JSON, a non-object —
is left out of the columns and listed in ``failed``, for the caller's exact path, which scores
what is valid and says why the rest is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
from numpy.typing import NDArray

from detector.schema import FeatureSpec


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """Feature columns of a batch of valid events.

    Attributes:
        numeric: ``(n, n_numeric)`` float64, finite; NaN only where an optional field is absent or null.
        categorical: one column per categorical field: the string, or ``None`` where an optional
            field is absent or null.
        timestamps: the timestamp field's JSON value per event (``None`` when absent or when the spec
            has no timestamp field).
        failed: positions (ascending) of the input values that did not decode: they need the exact
            path. The columns hold the other values, in input order.
    """

    numeric: NDArray[np.float64]
    categorical: list[tuple[str | None, ...]]
    timestamps: list[Any]
    failed: list[int]


#: What a value the typed decoder refuses raises: bad JSON or types (DecodeError, including
#: ValidationError), nesting deeper than the interpreter's recursion limit, a non-bytes value.
_REFUSED = (msgspec.DecodeError, RecursionError, TypeError)


class TypedDecoder:
    """Decoder of JSON event bytes for one spec (build once per model; thread-safe)."""

    def __init__(self, spec: FeatureSpec) -> None:
        optional = set(spec.optional)
        names = [*spec.numeric, *spec.categorical]
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for i, name in enumerate(names):
            kind: Any = float if i < len(spec.numeric) else str
            fields.append((f"f{i}", kind | None, None) if name in optional else (f"f{i}", kind))
        rename = {f"f{i}": name for i, name in enumerate(names)}
        if spec.timestamp_field is not None:
            fields.append(("timestamp", Any, None))
            rename["timestamp"] = spec.timestamp_field
        struct = msgspec.defstruct("Event", fields, rename=rename, kw_only=True)
        self._decode = msgspec.json.Decoder(struct).decode
        n_num = len(spec.numeric)
        self._n_numeric = n_num
        self._numeric = attrgetter(*[f"f{i}" for i in range(n_num)]) if n_num else None
        self._numeric_optional = bool(optional & set(spec.numeric))
        self._categorical = [attrgetter(f"f{n_num + j}") for j in range(len(spec.categorical))]
        self._timestamp = attrgetter("timestamp") if spec.timestamp_field is not None else None

    def decode_batch(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Feature columns of the values that decode; the positions of the others in ``failed``."""
        failed: list[int] = []
        try:
            events = list(map(self._decode, values))  # type: ignore[arg-type]
        except _REFUSED:
            events = []
            for i, value in enumerate(values):
                try:
                    events.append(self._decode(value))  # type: ignore[arg-type]
                except _REFUSED:
                    failed.append(i)
        numeric = self._numeric_block(events)
        infinite = np.isinf(numeric).any(axis=1)
        if infinite.any():  # never seen: msgspec refuses numbers out of float range; kept as a guard
            kept = np.setdiff1d(np.arange(len(values)), failed)
            failed = sorted(failed + kept[infinite].tolist())
            events = [events[i] for i in np.flatnonzero(~infinite).tolist()]
            numeric = numeric[~infinite]
        categorical = [tuple(map(get, events)) for get in self._categorical]
        timestamps = list(map(self._timestamp, events)) if self._timestamp is not None else [None] * len(events)
        return DecodedBatch(numeric, categorical, timestamps, failed)

    def _numeric_block(self, events: list[Any]) -> NDArray[np.float64]:
        n, width = len(events), self._n_numeric
        if self._numeric is None:
            return np.empty((n, 0), dtype=np.float64)
        rows = list(map(self._numeric, events))
        if width == 1:
            rows = [(v,) for v in rows]
        if self._numeric_optional:  # None (absent or null) -> NaN, imputed by the featurizer
            return np.array(rows, dtype=np.float64).reshape(n, width)
        return np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * width).reshape(n, width)
