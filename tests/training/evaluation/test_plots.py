"""Report plots: valid PNGs for awkward inputs, PCA projection, histogram binning choices."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluation.plots import (
    embedding_projection_png,
    histogram_bins,
    pca_projection,
    roc_png,
    score_histogram_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_pca_projection_finds_the_dominant_axis() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 3)) * np.array([0.01, 5.0, 0.5]) + np.array([1.0, 2.0, 3.0])
    mean, components = pca_projection(data)
    assert mean == pytest.approx(data.mean(axis=0))
    assert components.shape == (2, 3)
    assert abs(components[0, 1]) == pytest.approx(1.0, abs=1e-3)  # largest variance first
    assert abs(components[1, 2]) == pytest.approx(1.0, abs=1e-2)
    assert components @ components.T == pytest.approx(np.eye(2), abs=1e-9)


def test_pca_projection_pads_missing_axes_with_zeros() -> None:
    mean, components = pca_projection(np.array([[1.0], [3.0]]))
    assert mean.tolist() == [2.0]
    assert abs(components[0, 0]) == pytest.approx(1.0) and components[1].tolist() == [0.0]


def testhistogram_bins_log_for_wide_positive_scores_else_clipped_linear() -> None:
    wide = np.geomspace(1e-3, 1e3, 200)
    edges, log_x, clip = histogram_bins(wide, threshold=1.0)
    assert log_x and clip is None and edges[0] == pytest.approx(1e-3) and edges[-1] == pytest.approx(1e3)
    narrow = np.r_[np.linspace(-1.0, 1.0, 999), 1e6]  # one outlier must not squash the bulk
    edges, log_x, clip = histogram_bins(narrow, threshold=0.5)
    assert not log_x and clip is not None and clip < 2.0 and edges[-1] == clip
    _, _, clip = histogram_bins(narrow, threshold=10.0)  # the threshold always stays in range
    assert clip == 10.0


def test_plots_render_for_awkward_but_valid_inputs() -> None:
    tied = np.array([1.0, 1.0, 1.0, 1.0])
    labels = np.array([0, 1, 0, 1])
    for png in (
        roc_png(tied, labels, 1.0),
        score_histogram_png(tied, labels, 1.0),
        score_histogram_png(np.array([-3.0, 0.0, 2.0, 5.0]), labels, -10.0),
        embedding_projection_png(np.array([[0.5], [0.25]]), ["$a", "b$"], np.array([[0.3]]), ["$c$"]),
    ):
        assert png.startswith(PNG_SIGNATURE)


def test_projection_subsamples_deterministically() -> None:
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(800, 6))
    labels = (rng.random(800) < 0.2).tolist()
    first = embedding_projection_png(embeddings, is_anomaly=labels, max_points=300, seed=3)
    assert first == embedding_projection_png(embeddings, is_anomaly=labels, max_points=300, seed=3)
    assert first.startswith(PNG_SIGNATURE)
