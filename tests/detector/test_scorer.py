"""Centroid scorer invariants: farther means higher, threshold = calibration quantile, p-values, margins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from detector.errors import ArtifactError
from detector.scorer import EMBEDDING_RESOLUTION, CentroidGeometry, CentroidScorer, threshold_at_fpr


def scorer(
    centroids: list[list[float]],
    classes: list[int],
    radius: list[float] | None = None,
    names: list[str] | None = None,
    calibration: list[float] | None = None,
    threshold: float = 1.0,
) -> CentroidScorer:
    return CentroidScorer(
        np.asarray(centroids, dtype=np.float32),
        np.asarray(classes, dtype=np.intp),
        names or [f"c{i}" for i in range(max(classes) + 1)],
        np.asarray(radius or [1.0] * len(centroids), dtype=np.float32),
        np.asarray(calibration if calibration is not None else [0.5, 1.0, 1.5], dtype=np.float64),
        threshold,
    )


def points(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


finite = st.floats(min_value=-3, max_value=3, allow_nan=False, width=32)


@given(
    centroids=hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.just(3)), elements=finite),
    batch=hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.just(3)), elements=finite),
    data=st.data(),
)
def test_score_is_the_smallest_radius_normalised_distance(
    centroids: np.ndarray, batch: np.ndarray, data: st.DataObject
) -> None:
    k = len(centroids)
    classes = data.draw(st.lists(st.integers(0, 2), min_size=k, max_size=k))
    radius = data.draw(st.lists(st.floats(0.1, 5.0), min_size=k, max_size=k))
    s = scorer(centroids.tolist(), classes, radius, names=["a", "b", "c"])
    result = s.score(batch)
    r = np.asarray(radius, dtype=np.float32).astype(np.float64)
    sq = ((batch[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(axis=2)
    expected_sq = (sq / r**2).min(axis=1)
    # The scorer expands |z - c|^2 = |z|^2 + |c|^2 - 2 z.c with a float32 dot product, so compare squared
    # scores with the rounding bound of that expansion (it matters only for points very near a centroid).
    scale = (np.square(batch).sum(1).max() + np.square(centroids).sum(1).max()) / r.min() ** 2
    # A distance under EMBEDDING_RESOLUTION reads as 0 (float32 noise; found by this test drawing
    # a point 1e-7 from a centroid).
    floor = (EMBEDDING_RESOLUTION / r.min()) ** 2
    np.testing.assert_allclose(result.score**2, expected_sq, rtol=1e-5, atol=1e-6 * scale + floor)
    assert np.all(result.margin >= 0)
    assert np.all((result.p_value > 0) & (result.p_value <= 1))


@given(
    centroids=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.just(2)), elements=finite),
    direction=st.tuples(finite, finite).filter(lambda v: abs(v[0]) + abs(v[1]) > 0.1),
    steps=st.lists(st.integers(0, 20), min_size=2, max_size=6, unique=True),
)
def test_farther_from_the_nearest_centroid_means_a_higher_score(
    centroids: np.ndarray, direction: tuple[float, float], steps: list[int]
) -> None:
    """Walk away from one centroid inside its own Voronoi cell: the score must grow with the distance."""
    s = scorer(centroids.tolist(), [0] * len(centroids))
    origin = centroids[0].astype(np.float64)
    unit = np.asarray(direction, dtype=np.float64) / np.linalg.norm(direction)
    ts = np.sort(np.asarray(steps)) * 0.1
    walk = (origin + ts[:, None] * unit).astype(np.float32)
    dist = np.linalg.norm(walk[:, None, :].astype(np.float64) - centroids[None].astype(np.float64), axis=2)
    inside = dist.argmin(axis=1) == 0  # stay where centroid 0 is the nearest
    scores = s.score(walk).score[inside]
    nearest = dist[inside, 0]
    order = np.argsort(nearest, kind="stable")
    assert np.all(np.diff(scores[order]) >= -1e-5)


def test_farther_means_higher_across_two_classes() -> None:
    s = scorer([[0.0, 0.0], [10.0, 0.0]], [0, 1])
    result = s.score(points([[0.5, 0.0], [9.0, 0.0], [3.0, 0.0], [5.0, 4.0]]))
    np.testing.assert_allclose(result.score, [0.5, 1.0, 3.0, np.hypot(5, 4)], rtol=1e-6)
    assert result.nearest_class.tolist() == [0, 1, 0, 0]


@given(
    calibration=hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(0, 100, allow_nan=False)),
    fpr=st.floats(0.001, 0.5),
)
def test_threshold_is_the_conformal_order_statistic_and_flags_exactly_the_p_values_at_most_fpr(
    calibration: np.ndarray, fpr: float
) -> None:
    threshold = threshold_at_fpr(calibration, fpr)
    n = len(calibration)
    k = math.ceil((n + 1) * (1 - fpr) - 1e-9)
    assert threshold == np.sort(calibration)[min(k, n) - 1]
    assert np.mean(calibration > threshold) <= fpr
    s = scorer([[0.0, 0.0]], [0], calibration=calibration, threshold=threshold)
    probes = np.concatenate([calibration, calibration + 1e-6, calibration - 1e-6])
    if k <= n:  # the target can be held: flagged exactly when the p-value is at most the target
        np.testing.assert_array_equal(probes > threshold, s.p_values(probes) <= fpr)


@pytest.mark.parametrize(("n", "fpr"), [(120, 0.01), (250, 0.01), (1010, 0.01), (210, 0.05), (99, 0.01)])
def test_new_normals_exceed_the_threshold_at_most_at_the_target_rate(n: int, fpr: float) -> None:
    """Truth known: uniform scores, so a new normal exceeds threshold t with probability 1 - t.
    Found in review: the empirical quantile flagged 1.64% at a 1% target with n = 120."""
    rng = np.random.default_rng(0)
    realised = [1.0 - threshold_at_fpr(rng.uniform(size=n), fpr) for _ in range(4000)]
    k = math.ceil((n + 1) * (1 - fpr) - 1e-9)
    assert np.mean(realised) == pytest.approx((n + 1 - k) / (n + 1), abs=4 * np.std(realised) / np.sqrt(4000))
    assert (n + 1 - k) / (n + 1) <= fpr


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1, 1.5])
def test_threshold_rejects_a_bad_rate(fpr: float) -> None:
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_at_fpr(np.array([1.0, 2.0]), fpr)


def test_threshold_needs_calibration_scores() -> None:
    with pytest.raises(ValueError, match="no calibration scores"):
        threshold_at_fpr(np.array([]), 0.1)


@given(
    calibration=st.lists(st.floats(0, 10), min_size=0, max_size=50),
    scores=st.lists(st.floats(-1, 12), min_size=1, max_size=30),
)
def test_p_values_lie_in_0_1_and_fall_as_the_score_rises(calibration: list[float], scores: list[float]) -> None:
    s = scorer([[0.0]], [0], calibration=calibration)
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    p = s.p_values(ordered)
    assert np.all((p > 0) & (p <= 1))
    assert np.all(np.diff(p) <= 0)


def test_p_value_counts_calibration_scores_at_least_as_high() -> None:
    s = scorer([[0.0]], [0], calibration=[1.0, 2.0, 2.0, 3.0])
    np.testing.assert_allclose(s.p_values(np.array([0.0, 2.0, 2.5, 9.0])), [5 / 5, 4 / 5, 2 / 5, 1 / 5])


def test_flagged_is_strictly_above_the_threshold() -> None:
    s = scorer([[0.0]], [0], threshold=2.0)
    assert s.score(points([[1.0], [2.0], [3.0]])).flagged.tolist() == [False, False, True]


def test_margin_is_infinite_with_one_class_and_the_runner_up_gap_otherwise() -> None:
    single = scorer([[0.0, 0.0], [4.0, 0.0]], [0, 0])
    assert np.all(np.isinf(single.score(points([[1.0, 0.0], [3.0, 3.0]])).margin))
    two = scorer([[0.0, 0.0], [4.0, 0.0]], [0, 1])
    result = two.score(points([[1.0, 0.0], [2.0, 0.0]]))
    np.testing.assert_allclose(result.margin, [2.0, 0.0], atol=1e-6)


def test_radius_normalisation_can_change_the_nearest_centroid() -> None:
    # Raw distances 1.0 (to A, radius 1) and 1.5 (to B, radius 2): normalised 1.0 vs 0.75, so B wins.
    s = scorer([[0.0], [2.5]], [0, 1], radius=[1.0, 2.0], names=["A", "B"])
    result = s.score(points([[1.0]]))
    assert result.nearest_class.tolist() == [1]
    assert result.score[0] == pytest.approx(0.75)
    assert result.distance[0] == pytest.approx(1.5)
    assert result.margin[0] == pytest.approx(0.25)


def test_several_centroids_per_class_take_the_nearest_one_of_each_class() -> None:
    # Class 0 is bimodal (at -5 and +5); class 1 sits at 0. Centroids given out of class order.
    s = scorer([[-5.0], [0.0], [5.0]], [0, 1, 0], names=["bimodal", "middle"])
    result = s.score(points([[4.0], [-4.5], [0.4], [2.0]]))
    assert [s.class_names[c] for c in result.nearest_class] == ["bimodal", "bimodal", "middle", "middle"]
    np.testing.assert_allclose(result.score, [1.0, 0.5, 0.4, 2.0], rtol=1e-6)
    np.testing.assert_allclose(result.margin, [3.0, 4.0, 4.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(result.distance, [1.0, 0.5, 0.4, 2.0], rtol=1e-6)
    assert result.nearest_centroid.tolist() == [2, 0, 1, 1]  # indices into the centroids as given
    np.testing.assert_allclose(s.centroids[result.nearest_centroid, 0], [5.0, -5.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("centroids", "classes", "radius", "message"),
    [
        (np.zeros((0, 2)), [], [], "non-empty"),
        (np.zeros((2, 2)), [0], [1.0, 1.0], "one entry per centroid"),
        (np.zeros((2, 2)), [0, 0], [1.0], "one entry per centroid"),
        (np.zeros((2, 2)), [0, 0], [1.0, 0.0], "positive"),
        (np.zeros((2, 2)), [0, 0], [1.0, -1.0], "positive"),
        (np.zeros((2, 2)), [0, 0], [1.0, np.inf], "finite"),
        (np.zeros((2, 2)), [0, 0], [1.0, np.nan], "finite"),
        (np.zeros((2, 2)), [0, 5], [1.0, 1.0], "unknown class"),
        (np.zeros((2, 2)), [0, -1], [1.0, 1.0], "unknown class"),
    ],
)
def test_bad_scorer_inputs_raise_artifact_error(
    centroids: np.ndarray, classes: list[int], radius: list[float], message: str
) -> None:
    with pytest.raises(ArtifactError, match=message):
        CentroidScorer(
            centroids.astype(np.float32),
            np.asarray(classes, dtype=np.intp),
            ["only"],
            np.asarray(radius, dtype=np.float32),
            np.array([1.0]),
            1.0,
        )


def test_the_geometry_alone_gives_the_scorers_distances_whatever_the_threshold() -> None:
    rng = np.random.default_rng(3)
    centroids = rng.normal(size=(6, 4)).astype(np.float32)
    classes = np.array([1, 0, 1, 2, 0, 2], dtype=np.intp)
    radius = rng.uniform(0.5, 2.0, size=6).astype(np.float32)
    z = rng.normal(size=(50, 4)).astype(np.float32)
    geometry = CentroidGeometry(centroids, classes, ["a", "b", "c"], radius)
    for threshold in (0.0, 1.5, 1e9):
        result = CentroidScorer(centroids, classes, ["a", "b", "c"], radius, np.arange(10.0), threshold).score(z)
        near = geometry.nearest(z)
        np.testing.assert_array_equal(result.score, near.score)
        np.testing.assert_array_equal(result.nearest_class, near.class_index)
        np.testing.assert_array_equal(result.nearest_centroid, near.centroid)
        np.testing.assert_array_equal(result.margin, near.margin)
        np.testing.assert_array_equal(result.flagged, near.score > threshold)


def test_the_nearest_class_is_the_class_of_the_nearest_centroid_even_on_a_tie() -> None:
    """Found in review: on an exact tie between two classes' centroids, the class came from the
    per-class minimum (classes in sorted order) and the centroid from the stored order, so a record
    named one class while its explanation measured the other's centroid."""
    s = scorer([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [1, 0, 0], names=["a", "b"])
    near = s.geometry.nearest(points([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    assert near.class_index.tolist() == s.geometry.centroid_class[near.centroid].tolist()
    assert near.centroid.tolist()[0] == 0 and near.class_index.tolist()[0] == 1
