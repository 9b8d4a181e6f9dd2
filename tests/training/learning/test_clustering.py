"""k-means, the silhouette coefficient and the choice of k."""

from __future__ import annotations

import numpy as np
import pytest

from training.learning import clustering
from training.learning.clustering import _update_centers, choose_k, kmeans, silhouette

CENTERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])


def blobs(n_per: int = 60, spread: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + rng.normal(0, spread, size=(n_per, 2)) for c in CENTERS])
    return x, np.repeat(np.arange(len(CENTERS)), n_per)


def test_kmeans_recovers_well_separated_blobs() -> None:
    x, truth = blobs()
    result = kmeans(x, 3, seed=1)
    assert result.centroids.shape == (3, 2)
    # Each true blob maps to exactly one cluster, and each cluster to one blob.
    mapping = {int(t): set(result.labels[truth == t].tolist()) for t in range(3)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len(set().union(*mapping.values())) == 3
    for t, (cluster,) in mapping.items():
        np.testing.assert_allclose(result.centroids[cluster], CENTERS[t], atol=0.3)
    expected_inertia = sum(((x[truth == t] - x[truth == t].mean(0)) ** 2).sum() for t in range(3))
    assert result.inertia == pytest.approx(expected_inertia, rel=1e-9)


def test_kmeans_is_deterministic_for_a_seed() -> None:
    x, _ = blobs(seed=3)
    first, second = kmeans(x, 4, seed=7), kmeans(x, 4, seed=7)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.centroids, second.centroids)


def test_kmeans_caps_k_at_the_number_of_distinct_points() -> None:
    x = np.array([[1.0, 1.0]] * 5 + [[2.0, 2.0]] * 5)
    result = kmeans(x, 6, seed=0)
    assert len(result.centroids) == 2
    assert result.inertia == pytest.approx(0.0)


@pytest.mark.parametrize(("k", "block_rows"), [(4, 65_536), (4, 7), (40, 65_536)])  # product, in blocks, sort
def test_center_update_is_each_clusters_mean_and_reseeds_an_empty_one(
    k: int, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clustering, "_PRODUCT_ROWS", block_rows)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50 * k, 3))
    labels = rng.integers(0, k, size=len(x))
    labels[labels == 2] = 3  # cluster 2 ends up empty
    centers = np.zeros((k, 3))
    dist = ((x[:, None, :] - rng.normal(size=(k, 3))[None]) ** 2).sum(-1).astype(np.float32)
    _update_centers(x, labels, centers, dist)
    for j in set(range(k)) - {2}:
        np.testing.assert_allclose(centers[j], x[labels == j].mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(centers[2], x[dist.min(1).argmax()])  # the worst-served point


def test_kmeans_refuses_zero_points() -> None:
    with pytest.raises(ValueError, match="zero points"):
        kmeans(np.zeros((0, 2)), 2, seed=0)


def test_choose_k_picks_three_for_three_blobs() -> None:
    x, _ = blobs()
    k, scores = choose_k(x, [2, 3, 4, 5, 6], seed=0)
    assert k == 3
    assert scores[3] == max(scores.values())
    assert set(scores) == {2, 3, 4, 5, 6}


@pytest.mark.parametrize("dim", [8, 16, 32])
def test_choose_k_picks_one_for_a_single_blob_in_embedding_like_dimensions(dim: int) -> None:
    # NB: in 2-D, k-means splits of one Gaussian reach a silhouette of ~0.35 (> the 0.25 cut), so the
    # criterion only says "no clusters" for a single blob from about 4 dimensions on.
    x = np.random.default_rng(0).normal(size=(300, dim))
    k, scores = choose_k(x, [2, 3, 4, 5], seed=0)
    assert k == 1
    assert all(s < 0.25 for s in scores.values())


def test_choose_k_skips_impossible_candidates() -> None:
    x, _ = blobs(n_per=2)
    k, scores = choose_k(x, [1, 2, 3, 100], seed=0)
    assert set(scores) == {2, 3}
    assert k == 3


def test_silhouette_on_a_hand_computed_case() -> None:
    # Clusters {0, 1} and {10, 11} on a line: a = 1 for every point; b = 10.5, 9.5, 9.5, 10.5.
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    expected = (9.5 / 10.5 + 8.5 / 9.5) / 2
    assert silhouette(x, np.array([0, 0, 1, 1])) == pytest.approx(expected)


def test_silhouette_conventions() -> None:
    x = np.array([[0.0], [1.0], [5.0]])
    assert silhouette(x, np.array([0, 0, 0])) == 0.0  # one cluster
    # A singleton cluster scores 0; the others: a = 1, b = 5 and 4.
    assert silhouette(x, np.array([0, 0, 1])) == pytest.approx(((1 - 1 / 5) + (1 - 1 / 4)) / 3)
    # A bad split is negative.
    assert silhouette(np.array([[0.0], [10.0], [1.0], [11.0]]), np.array([0, 0, 1, 1])) < 0
