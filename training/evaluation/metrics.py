"""Evaluation metrics for anomaly scores (numpy only).

Conventions used everywhere in this module:

* **Higher score = more anomalous**; anomalies are the positive class.
* **Flag rule:** an event is flagged when ``score > threshold`` (strictly greater), the same rule
  as :class:`detector.scorer.CentroidScorer`.
* ``is_anomaly`` is a 1-D array of booleans (or 0/1 integers), one per score.

Invalid input (lengths differ, non-finite scores, a class absent, labels other than 0/1) raises
:class:`detector.errors.DataError`, which is a ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict

from detector.errors import DataError
from training.ranking import roc_auc, validate_scores

F64 = NDArray[np.float64]
Bools = NDArray[np.bool_]

_DECIMALS = 6


def _descending_counts(score_array: F64, labels: Bools) -> tuple[F64, F64, F64]:
    """Distinct scores (descending) and the cumulative true/false positives at ``score >= each``."""
    order = np.argsort(-score_array, kind="mergesort")
    sorted_scores, sorted_labels = score_array[order], labels[order]
    # The last index of each run of equal scores: ties enter the flagged set together.
    last_of_group = np.flatnonzero(np.diff(sorted_scores) != 0.0)
    last_of_group = np.append(last_of_group, sorted_scores.size - 1)
    true_pos = np.cumsum(sorted_labels, dtype=np.float64)[last_of_group]
    false_pos = (last_of_group + 1) - true_pos
    return sorted_scores[last_of_group], true_pos, false_pos


def average_precision(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike) -> float:
    """Area under the precision-recall curve as step-wise average precision (anomalies positive).

    ``AP = sum_k (R_k - R_{k-1}) * P_k`` over the distinct score values taken as thresholds in
    descending order; equal scores are flagged together, so ties never depend on row order.
    A perfect ranking gives 1.0; a random one gives about the share of anomalies.

    Raises:
        DataError: lengths differ, scores are non-finite, or a class is absent.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    _, true_pos, false_pos = _descending_counts(score_array, labels)
    precision = true_pos / (true_pos + false_pos)
    recall = true_pos / true_pos[-1]
    recall_steps = np.diff(recall, prepend=0.0)
    return float(np.sum(recall_steps * precision))


def roc_curve(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike) -> tuple[F64, F64, F64]:
    """ROC curve points, one per distinct score plus the flag-everything end.

    Returns:
        ``(fpr, tpr, thresholds)``, equal lengths, ``fpr``/``tpr`` non-decreasing from (0, 0) to
        (1, 1). Flagging ``score > thresholds[i]`` gives exactly ``(fpr[i], tpr[i])``; thresholds
        decrease, start at the maximum score (nothing flagged) and end at ``-inf`` (all flagged).

    Raises:
        DataError: lengths differ, scores are non-finite, or a class is absent.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    distinct, true_pos, false_pos = _descending_counts(score_array, labels)
    # Flagging "> distinct[i+1]" flags exactly the groups 0..i, i.e. "score >= distinct[i]".
    thresholds = np.append(distinct, -np.inf)
    tpr = np.concatenate(([0.0], true_pos / true_pos[-1]))
    fpr = np.concatenate(([0.0], false_pos / false_pos[-1]))
    return fpr, tpr, thresholds


def _oracle_threshold(normal_scores: F64, fpr: float) -> float:
    """The smallest threshold that flags (``>``) at most ``fpr`` of ``normal_scores``."""
    if not 0.0 <= fpr < 1.0:
        raise DataError(f"fpr must be in [0, 1), got {fpr}")
    sorted_normals = np.sort(normal_scores)
    # The epsilon guards floor(0.29 * 100) == 28 style rounding; a count is an integer anyway.
    allowed = min(math.floor(fpr * sorted_normals.size + 1e-9), sorted_normals.size - 1)
    return float(sorted_normals[sorted_normals.size - 1 - allowed])


def recall_at_fpr(scores: npt.ArrayLike, is_anomaly: npt.ArrayLike, fpr: float) -> tuple[float, float]:
    """Recall at an oracle threshold set on this data's normals.

    The threshold is the smallest one for which at most ``fpr`` of the normals score above it
    (ties may make the realised share lower). It uses the evaluation labels, so it is an upper
    reference for a threshold calibrated on held-out normals, not a deployable one.

    Args:
        fpr: the allowed false-positive rate, in ``[0, 1)``.

    Returns:
        ``(recall, threshold)``: the share of anomalies with ``score > threshold``, and the threshold.

    Raises:
        DataError: invalid input (see module docstring) or ``fpr`` outside ``[0, 1)``.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    threshold = _oracle_threshold(score_array[~labels], fpr)
    return float(np.mean(score_array[labels] > threshold)), threshold


class GroupMetrics(BaseModel):
    """Flagging behaviour of one group (e.g. one attack name, or "normal").

    Attributes:
        group: the group name.
        n: rows in the group.
        is_anomaly: True when every row of the group is an anomaly.
        flagged_rate: share of the group's rows with ``score > threshold`` (the recall of an
            anomalous group, the false-positive rate of a normal one).
        mean_score: mean score of the group's rows.
    """

    model_config = ConfigDict(frozen=True)

    group: str
    n: int
    is_anomaly: bool
    flagged_rate: float
    mean_score: float


class EvaluationResult(BaseModel):
    """Metrics of one scored evaluation set at one threshold (flag rule ``score > threshold``).

    Attributes:
        recall: share of anomalies flagged. precision: share of flagged rows that are anomalies
            (0.0 when nothing is flagged). f1: their harmonic mean (0.0 when both are 0).
        false_positive_rate: share of normals flagged at ``threshold`` (the realised FPR).
        recall_at_fpr / threshold_at_fpr: oracle recall and threshold per fixed FPR, keyed by the
            FPR written with ``format(fpr, "g")`` (e.g. ``"0.01"``); see :func:`recall_at_fpr`.
        per_group: one entry per group, sorted by size descending (empty without groups).
    """

    model_config = ConfigDict(frozen=True)

    n: int
    n_normal: int
    n_anomalous: int
    auroc: float
    auprc: float
    threshold: float
    recall: float
    precision: float
    f1: float
    false_positive_rate: float
    recall_at_fpr: dict[str, float]
    threshold_at_fpr: dict[str, float]
    per_group: list[GroupMetrics]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict: ints, strings, bools and floats rounded to 6 decimals (no NaN)."""
        rounded = _rounded(self.model_dump())
        assert isinstance(rounded, dict)
        return rounded


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, _DECIMALS)
    if isinstance(value, Mapping):
        return {str(key): _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def _per_group(score_array: F64, labels: Bools, flagged: Bools, groups: Sequence[str]) -> list[GroupMetrics]:
    names = np.asarray([str(group) for group in groups], dtype=object)
    if names.shape != score_array.shape:
        raise DataError(f"groups and scores differ in length: {names.size} != {score_array.size}")
    unique, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
    flagged_counts = np.bincount(inverse, weights=flagged, minlength=unique.size)
    score_sums = np.bincount(inverse, weights=score_array, minlength=unique.size)
    anomaly_counts = np.bincount(inverse, weights=labels, minlength=unique.size)
    entries = [
        GroupMetrics(
            group=str(unique[i]),
            n=int(counts[i]),
            is_anomaly=bool(anomaly_counts[i] == counts[i]),
            flagged_rate=float(flagged_counts[i] / counts[i]),
            mean_score=float(score_sums[i] / counts[i]),
        )
        for i in range(unique.size)
    ]
    return sorted(entries, key=lambda entry: (-entry.n, entry.group))


def evaluate(
    scores: npt.ArrayLike,
    is_anomaly: npt.ArrayLike,
    threshold: float,
    groups: Sequence[str] | None = None,
    fixed_fprs: Sequence[float] = (0.01, 0.05),
) -> EvaluationResult:
    """All metrics of one scored evaluation set at a calibrated ``threshold``.

    Args:
        scores: one anomaly score per row (higher = more anomalous), finite.
        is_anomaly: one label per row (True / 1 = anomaly).
        threshold: the calibrated threshold; a row is flagged when ``score > threshold``.
        groups: optional group name per row (for NSL-KDD the attack name, "normal" for normals).
        fixed_fprs: FPRs in ``[0, 1)`` at which to report the oracle recall.

    Raises:
        DataError: invalid input, a non-finite threshold, or ``groups`` of another length.
    """
    score_array, labels = validate_scores(scores, is_anomaly)
    if not math.isfinite(threshold):
        raise DataError(f"threshold must be finite, got {threshold}")
    flagged = score_array > threshold
    n_anomalous = int(labels.sum())
    true_pos = int(np.sum(flagged & labels))
    recall = true_pos / n_anomalous
    precision = true_pos / int(flagged.sum()) if flagged.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    oracle = {format(fpr, "g"): recall_at_fpr(score_array, labels, fpr) for fpr in fixed_fprs}
    return EvaluationResult(
        n=int(labels.size),
        n_normal=int(labels.size - n_anomalous),
        n_anomalous=n_anomalous,
        auroc=roc_auc(score_array, labels),
        auprc=average_precision(score_array, labels),
        threshold=float(threshold),
        recall=recall,
        precision=precision,
        f1=f1,
        false_positive_rate=float(np.mean(flagged[~labels])),
        recall_at_fpr={key: value[0] for key, value in oracle.items()},
        threshold_at_fpr={key: value[1] for key, value in oracle.items()},
        per_group=_per_group(score_array, labels, flagged, groups) if groups is not None else [],
    )
