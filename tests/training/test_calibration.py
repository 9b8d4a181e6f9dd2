"""Centroid counts, placement and radii; threshold calibration warnings; the input-space term."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from training.calibration import (
    MIN_INPUT_POINTS,
    calibrate_threshold,
    centroid_counts,
    fit_input_neighbours,
    leave_one_out_distances,
    placement_rows,
)


def test_each_class_gets_its_own_allowance_capped_by_its_size() -> None:
    labels = np.repeat([0, 1, 2, 3], [5000, 400, 30, 1])
    assert centroid_counts(labels, 5, per_class=64) == [64, 20, 1, 1, 0]
    assert centroid_counts(labels, 5, per_class=8) == [8, 8, 1, 1, 0]
    assert centroid_counts(labels, 5, per_class=64, min_members=10) == [64, 40, 3, 1, 0]


def test_small_calibration_set_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="training.calibration"):
        threshold, warnings = calibrate_threshold(np.linspace(0, 1, 50), 0.01)
    assert [r.getMessage() for r in caplog.records] == ["calibration_set_small"]  # logged as well
    # Found in review: the warning said "about 0.5 lie above" while none do, and new normals
    # exceed the highest of 50 scores at 1/51, about twice the target.
    assert warnings == [
        "only 50 calibration normals: no threshold holds target FPR 0.01 (that needs at least 99); the threshold "
        "is their highest score, which new normals exceed at a rate of about 1/51 = 0.020"
    ]
    assert threshold == 1.0
    _, none = calibrate_threshold(np.linspace(0, 1, 5000), 0.01)
    assert none == []


def test_no_input_term_with_a_zero_budget() -> None:
    assert fit_input_neighbours(np.ones((50, 3), np.float32), np.ones(50), budget=0, seed=0) is None


def test_few_rows_are_their_own_reference_points_scaled_by_leave_one_out_distances() -> None:
    x = np.array([[0.0], [1.0], [3.0], [7.0]], np.float32)  # nearest other row: 1, 1, 2, 4
    view = fit_input_neighbours(x, np.array([1.0, 2.0, 3.0, 4.0]), budget=1000, seed=0)
    assert view is not None
    np.testing.assert_array_equal(view.points, x)
    assert view.input_scale == pytest.approx(1.5) and view.embedding_scale == pytest.approx(2.5)


def test_many_rows_get_as_many_kmeans_points_as_the_budget_allows() -> None:
    x = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    view = fit_input_neighbours(x, np.ones(3000), budget=8 * 100, seed=0)
    assert view is not None and view.points.shape == (100, 8)
    in_sample = float(np.median(view.distances(x)))
    assert view.input_scale > in_sample  # leave-one-out: what a new row gets, not what the rows got
    small = fit_input_neighbours(x, np.ones(3000), budget=8, seed=0)
    assert small is not None and len(small.points) == MIN_INPUT_POINTS


def test_leave_one_out_moves_each_rows_own_point_to_the_mean_of_the_others() -> None:
    x = np.array([[0.0], [2.0], [10.0]], np.float32)
    points = np.array([[1.0], [10.0]], np.float32)  # the means of {0, 2} and {10}
    owner = np.array([0, 0, 1], np.intp)
    # rows 0 and 2 of the pair: their own point becomes the other member (2 away); row 10 is alone:
    # its point is gone, the nearest left is the pair's mean, 9 away.
    assert leave_one_out_distances(x, points, owner).tolist() == pytest.approx([2.0, 2.0, 9.0])


def test_the_scale_matches_new_rows_whatever_the_points_per_row() -> None:
    """Nearly one point per row (what a cross-fitted fold model gets on a small set) must not shrink
    the scale: a fold model and the final model then score alike."""
    rng = np.random.default_rng(1)
    x, new = rng.normal(size=(2000, 4)).astype(np.float32), rng.normal(size=(2000, 4)).astype(np.float32)
    for budget in (4 * 200, 4 * 1800, 4 * 5000):  # 10, 90 and 100% of the rows
        view = fit_input_neighbours(x, np.ones(2000), budget=budget, seed=0)
        assert view is not None
        assert float(np.median(view.distances(new))) / view.input_scale == pytest.approx(1.0, abs=0.1)


def test_duplicate_rows_still_get_a_positive_scale() -> None:
    x = np.zeros((100, 2), np.float32)
    x[:10, 0] = np.arange(1, 11)  # 90 identical rows: the median leave-one-out distance is 0
    view = fit_input_neighbours(x, np.zeros(100), budget=10_000, seed=0)
    assert view is not None and view.input_scale > 0 and view.embedding_scale == 1.0


def test_centroids_are_placed_without_the_unseen_rows_unless_a_class_has_no_other() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2], dtype=np.intp)
    placed, unseen = placement_rows(labels, np.array([1, 4, 5], dtype=np.int64))
    # Class 2's only row stays with the placed rows: a class keeps a centroid.
    assert placed.tolist() == [0, 2, 3, 5] and unseen.tolist() == [1, 4]
    placed, unseen = placement_rows(labels, np.zeros(0, dtype=np.int64))
    assert placed.tolist() == list(range(6)) and unseen.tolist() == []
