"""Cluster-structure test and co-association targets for unlabelled normals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.learning.coassociation import COASSOCIATION_KS, STRUCTURE_CANDIDATES, coassociation, find_structure


def three_blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * 6, [8.0] * 6, [0.0, 8.0] * 3])
    return np.concatenate([c + rng.normal(0, 0.7, size=(150, 6)) for c in centers]).astype(np.float32)


def test_coassociation_is_the_share_of_clusterings_that_agree() -> None:
    # rows 0 and 1 together in 2 of 3 clusterings, rows 0 and 2 in 1, rows 1 and 2 in 0
    assignments = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 0, 1]])
    assert torch.allclose(
        coassociation(assignments),
        torch.tensor([[1, 2 / 3, 1 / 3], [2 / 3, 1, 0], [1 / 3, 0, 1]], dtype=torch.float32),
    )
    with pytest.raises(ValueError, match="2-D"):
        coassociation(torch.tensor([0, 1, 1]))


def test_clustered_rows_get_assignments_from_every_clustering() -> None:
    x = three_blobs()
    structure = find_structure(x, STRUCTURE_CANDIDATES, seed=0)
    assert structure.clustered and structure.best_k == 3
    assert structure.assignments is not None and structure.assignments.shape == (450, len(COASSOCIATION_KS))
    # every clustering keeps each blob's rows together where it has at least 3 clusters
    together = coassociation(torch.from_numpy(structure.assignments)).numpy()
    blob = np.repeat(np.arange(3), 150)
    same_blob = blob[:, None] == blob[None, :]
    assert together[~same_blob].max() <= 1 / len(COASSOCIATION_KS) + 1e-6  # only k=2 may merge two blobs
    assert together[same_blob].mean() > 0.6
    summary = structure.summary()
    assert summary["clustered"] is True and summary["coassociation_ks"] == list(COASSOCIATION_KS)


def test_a_continuum_keeps_one_class_unless_clusters_are_forced() -> None:
    x = np.random.default_rng(3).normal(size=(600, 6)).astype(np.float32)
    structure = find_structure(x, STRUCTURE_CANDIDATES, seed=0)
    assert not structure.clustered and structure.assignments is None and structure.best_k == 1
    assert max(structure.silhouettes.values()) < 0.4
    forced = find_structure(x, STRUCTURE_CANDIDATES, seed=0, force=True)
    assert forced.assignments is not None and forced.assignments.shape == (600, len(COASSOCIATION_KS))


def test_structure_is_deterministic_for_a_seed() -> None:
    x = three_blobs(seed=1)
    a, b = find_structure(x, STRUCTURE_CANDIDATES, seed=5), find_structure(x, STRUCTURE_CANDIDATES, seed=5)
    assert a.silhouettes == b.silhouettes
    assert a.assignments is not None and b.assignments is not None
    np.testing.assert_array_equal(a.assignments, b.assignments)


@pytest.mark.parametrize("n_far", [2, 10])
def test_a_few_extreme_rows_do_not_make_a_continuum_clustered(n_far: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 6)).astype(np.float32)
    x[:n_far] += 30.0  # k-means splits these off with a silhouette near 1
    for seed in (0, 1, 2):
        structure = find_structure(x, STRUCTURE_CANDIDATES, seed=seed)
        assert not structure.clustered, structure.silhouettes
        assert all(v < 0.4 for v in structure.silhouettes.values())
