"""The input-space term of the score: nearest reference point, the combined score, its checks."""

from __future__ import annotations

import numpy as np
import pytest

from detector import input_neighbours
from detector.errors import ArtifactError
from detector.input_neighbours import InputNeighbours
from detector.scorer import CentroidScorer


def test_distance_is_the_nearest_reference_point_in_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(17, 5)).astype(np.float32)
    rows = rng.normal(size=(23, 5)).astype(np.float32)
    monkeypatch.setattr(input_neighbours, "CHUNK", 4)  # several chunks, the last one short
    brute = np.sqrt(((rows[:, None, :].astype(np.float64) - points[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(InputNeighbours(points, 1.0, 1.0).distances(rows), brute, rtol=1e-5, atol=1e-5)
    assert InputNeighbours(points, 1.0, 1.0).distances(points[:3]) == pytest.approx([0.0, 0.0, 0.0], abs=1e-3)


def test_combined_score_divides_each_half_by_its_scale() -> None:
    view = InputNeighbours(np.zeros((1, 2), np.float32), embedding_scale=2.0, input_scale=0.5)
    assert view.combine(np.array([2.0, 4.0]), np.array([0.5, 0.0])).tolist() == [2.0, 2.0]


def test_an_embedding_weight_of_zero_leaves_the_input_term_alone() -> None:
    view = InputNeighbours(np.zeros((1, 2), np.float32), embedding_scale=2.0, input_scale=0.5, embedding_weight=0.0)
    assert view.combine(np.array([2.0, 400.0]), np.array([0.5, 0.0])).tolist() == [1.0, 0.0]
    assert view.with_embedding_weight(1.0).combine(np.array([2.0]), np.array([0.5])).tolist() == [2.0]


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_negative_or_non_finite_embedding_weight_is_refused(weight: float) -> None:
    with pytest.raises(ArtifactError, match="embedding weight"):
        InputNeighbours(np.zeros((1, 2), np.float32), 1.0, 1.0, weight)


@pytest.mark.parametrize(
    ("points", "scales"),
    [(np.zeros((0, 3), np.float32), (1.0, 1.0)), (np.zeros(3, np.float32), (1.0, 1.0)),
     (np.zeros((2, 3), np.float32), (0.0, 1.0)), (np.zeros((2, 3), np.float32), (1.0, float("nan")))],
    ids=["no-points", "not-a-matrix", "zero-scale", "nan-scale"],
)  # fmt: skip
def test_bad_parts_raise_artifact_error(points: np.ndarray, scales: tuple[float, float]) -> None:
    with pytest.raises(ArtifactError):
        InputNeighbours(points, *scales)


def test_rows_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        InputNeighbours(np.zeros((2, 3), np.float32), 1.0, 1.0).distances(np.zeros((4, 2), np.float32))


def _scorer(threshold: float) -> CentroidScorer:
    """One centroid at the origin of a 2-d embedding; reference points at the input origin."""
    view = InputNeighbours(np.zeros((1, 3), np.float32), embedding_scale=1.0, input_scale=1.0)
    cal = np.array([1.0, 1.5, 2.0, 2.5])
    return CentroidScorer(
        np.zeros((1, 2), np.float32), np.zeros(1, np.intp), ["normal"], np.ones(1, np.float32), cal, threshold, view
    )


def test_an_event_typical_in_embedding_space_but_far_in_input_space_is_flagged() -> None:
    scorer = _scorer(threshold=2.5)
    embedded = np.array([[0.5, 0.0], [0.5, 0.0]], np.float32)  # both half a radius from the centroid
    features = np.array([[0.5, 0.0, 0.0], [10.0, 0.0, 0.0]], np.float32)  # the second far from every normal
    result = scorer.score(embedded, features)
    assert result.score.tolist() == pytest.approx([1.0, 10.5])
    assert result.flagged.tolist() == [False, True]
    np.testing.assert_array_equal(result.p_value, scorer.p_values(result.score))  # p-values of the combined score
    assert result.distance.tolist() == pytest.approx([0.5, 0.5])  # the embedding distance, as before


def test_a_scorer_with_an_input_term_needs_the_featurized_rows() -> None:
    with pytest.raises(ValueError, match="featurized rows"):
        _scorer(threshold=2.0).score(np.zeros((1, 2), np.float32))


def test_a_row_equal_to_a_reference_point_is_at_distance_zero_whatever_its_batch() -> None:
    """Found in review: the float32 expansion ||x||^2 + ||p||^2 - 2x.p left exact duplicates at up
    to 1e-3 (z-scores), different in each batch and model; on discrete data, where most normals
    duplicate a training row, the threshold then fell among that noise (12% flagged at a 5% target)."""
    rng = np.random.default_rng(0)
    points = np.c_[(rng.integers(0, 3, size=(300, 3)) - 1.0) / 0.82, rng.integers(0, 2, size=(300, 8)) * 7.5]
    points = points.astype(np.float32)
    nearest = input_neighbours.NearestPoints(points)
    assert nearest.distances(points).max() == 0.0
    one_by_one = np.concatenate([nearest.distances(points[i : i + 1]) for i in range(0, 300, 7)])
    assert one_by_one.max() == 0.0
    others = rng.normal(size=(50, 11)).astype(np.float32) * 3
    exact = np.sqrt(((others[:, None, :].astype(np.float64) - points[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(nearest.distances(others), exact, rtol=1e-6)
