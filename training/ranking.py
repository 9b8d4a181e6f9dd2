"""Rank statistics of scores against labels: checked inputs and the area under the ROC curve.

Below the rest of ``training`` so that the fit (choosing the score's terms, :mod:`training.score_terms`)
and the evaluation (:mod:`training.evaluation.metrics`) share one AUROC.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray

from detector.errors import DataError

F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]


def _as_scores(scores: npt.ArrayLike) -> F64:
    try:
        array = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataError(f"scores must be numbers: {error}") from error
    if array.ndim != 1:
        raise DataError(f"scores must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError(f"scores must be finite; {int(np.sum(~np.isfinite(array)))} are NaN or infinite")
    return array


def _as_labels(is_anomaly: npt.ArrayLike) -> Bools:
    array = np.asarray(is_anomaly)
    if array.ndim != 1:
        raise DataError(f"is_anomaly must be 1-D, got shape {array.shape}")
    if array.dtype == np.bool_:
        return array
    if array.size and not np.all(np.isin(array, (0, 1))):
        raise DataError("is_anomaly must hold booleans or 0/1 values")
    return array.astype(np.bool_)


def validate_scores(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike) -> tuple[F64, Bools]:
    """Checked copies of ``scores`` (float64) and ``is_anomaly`` (bool).

    Raises:
        DataError: not 1-D, lengths differ, a score is non-finite or not a number, a label is not
            boolean/0/1, or there is not at least one normal and one anomaly.
    """
    score_array, labels = _as_scores(scores), _as_labels(is_anomaly)
    if score_array.shape != labels.shape:
        raise DataError(f"scores and is_anomaly differ in length: {score_array.size} != {labels.size}")
    n_anomalous = int(labels.sum())
    if n_anomalous in (0, labels.size):
        missing = "anomalies" if n_anomalous == 0 else "normals"
        raise DataError(f"both classes are needed, but there are no {missing} among {labels.size} rows")
    return score_array, labels


def _average_ranks(values: F64) -> F64:
    """1-based ranks of ``values`` in ascending order; tied values share their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each group of ties
    group_ranks = ends - (counts - 1) / 2.0
    return group_ranks[inverse].astype(np.float64)


def roc_auc(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U statistic, anomalies positive).

    Equals the probability that a random anomaly scores higher than a random normal, with ties
    counted as 1/2. 1.0 = perfect ranking, 0.5 = chance, 0.0 = inverted.

    Raises:
        DataError: lengths differ, scores are non-finite, or a class is absent.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    ranks = _average_ranks(score_array)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    u_statistic = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2.0
    return u_statistic / (n_pos * n_neg)
