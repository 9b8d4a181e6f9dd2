"""Evaluation metrics: hand-computed values, brute-force references, invariants."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.errors import DataError
from training.evaluation.metrics import (
    EvaluationResult,
    average_precision,
    evaluate,
    recall_at_fpr,
    roc_auc,
    roc_curve,
)

TINY_SCORES = [0.1, 0.4, 0.35, 0.8]
TINY_LABELS = [0, 0, 1, 1]


def pairwise_auc(scores: list[float], labels: list[bool]) -> float:
    """Reference AUROC: share of (anomaly, normal) pairs ranked right, ties counting 1/2."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positives, negatives))
    return wins / (len(positives) * len(negatives))


def reference_ap(scores: list[float], labels: list[bool]) -> float:
    """Reference AP: loop over distinct thresholds, descending, flagging ``score >= t``."""
    total = sum(labels)
    ap, previous_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        flagged = [y for s, y in zip(scores, labels, strict=True) if s >= t]
        recall = sum(flagged) / total
        ap += (recall - previous_recall) * sum(flagged) / len(flagged)
        previous_recall = recall
    return ap


# Integer-valued scores make ties frequent and keep monotone transforms exact in float64.
labelled_scores = st.integers(min_value=2, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(-50, 50), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n).filter(lambda ys: 0 < sum(ys) < len(ys)),
    )
)


def test_tiny_hand_computed_example() -> None:
    # Pairs (anomaly, normal): (0.35, 0.1) right, (0.35, 0.4) wrong, (0.8, *) right -> 3/4.
    assert roc_auc(TINY_SCORES, TINY_LABELS) == pytest.approx(0.75)
    # Descending: 0.8 (P=1, R=1/2), 0.4 (normal), 0.35 (P=2/3, R=1) -> 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(TINY_SCORES, TINY_LABELS) == pytest.approx(5 / 6)


def test_perfect_and_inverted_rankings() -> None:
    scores, labels = [1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1]
    assert roc_auc(scores, labels) == 1.0
    assert average_precision(scores, labels) == 1.0
    inverted = [1, 1, 0, 0]
    assert roc_auc(scores, inverted) == 0.0
    # Descending: 4, 3 normals; 2 (P=1/3, R=1/2); 1 (P=2/4, R=1).
    assert average_precision(scores, inverted) == pytest.approx(0.5 / 3 + 0.5 * 0.5)


def test_ties_count_half_and_enter_together() -> None:
    assert roc_auc([1.0, 1.0, 2.0], [0, 1, 1]) == pytest.approx(0.75)
    # 2 (P=1, R=1/2), then both 1s together (P=2/3, R=1).
    assert average_precision([1.0, 1.0, 2.0], [0, 1, 1]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert roc_auc([3.0] * 5, [0, 1, 0, 1, 0]) == 0.5
    assert average_precision([3.0] * 5, [0, 1, 0, 1, 0]) == pytest.approx(0.4)


def test_ap_does_not_depend_on_row_order_among_ties() -> None:
    scores = [1.0, 2.0, 2.0, 2.0, 0.5]
    assert average_precision(scores, [0, 1, 0, 0, 1]) == average_precision(scores, [0, 0, 0, 1, 1])


@given(labelled_scores)
@settings(max_examples=200, deadline=None)
def test_matches_brute_force_references(data: tuple[list[int], list[bool]]) -> None:
    scores, labels = [float(s) for s in data[0]], data[1]
    assert roc_auc(scores, labels) == pytest.approx(pairwise_auc(scores, labels), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(reference_ap(scores, labels), abs=1e-12)


@given(labelled_scores)
@settings(max_examples=200, deadline=None)
def test_invariant_under_strictly_increasing_transform(data: tuple[list[int], list[bool]]) -> None:
    scores, labels = np.asarray(data[0], dtype=np.float64), data[1]
    for transformed in (np.exp(scores / 10.0), scores**3, 7.0 * scores + 3.0):
        assert roc_auc(transformed, labels) == pytest.approx(roc_auc(scores, labels), abs=1e-12)
        assert average_precision(transformed, labels) == pytest.approx(average_precision(scores, labels), abs=1e-12)


@given(labelled_scores)
@settings(max_examples=200, deadline=None)
def test_negating_scores_mirrors_auroc(data: tuple[list[int], list[bool]]) -> None:
    scores, labels = np.asarray(data[0], dtype=np.float64), data[1]
    assert roc_auc(-scores, labels) == pytest.approx(1.0 - roc_auc(scores, labels), abs=1e-12)


@given(labelled_scores)
@settings(max_examples=200, deadline=None)
def test_roc_curve_thresholds_reproduce_points_and_area(data: tuple[list[int], list[bool]]) -> None:
    scores, labels = np.asarray(data[0], dtype=np.float64), np.asarray(data[1])
    fpr, tpr, thresholds = roc_curve(scores, labels)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thresholds) < 0)
    assert thresholds[0] == scores.max() and thresholds[-1] == -np.inf
    for f, t, threshold in zip(fpr, tpr, thresholds, strict=True):
        flagged = scores > threshold
        assert f == pytest.approx(flagged[~labels].mean()) and t == pytest.approx(flagged[labels].mean())
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids: ties are diagonal steps
    assert area == pytest.approx(roc_auc(scores, labels), abs=1e-12)


def test_recall_at_fpr_hand_computed() -> None:
    normals = np.arange(1.0, 101.0)  # 1 .. 100
    anomalies = np.array([50.5, 96.5, 99.5, 100.5])
    scores = np.concatenate([normals, anomalies])
    labels = np.r_[np.zeros(100, bool), np.ones(4, bool)]
    assert recall_at_fpr(scores, labels, 0.05) == (0.75, 95.0)  # normals 96..100 flagged: 5 %
    assert recall_at_fpr(scores, labels, 0.0) == (0.25, 100.0)
    assert recall_at_fpr(scores, labels, 0.29) == (0.75, 71.0)  # 0.29 * 100 is 28.999... in floats
    assert recall_at_fpr(scores, labels, 0.5) == (1.0, 50.0)


@given(labelled_scores, st.floats(min_value=0.0, max_value=0.99))
@settings(max_examples=200, deadline=None)
def test_recall_at_fpr_threshold_is_smallest_admissible(data: tuple[list[int], list[bool]], fpr: float) -> None:
    scores, labels = np.asarray(data[0], dtype=np.float64), np.asarray(data[1])
    recall, threshold = recall_at_fpr(scores, labels, fpr)
    normals = scores[~labels]
    assert np.mean(normals > threshold) <= fpr + 1e-12
    lower = normals[normals < threshold]  # any lower candidate threshold flags too many normals
    if lower.size:
        assert np.mean(normals > lower.max()) > fpr
    assert recall == pytest.approx(np.mean(scores[labels] > threshold))


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [0, 1, 1], "differ in length"),
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1, float("inf")], [0, 1], "finite"),
        ([0.1, 0.2], [0, 0], "no anomalies"),
        ([0.1, 0.2], [True, True], "no normals"),
        ([], [], "no anomalies"),
        ([0.1, 0.2], [0, 2], "0/1"),
        ([[0.1, 0.2]], [[0, 1]], "1-D"),
        (["a", "b"], [0, 1], "numbers"),
    ],
)
def test_invalid_input_raises_clear_value_error(scores: object, labels: object, message: str) -> None:
    for metric in (roc_auc, average_precision, roc_curve):
        with pytest.raises(DataError, match=message):
            metric(scores, labels)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        evaluate(scores, labels, threshold=0.5)  # type: ignore[arg-type]


def test_recall_at_fpr_rejects_fpr_outside_unit_interval() -> None:
    for fpr in (-0.1, 1.0, 1.5):
        with pytest.raises(DataError, match="fpr"):
            recall_at_fpr(TINY_SCORES, TINY_LABELS, fpr)


def test_evaluate_tiny_example_at_threshold() -> None:
    result = evaluate(TINY_SCORES, TINY_LABELS, threshold=0.3)
    assert (result.n, result.n_normal, result.n_anomalous) == (4, 2, 2)
    assert result.auroc == pytest.approx(0.75) and result.auprc == pytest.approx(5 / 6)
    # Flagged: 0.4 (normal), 0.35, 0.8 (anomalies).
    assert result.recall == 1.0
    assert result.precision == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(0.8)
    assert result.false_positive_rate == 0.5
    assert set(result.recall_at_fpr) == {"0.01", "0.05"} == set(result.threshold_at_fpr)
    assert result.recall_at_fpr["0.01"] == 0.5 and result.threshold_at_fpr["0.01"] == 0.4
    assert result.per_group == []


def test_flag_rule_is_strictly_greater() -> None:
    result = evaluate([1.0, 2.0, 2.0], [0, 1, 0], threshold=2.0)
    assert result.recall == 0.0 and result.false_positive_rate == 0.0
    assert result.precision == 0.0 and result.f1 == 0.0  # nothing flagged: defined as 0, not NaN


def test_per_group_breakdown() -> None:
    scores = [0.1, 0.2, 0.9, 0.8, 0.3, 0.7, 0.95, 0.6]
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    groups = ["normal", "normal", "normal", "neptune", "neptune", "smurf", "smurf", "satan"]
    result = evaluate(scores, labels, threshold=0.5, groups=groups)
    by_name = {entry.group: entry for entry in result.per_group}
    assert [entry.group for entry in result.per_group] == ["normal", "neptune", "smurf", "satan"]  # n desc, then name
    assert by_name["normal"].n == 3 and not by_name["normal"].is_anomaly
    assert by_name["normal"].flagged_rate == pytest.approx(1 / 3)  # the normal FPR
    assert by_name["neptune"].flagged_rate == 0.5 and by_name["neptune"].is_anomaly
    assert by_name["smurf"].flagged_rate == 1.0
    assert by_name["smurf"].mean_score == pytest.approx(0.825)


def test_group_that_is_only_partly_anomalous_is_not_an_anomaly_group() -> None:
    result = evaluate([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1], threshold=0.5, groups=["a", "a", "b", "c"])
    assert {entry.group: entry.is_anomaly for entry in result.per_group} == {"a": False, "b": False, "c": True}


def test_groups_of_other_length_and_bad_threshold_rejected() -> None:
    with pytest.raises(DataError, match="groups"):
        evaluate(TINY_SCORES, TINY_LABELS, threshold=0.3, groups=["a"])
    with pytest.raises(DataError, match="threshold"):
        evaluate(TINY_SCORES, TINY_LABELS, threshold=math.nan)


def test_as_dict_is_plain_rounded_json() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=200)
    labels = rng.random(200) < 0.3
    groups = np.where(labels, "attack", "normal").tolist()
    result = evaluate(scores, labels, threshold=0.123456789, groups=groups, fixed_fprs=(0.01, 0.05, 0.1))
    as_dict = result.as_dict()
    text = json.dumps(as_dict, allow_nan=False)  # raises on NaN / inf / non-JSON types
    assert json.loads(text) == as_dict
    assert as_dict["threshold"] == 0.123457
    assert list(as_dict["recall_at_fpr"]) == ["0.01", "0.05", "0.1"]
    assert as_dict["per_group"][0] == {
        "group": "normal",
        "n": int((~labels).sum()),
        "is_anomaly": False,
        "flagged_rate": round(result.false_positive_rate, 6),
        "mean_score": round(float(scores[~labels].mean()), 6),
    }

    def leaves(value: object) -> list[object]:
        if isinstance(value, dict):
            return [leaf for item in value.values() for leaf in leaves(item)]
        if isinstance(value, list):
            return [leaf for item in value for leaf in leaves(item)]
        return [value]

    assert all(type(leaf) in {int, float, str, bool} for leaf in leaves(as_dict))
    assert all(round(leaf, 6) == leaf for leaf in leaves(as_dict) if isinstance(leaf, float))


def test_result_is_frozen() -> None:
    result = evaluate(TINY_SCORES, TINY_LABELS, threshold=0.3)
    assert isinstance(result, EvaluationResult)
    with pytest.raises(pydantic.ValidationError):
        result.auroc = 1.0  # type: ignore[misc, unused-ignore]  # (frozen only to the pydantic plugin)
