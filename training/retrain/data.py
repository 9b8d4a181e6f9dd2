"""Data of the retrain job: recent normal rows (files and/or Kafka), labelled anomalies, the holdout.

Rules:

* A file with ``truth_column`` is labelled: its normal rows are normal data, its other rows are
  labelled anomalies (for the recall check). Labelled rows are never filtered by a model.
* Unlabelled rows (files without a truth column, Kafka events) are normal candidates: rows that
  break the feature spec are an error in a file and are skipped from Kafka (the worker
  dead-letters them); rows the live model flags are not trained on (``keep_flagged`` turns that
  off), because what the live model calls anomalous is not normal training data, but they are
  calibrated on and held out like the others: the threshold and the gate's FPR are then those of
  the traffic as it is (cut off, the live model's flagged share was missing from both, and the
  candidate flagged up to twice its target on real traffic while the gate measured it on target).
* Order is time order: files in the order given, rows in file order, then Kafka events by record
  timestamp. The newest ``holdout_fraction`` of the normal rows is held out for the gate and
  never trained on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detector.errors import DataError
from detector.model import Detector
from detector.schema import FeatureSpec
from training.data import Record, check_values, load_records, require_columns, split_by_truth

logger = logging.getLogger(__name__)

SCORE_CHUNK = 4096
#: Fewer held-out normals than this cannot measure a false-positive rate usefully.
MIN_HOLDOUT_ROWS = 100
DEFAULT_HOLDOUT_FRACTION = 0.2
HOLDOUT_EXPECTED_FALSE_POSITIVES = 20


@dataclass
class RetrainData:
    """Normal rows in time order, normal rows for training only (analysts' false positives: the
    live model flags them, so the gate must not judge on them), labelled anomalies, and counts for
    the decision report."""

    normals: list[Record] = field(default_factory=list)
    #: Per normal row: the live model flags it (an unlabelled row), so no model trains on it.
    untrained: list[bool] = field(default_factory=list)
    train_only: list[Record] = field(default_factory=list)
    anomalies: list[Record] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def add_normals(self, rows: Sequence[Record], untrained: Sequence[bool] | None = None) -> None:
        """Append normal rows (newest last), with whether each is kept from training."""
        self.normals.extend(rows)
        self.untrained.extend([False] * len(rows) if untrained is None else untrained)


@dataclass(frozen=True)
class FileOptions:
    """How to read data files (``truth_column`` and ``normal_value`` go together)."""

    truth_column: str | None = None
    normal_value: str | None = None
    drop_columns: tuple[str, ...] = ()
    text_columns: tuple[str, ...] = ()


def read_file_rows(paths: Sequence[Path], options: FileOptions, data: RetrainData) -> list[Record]:
    """Add labelled normals/anomalies of ``paths`` to ``data``; return their unlabelled rows.

    Raises:
        DataError: unreadable file, missing column, or ``truth_column`` without ``normal_value``.
    """
    if (options.truth_column is None) != (options.normal_value is None):
        raise DataError("--truth-column and --normal-value go together")
    unlabelled: list[Record] = []
    for path in paths:
        rows = _without(load_records(path, options.text_columns), options.drop_columns)
        if options.truth_column is None or options.normal_value is None:
            unlabelled.extend(rows)
            data.count("file_rows_unlabelled", len(rows))
            continue
        require_columns(rows, [options.truth_column], path)
        rows, flags = split_by_truth(rows, options.truth_column, options.normal_value)
        normals = [r for r, a in zip(rows, flags, strict=True) if not a]
        data.add_normals(normals)
        data.anomalies.extend(r for r, a in zip(rows, flags, strict=True) if a)
        data.count("file_rows_labelled_normal", len(normals))
        data.count("file_rows_labelled_anomalous", len(rows) - len(normals))
    return unlabelled


def read_anomalies(path: Path, options: FileOptions) -> list[Record]:
    """Labelled anomalies: every row, or with ``truth_column`` in the file only its anomalous rows."""
    rows = _without(load_records(path, options.text_columns), options.drop_columns)
    if options.truth_column and options.normal_value is not None and any(options.truth_column in r for r in rows):
        # Rows without a truth value are anomalies here, as documented (found in review: refused).
        rows, flags = split_by_truth(rows, options.truth_column, options.normal_value, missing_is_anomalous=True)
        rows = [r for r, a in zip(rows, flags, strict=True) if a]
    if not rows:
        raise DataError(f"{path}: no anomalous rows")
    return rows


def valid_rows(rows: Sequence[Record], spec: FeatureSpec, *, strict: bool, what: str) -> list[Record]:
    """Rows that satisfy ``spec``; ``strict``: raise DataError at the first bad row, else skip it."""
    if strict:
        check_values(list(rows), [False] * len(rows), spec)
        return list(rows)
    kept: list[Record] = []
    for row in rows:
        try:
            check_values([row], [False], spec)
        except DataError:
            continue
        kept.append(row)
    if len(kept) < len(rows):
        logger.info("retrain_invalid_rows_skipped", extra={"source": what, "count": len(rows) - len(kept)})
    return kept


def flagged_by(live: Detector, rows: Sequence[Record]) -> list[bool]:
    """Per row (in order): whether the live model flags it."""
    flags: list[bool] = []
    for start in range(0, len(rows), SCORE_CHUNK):
        chunk = list(rows[start : start + SCORE_CHUNK])
        flags.extend(bool(f) for f in live.score_features(featurize(live, chunk, "normal candidates")).flagged)
    return flags


def featurize(detector: Detector, rows: Sequence[Record], what: str) -> np.ndarray:
    """``detector``'s feature matrix of ``rows``; DataError names the first row that does not fit."""
    if not rows:
        return np.zeros((0, detector.featurizer.n_features), dtype=np.float32)
    try:
        return detector.featurizer.transform(rows)
    except ValueError as exc:
        raise DataError(f"{what} do not fit model {detector.version or 'candidate'}: {exc}") from exc


def holdout_size(n_normals: int, fraction: float | None, target_fpr: float) -> int:
    """Held-out rows: ``fraction`` of the normals, or by default sized from the target FPR.

    The default is ``max(20% of the normals, ceil(20 / target_fpr))`` (about 20 expected false
    positives, twice what the gate needs to judge FPR), but never more than half the normals, so
    training keeps the larger part.
    """
    if fraction is not None:
        return round(n_normals * fraction)
    wanted = max(round(n_normals * DEFAULT_HOLDOUT_FRACTION), math.ceil(HOLDOUT_EXPECTED_FALSE_POSITIVES / target_fpr))
    return min(wanted, n_normals // 2)


def split_holdout(normals: Sequence[Record], n_holdout: int) -> tuple[list[Record], list[Record]]:
    """``(train, holdout)``: the newest ``n_holdout`` of ``normals`` are the holdout.

    Raises:
        DataError: the holdout would have fewer than :data:`MIN_HOLDOUT_ROWS` rows.
    """
    if n_holdout < MIN_HOLDOUT_ROWS:
        raise DataError(
            f"{len(normals)} normal rows give {n_holdout} held-out rows; "
            f"need at least {MIN_HOLDOUT_ROWS} to measure a false-positive rate"
        )
    cut = len(normals) - n_holdout
    return list(normals[:cut]), list(normals[cut:])


def _without(rows: list[Record], drop: Sequence[str]) -> list[Record]:
    if not drop:
        return rows
    gone = set(drop)
    return [{k: v for k, v in r.items() if k not in gone} for r in rows]
