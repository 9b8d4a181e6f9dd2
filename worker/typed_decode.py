"""Raw JSON event bytes straight to feature columns, typed by the model's spec (the fast path).

One ``msgspec`` decode per value into a struct generated from the :class:`FeatureSpec` replaces
``orjson.loads`` to a dict followed by per-value type checks. The struct names every field an
event may carry — the features, the id, the timestamp and the label field — with scalar types,
and refuses any other member, so msgspec reads every byte of an accepted value (nothing is
skipped unvalidated). It accepts a subset of what the exact path (``orjson`` to a dict +
:meth:`Featurizer.transform_valid`) accepts, and reads it the same way: JSON numbers for numeric
fields (not booleans, not numeric strings), strings for categorical fields, null or absent for
optional fields. Anything else — an extra field, a numeric string, an integer category code, a
missing field, invalid JSON — is left out of the columns and listed in ``failed``, for the
caller's exact path, which scores what is valid and says why the rest is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, islice
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
#: Values tried before the rest of a batch (see :meth:`TypedDecoder.decode_batch`).
PROBE = 8
#: Type of the id, timestamp and label fields: any JSON scalar. No ``int``: msgspec would return
#: integers of any size, where orjson refuses those beyond float range; as ``float`` it refuses them too.
_SCALAR: Any = str | float | bool | None


class TypedDecoder:
    """Decoder of JSON event bytes for one spec (build once per model; thread-safe)."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        optional = set(spec.optional)
        names = [*spec.numeric, *spec.categorical]
        fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for i, name in enumerate(names):
            kind: Any = float if i < len(spec.numeric) else str
            fields.append((f"f{i}", kind | None, None) if name in optional else (f"f{i}", kind))
        rename = {f"f{i}": name for i, name in enumerate(names)}
        roles = dict.fromkeys(f for f in (spec.timestamp_field, spec.id_field, spec.label_field) if f is not None)
        for j, name in enumerate(roles):
            fields.append((f"r{j}", _SCALAR, None))
            rename[f"r{j}"] = name
        self._decode: Callable[[bytes], Any] | None
        try:
            struct = msgspec.defstruct("Event", fields, rename=rename, kw_only=True, forbid_unknown_fields=True)
            self._decode = msgspec.json.Decoder(struct).decode
        except (TypeError, ValueError, UnicodeError):  # a field name msgspec cannot match (quotes, controls)
            self._decode = None  # every value takes the exact path
        n_num = len(spec.numeric)
        self._n_numeric = n_num
        self._numeric = attrgetter(*[f"f{i}" for i in range(n_num)]) if n_num else None
        self._numeric_optional = bool(optional & set(spec.numeric))
        self._categorical = [attrgetter(f"f{n_num + j}") for j in range(len(spec.categorical))]
        self._timestamp = attrgetter("r0") if spec.timestamp_field is not None else None

    @property
    def enabled(self) -> bool:
        """False when the spec's field names cannot be matched by msgspec (everything takes the exact path)."""
        return self._decode is not None

    def decode_batch(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Feature columns of the values that decode; the positions of the others in ``failed``.

        The first :data:`PROBE` values are tried first: when most of them are refused (a producer
        that adds fields of its own, or sends numbers as strings), the whole batch is returned
        as failed rather than paying for a refusal per value.
        """
        if self._decode is None:
            return self._nothing(len(values))
        events: list[Any] = []
        failed: list[int] = []
        if len(values) > 2 * PROBE:
            self._decode_range(values, 0, PROBE, events, failed)
            if sum(1 for i in failed if values[i]) > PROBE // 2:  # empty values are rejected anyway
                return self._nothing(len(values))
        self._decode_range(values, len(events) + len(failed), len(values), events, failed)
        numeric = self._numeric_block(events)
        categorical = [tuple(map(get, events)) for get in self._categorical]
        timestamps = list(map(self._timestamp, events)) if self._timestamp is not None else [None] * len(events)
        return DecodedBatch(numeric, categorical, timestamps, failed)

    def _decode_range(
        self, values: Sequence[bytes | None], start: int, stop: int, events: list[Any], failed: list[int]
    ) -> None:
        """Decode ``values[start:stop]`` into ``events``: one map, resumed after each refused value."""
        decode = self._decode
        assert decode is not None
        rest = islice(values, start, stop)  # one iterator: a refused value is already consumed when map raises
        position = start
        while True:
            done = len(events)
            try:
                events.extend(map(decode, rest))  # type: ignore[arg-type]
                return
            except _REFUSED:  # extend keeps what it decoded before the refused value
                position += len(events) - done
                failed.append(position)
                position += 1

    def _nothing(self, n: int) -> DecodedBatch:
        empty = np.empty((0, self._n_numeric), dtype=np.float64)
        return DecodedBatch(empty, [() for _ in self._categorical], [], list(range(n)))

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
