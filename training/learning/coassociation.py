"""Cluster structure of unlabelled normals: is there any, and which rows belong together.

Normal data without class labels may still consist of distinct kinds of rows (satellite: three
soil types; NSL-KDD: services). Pulling all of them into one tight class then also pulls in
anomalies that lie between the kinds. When the featurized training rows show clear clusters,
the trainer instead learns from the **co-association** of several k-means clusterings (Fred & Jain,
"Combining multiple clusterings using evidence accumulation", 2005): the target affinity of two
rows is the share of clusterings that put them in the same cluster. Rows always clustered
together are positives, rows never clustered together negatives, rows on a shifting boundary
partly both; no single k has to be right.

Criterion for "clear clusters": the best mean silhouette over k-means with the
``STRUCTURE_CANDIDATES`` k values, on a sample of at most 2000 rows, reaches
``STRUCTURE_SILHOUETTE`` (0.4). A clustering with a cluster smaller than ``MIN_CLUSTER_SHARE``
(2%) of the sample does not count: a few extreme rows split off by k-means would otherwise give a
high silhouette to data with no structure at all. A continuum (thyroid,
cardio: 0.17-0.37 on their training rows) is cut arbitrarily by k-means, and separating the
pieces costs detection quality, so such data keeps the one-class objective.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from training.learning.clustering import choose_k, kmeans

#: Best silhouette at or above which unlabelled normals count as clustered (see module docstring).
STRUCTURE_SILHOUETTE = 0.4
#: A clustering whose smallest cluster holds less than this share of the sample is not counted.
MIN_CLUSTER_SHARE = 0.02
#: k values whose silhouettes are compared.
STRUCTURE_CANDIDATES: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12)
#: k values of the clusterings whose co-association is the training target.
COASSOCIATION_KS: tuple[int, ...] = (2, 3, 4, 5, 6, 8)


@dataclass(frozen=True)
class ClusterStructure:
    """The silhouette test and, when it passes, one cluster index per row and clustering.

    Attributes:
        silhouettes: mean silhouette per counted candidate k (see MIN_CLUSTER_SHARE).
        best_k: the k with the best silhouette (1 when no k reaches the threshold).
        assignments: ``(n, C)`` cluster index of each row in each of C clusterings, or ``None``
            when the rows show no clear clusters.
    """

    silhouettes: dict[int, float]
    best_k: int
    assignments: NDArray[np.intp] | None

    @property
    def clustered(self) -> bool:
        return self.assignments is not None

    def summary(self) -> dict[str, object]:
        return {
            "criterion": (
                f"best silhouette of k-means on the featurized rows >= {STRUCTURE_SILHOUETTE}, "
                f"clusterings with a cluster under {MIN_CLUSTER_SHARE:.0%} of the rows not counted"
            ),
            "silhouettes": {k: round(v, 3) for k, v in self.silhouettes.items()},
            "clustered": self.clustered,
            "coassociation_ks": list(COASSOCIATION_KS) if self.clustered else [],
        }


def find_structure(
    x: NDArray[np.float32], candidates: Sequence[int], seed: int, force: bool = False
) -> ClusterStructure:
    """Test featurized rows for cluster structure; cluster them when it passes (or ``force``)."""
    best_k, silhouettes = choose_k(
        x, candidates, seed, min_silhouette=STRUCTURE_SILHOUETTE, min_cluster_share=MIN_CLUSTER_SHARE
    )
    if best_k < 2 and not force:
        return ClusterStructure(silhouettes, 1, None)
    assignments = np.stack([kmeans(x, k, seed + k).labels for k in COASSOCIATION_KS], axis=1).astype(np.intp)
    return ClusterStructure(silhouettes, best_k, assignments)


def coassociation(assignments: Tensor) -> Tensor:
    """``(n, C)`` cluster indices -> ``(n, n)`` share of the C clusterings putting two rows together."""
    if assignments.dim() != 2:
        raise ValueError(f"assignments must be 2-D (rows, clusterings), got shape {tuple(assignments.shape)}")
    same = assignments.unsqueeze(1) == assignments.unsqueeze(0)
    return same.to(torch.float32).mean(dim=-1)
