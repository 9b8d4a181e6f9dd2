"""Centroid counts, placement and radii; threshold calibration warnings."""

from __future__ import annotations

import numpy as np

from training.calibration import calibrate_threshold, centroid_counts


def test_each_class_gets_its_own_allowance_capped_by_its_size() -> None:
    labels = np.repeat([0, 1, 2, 3], [5000, 400, 30, 1])
    assert centroid_counts(labels, 5, per_class=64) == [64, 20, 1, 1, 0]
    assert centroid_counts(labels, 5, per_class=8) == [8, 8, 1, 1, 0]
    assert centroid_counts(labels, 5, per_class=64, min_members=10) == [64, 40, 3, 1, 0]


def test_small_calibration_set_warns() -> None:
    threshold, warnings = calibrate_threshold(np.linspace(0, 1, 50), 0.01)
    assert warnings and "50 calibration normals" in warnings[0]
    assert threshold == 1.0
    _, none = calibrate_threshold(np.linspace(0, 1, 5000), 0.01)
    assert none == []
