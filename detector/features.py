"""Featurizer: turns a batch of event dicts (or already-validated columns) into a float32 matrix.

Columns, in order: one standardised value per numeric field (after ``sign(x)*log1p(|x|)`` for
``log_scale`` fields), one 0/1 missing indicator per optional numeric field, then one one-hot
block per categorical field (its training vocabulary, then an ``<unknown>`` bucket, then a
``<missing>`` bucket for optional fields). Unknown categories are scored, never rejected.

The fitted state is plain JSON (:meth:`Featurizer.to_state` / :meth:`Featurizer.from_state`).
The transform is vectorised per column; a per-value slow path runs only for a column whose fast
path fails, and finds exactly which records are invalid.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

from detector.errors import InvalidEventError, NotFittedError
from detector.schema import FeatureSpec
from detector.values import MISSING, NUMBER_TYPES, canonical_category, finite_number_block, parse_numeric

UNKNOWN = "<unknown>"
MISSING_CATEGORY = "<missing>"
#: Standardised values are clipped to this magnitude so one absurd value cannot overflow the
#: network; anything this far out is anomalous anyway.
CLIP = 1e4
DEFAULT_MAX_CATEGORIES = 256

Records = Sequence[Mapping[str, Any]]


def _is_none(value: object) -> bool:
    return value is None


class Featurizer:
    """Fitted scaling + vocabularies for one :class:`FeatureSpec`.

    Args:
        spec: the feature spec.
        max_categories: vocabulary size cap per categorical field; rarer values share the
            unknown bucket.
    """

    def __init__(self, spec: FeatureSpec, max_categories: int = DEFAULT_MAX_CATEGORIES) -> None:
        self.spec = spec
        self.max_categories = max_categories
        self.center_: NDArray[np.float64] | None = None
        self.scale_: NDArray[np.float64] | None = None
        self.median_: NDArray[np.float64] | None = None
        self.vocab_: dict[str, list[str]] | None = None
        self._log_mask = np.array([f in spec.log_scale for f in spec.numeric], dtype=bool)
        self._optional = frozenset(spec.optional)
        self._index: dict[str, dict[str, int]] = {}
        self._numeric_getter = operator.itemgetter(*spec.numeric) if spec.numeric else None

    # ----------------------------------------------------------------- fitting
    def fit(self, records: Records) -> Featurizer:
        """Fit scaling statistics and vocabularies on training records.

        Raises:
            InvalidEventError: a training record breaks the spec (names the field and row).
        """
        if not records:
            raise InvalidEventError("cannot fit a featurizer on zero records", reason="empty")
        raw = self._numeric_fast(records)  # every value a finite number: no per-value parsing
        if raw is None:
            raw = np.empty((len(records), len(self.spec.numeric)), dtype=np.float64)
            for j, field in enumerate(self.spec.numeric):
                raw[:, j] = self._strict_column(records, field)
        raw = self._log(raw)
        # Each column's statistics are taken on it divided by its largest magnitude and scaled
        # back: values near the float range (1e200 and up) would overflow the sums (a median of
        # two, the sums of squares) and the column would read inf, or 0 for every value.
        peak = np.fmax.reduce(np.abs(raw), axis=0, initial=0.0) if raw.size else np.zeros(raw.shape[1])
        peak = np.where(peak > 0, peak, 1.0)
        unit = raw / peak
        median = np.nanmedian(unit, axis=0) if raw.size else np.zeros(0)
        median = np.where(np.isnan(median), 0.0, median)  # a column with no value at all
        self.median_ = median * peak
        unit = np.where(np.isnan(unit), median, unit)
        self.center_ = unit.mean(axis=0) * peak
        std = unit.std(axis=0) * peak
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        self.vocab_ = {f: self._fit_vocab(records, f) for f in self.spec.categorical}
        self._build_index()
        return self

    def _strict_column(self, records: Records, field: str) -> NDArray[np.float64]:
        out = np.empty(len(records), dtype=np.float64)
        optional = field in self._optional
        for i, record in enumerate(records):
            try:
                out[i] = parse_numeric(record.get(field, MISSING), field, optional)
            except InvalidEventError as exc:
                raise InvalidEventError(f"row {i}: {exc}", reason=exc.reason, field=field) from exc
        return out

    def _fit_vocab(self, records: Records, field: str) -> list[str]:
        optional = field in self._optional
        counts: Counter[str] = Counter()
        for i, record in enumerate(records):
            try:
                value = canonical_category(record.get(field, MISSING), field, optional)
            except InvalidEventError as exc:
                raise InvalidEventError(f"row {i}: {exc}", reason=exc.reason, field=field) from exc
            if value is not None:
                counts[value] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [value for value, _ in ranked[: self.max_categories]]

    def _build_index(self) -> None:
        assert self.vocab_ is not None
        self._index = {f: {v: i for i, v in enumerate(vocab)} for f, vocab in self.vocab_.items()}

    # ----------------------------------------------------------------- layout
    @property
    def n_features(self) -> int:
        """Width of the output matrix."""
        return len(self.column_fields)

    @property
    def column_fields(self) -> list[str]:
        """For each output column, the event field it comes from."""
        vocab = self._fitted_vocab()
        cols = list(self.spec.numeric)
        cols += [f for f in self.spec.numeric if f in self._optional]
        for f in self.spec.categorical:
            cols += [f] * self._block_width(f, vocab)
        return cols

    @property
    def column_names(self) -> list[str]:
        """Human-readable name of each output column (``field``, ``field:missing``, ``field=value``)."""
        vocab = self._fitted_vocab()
        cols = list(self.spec.numeric)
        cols += [f"{f}:missing" for f in self.spec.numeric if f in self._optional]
        for f in self.spec.categorical:
            values = [*vocab[f], UNKNOWN] + ([MISSING_CATEGORY] if f in self._optional else [])
            cols += [f"{f}={v}" for v in values]
        return cols

    def _block_width(self, field: str, vocab: Mapping[str, list[str]]) -> int:
        return len(vocab[field]) + 1 + (1 if field in self._optional else 0)

    def _fitted_vocab(self) -> dict[str, list[str]]:
        if self.vocab_ is None:
            raise NotFittedError("the featurizer is not fitted")
        return self.vocab_

    # -------------------------------------------------------------- transform
    def transform(self, records: Records) -> NDArray[np.float32]:
        """Featurize records; raise on the first invalid one.

        Raises:
            InvalidEventError: names the record index and the field.
        """
        matrix, errors = self.transform_valid(records)
        if errors:
            index = min(errors)
            err = errors[index]
            raise InvalidEventError(f"record {index}: {err}", reason=err.reason, field=err.field)
        return matrix

    def transform_valid(self, records: Records) -> tuple[NDArray[np.float32], dict[int, InvalidEventError]]:
        """Featurize a batch, setting invalid records aside.

        Returns:
            ``(matrix, errors)``: ``matrix`` has one row per record (rows of invalid records are
            zeros and must be ignored); ``errors`` maps a record index to why it is invalid.
        """
        if self.center_ is None or self.scale_ is None or self.median_ is None:
            raise NotFittedError("the featurizer is not fitted")
        n = len(records)
        errors: dict[int, InvalidEventError] = {}
        raw = self._numeric_fast(records)
        if raw is None:
            raw = np.empty((n, len(self.spec.numeric)), dtype=np.float64)
            for j, field in enumerate(self.spec.numeric):
                raw[:, j] = self._numeric_column(records, field, errors)
        categories = [self._category_column(records, field, errors) for field in self.spec.categorical]
        return self._assemble(raw, categories), errors

    def transform_columns(
        self, numeric: NDArray[np.float64], categorical: Sequence[Sequence[str | None]]
    ) -> NDArray[np.float32]:
        """Featurize already-validated columns (for decoders that read events straight to columns).

        Args:
            numeric: ``(n, n_numeric)`` finite values in spec order; NaN only where an optional
                field is absent.
            categorical: one column per categorical field: category strings, ``None`` where an
                optional field is absent.
        """
        categories = [
            self._category_index(field, values)
            for field, values in zip(self.spec.categorical, categorical, strict=True)
        ]
        return self._assemble(numeric, categories)

    def _assemble(self, raw: NDArray[np.float64], categories: list[NDArray[np.intp]]) -> NDArray[np.float32]:
        """The output matrix from raw numeric values (NaN = missing) and category indices."""
        if self.center_ is None or self.scale_ is None or self.median_ is None:
            raise NotFittedError("the featurizer is not fitted")
        n = len(raw)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        n_num = len(self.spec.numeric)
        raw = self._log(raw)
        missing = np.isnan(raw)
        with np.errstate(over="ignore"):  # a value beyond float range after scaling is clipped below
            z = (np.where(missing, self.median_, raw) - self.center_) / self.scale_
        out[:, :n_num] = np.clip(z, -CLIP, CLIP)
        col = n_num
        for j, field in enumerate(self.spec.numeric):
            if field in self._optional:
                out[:, col] = missing[:, j]
                col += 1
        rows = np.arange(n)
        for field, idx in zip(self.spec.categorical, categories, strict=True):
            out[rows, col + idx] = 1.0
            col += self._block_width(field, self._fitted_vocab())
        return out

    def _numeric_fast(self, records: Records) -> NDArray[np.float64] | None:
        """Whole numeric block in one pass when every value is a finite int/float; else ``None``.

        Row-wise ``itemgetter`` + one ``fromiter`` is several times faster than a Python loop per
        column; any missing field, other type or non-finite value falls back to the exact path.
        """
        n_num = len(self.spec.numeric)
        if n_num == 0 or not records:
            return np.empty((len(records), n_num), dtype=np.float64)
        try:
            rows = list(map(self._numeric_getter, records))  # type: ignore[arg-type]
        except (KeyError, TypeError):
            return None
        if n_num == 1:
            rows = [(v,) for v in rows]
        if not set(map(type, chain.from_iterable(rows))) <= NUMBER_TYPES:
            return None
        try:
            flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * n_num)
        except OverflowError:
            return None
        return flat.reshape(len(rows), n_num) if np.isfinite(flat).all() else None

    def _numeric_column(
        self, records: Records, field: str, errors: dict[int, InvalidEventError]
    ) -> NDArray[np.float64]:
        values = [r.get(field, MISSING) for r in records]
        block = finite_number_block(values)
        if block is not None:
            return block
        # Slow path: find exactly which values are bad.
        out = np.empty(len(values), dtype=np.float64)
        optional = field in self._optional
        for i, value in enumerate(values):
            try:
                out[i] = parse_numeric(value, field, optional)
            except InvalidEventError as exc:
                errors.setdefault(i, exc)
                out[i] = 0.0
        return out

    def _category_index(self, field: str, values: Sequence[str | None]) -> NDArray[np.intp]:
        """Vocabulary positions of valid values: unknown bucket for unseen, missing bucket for ``None``."""
        index = self._index[field]
        unknown = len(index)
        # None is never a vocabulary key: the lookup gives the unknown bucket, shifted to <missing> below.
        idx = np.fromiter(map(index.get, values, repeat(unknown, len(values))), dtype=np.intp, count=len(values))  # type: ignore[arg-type]
        if field in self._optional:
            idx[np.fromiter(map(_is_none, values), dtype=bool, count=len(values))] = unknown + 1
        return idx

    def _category_column(self, records: Records, field: str, errors: dict[int, InvalidEventError]) -> NDArray[np.intp]:
        index = self._index[field]
        unknown = len(index)
        values = [r.get(field, MISSING) for r in records]
        if set(map(type, values)) <= {str}:
            return self._category_index(field, values)
        optional = field in self._optional
        out = np.empty(len(values), dtype=np.intp)
        for i, value in enumerate(values):
            try:
                canon = canonical_category(value, field, optional)
            except InvalidEventError as exc:
                errors.setdefault(i, exc)
                canon = ""
            out[i] = unknown + 1 if canon is None else index.get(canon, unknown)
        return out

    def _log(self, raw: NDArray[np.float64]) -> NDArray[np.float64]:
        if self._log_mask.any():
            raw = raw.copy()
            sub = raw[:, self._log_mask]
            raw[:, self._log_mask] = np.sign(sub) * np.log1p(np.abs(sub))
        return raw

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """Fitted state as plain JSON-serialisable data."""
        if self.center_ is None or self.scale_ is None or self.median_ is None or self.vocab_ is None:
            raise NotFittedError("the featurizer is not fitted")
        return {
            "max_categories": self.max_categories,
            "center": self.center_.tolist(),
            "scale": self.scale_.tolist(),
            "median": self.median_.tolist(),
            "vocab": self.vocab_,
        }

    @classmethod
    def from_state(cls, spec: FeatureSpec, state: Mapping[str, Any]) -> Featurizer:
        """Rebuild a fitted featurizer from :meth:`to_state` output.

        Raises:
            ValueError: the state does not match the spec.
        """
        feat = cls(spec, int(state["max_categories"]))
        n = len(spec.numeric)
        feat.center_ = np.asarray(state["center"], dtype=np.float64)
        feat.scale_ = np.asarray(state["scale"], dtype=np.float64)
        feat.median_ = np.asarray(state["median"], dtype=np.float64)
        if not (feat.center_.shape == feat.scale_.shape == feat.median_.shape == (n,)):
            raise ValueError(f"featurizer state has the wrong number of numeric columns (spec has {n})")
        vocab = {str(k): [str(v) for v in vals] for k, vals in dict(state["vocab"]).items()}
        if set(vocab) != set(spec.categorical):
            raise ValueError("featurizer state vocabularies do not match the spec's categorical fields")
        feat.vocab_ = vocab
        feat._build_index()
        return feat
