"""The training objective: a metric loss over normal rows and synthetic outliers.

Positives and negatives, per batch:

* labelled normal classes: rows of the same class are positives, rows of different classes
  negatives (class-balanced batches so both exist);
* no labels, ``positives="views"`` (SCARF, Bahri et al. 2022): two randomly corrupted views of
  the same row are a positive pair, other rows negatives;
* no labels, ``positives="one_class"``: all normal rows form one class (compactness only);
* no labels, clustered rows (``positives="auto"`` / ``"clusters"``, :mod:`training.learning.coassociation`):
  ``labels`` is ``(n, C)``, the rows' clusters in C k-means clusterings; a pair's target is the
  share of clusterings that put both rows together (:meth:`ContrastiveLoss.soft_loss`);
* in every case, with outlier exposure on, each row also yields a synthetic outlier
  (:mod:`training.learning.outliers`) that is a negative for every normal row: the contrastive loss adds
  ``0.5 * max(0, margin - d)^2`` over every (normal, outlier) pair of the batch as a separate
  term (so class separation keeps its own weight); for triplets each outlier is a class of its
  own, so it can be any anchor's negative and nobody's positive.
* with ``neighbour_weight > 0``, a local term keeps each row's nearest neighbours (in the
  featurized input, within the batch) at proportional distances in the embedding
  (:func:`neighbour_loss`), so that embedding distances near the normals follow the input's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from detector.encoder import Encoder
from detector.errors import DataError
from training.config import TrainConfig
from training.learning.coassociation import coassociation
from training.learning.corruption import ScarfCorruption
from training.learning.losses import ContrastiveLoss, TripletLoss
from training.learning.outliers import SyntheticOutliers
from training.learning.sampler import ClassBalancedBatchSampler

Index = NDArray[np.int64]


#: Input-space neighbours per row that the local term keeps in proportion.
NEIGHBOURS = 10


def neighbour_loss(x: Tensor, z: Tensor, k: int = NEIGHBOURS) -> Tensor:
    """Mean squared difference of scale-free distances to each row's ``k`` input-space neighbours.

    Both distance matrices are divided by their batch mean, so the term constrains the shape of
    the neighbourhoods, not the embedding's overall scale (which the metric loss sets).
    """
    n = x.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return z.sum() * 0.0
    with torch.no_grad():
        dx = torch.cdist(x, x)
        dx = dx / dx.mean().clamp_min(1e-12)
        dx.fill_diagonal_(float("inf"))
        near_dx, near = dx.topk(k, dim=1, largest=False)
    dz = torch.cdist(z, z)
    dz = dz / dz.mean().clamp_min(1e-12)
    return ((dz.gather(1, near) - near_dx) ** 2).mean()


class MetricObjective:
    """Loss of one batch and the batches of one epoch.

    Args:
        labels: ``(n,)`` class index per row, ``(n, C)`` cluster index per row and clustering
            (co-association targets; contrastive loss only), or ``None`` (no labels).
        config: loss, margin, mining, batch size, unlabelled positives.
        views: SCARF corruption for ``positives="views"`` (``None`` otherwise).
        outliers: synthetic-outlier generator (``None`` = no outlier exposure).
    """

    def __init__(
        self,
        labels: NDArray[np.intp] | None,
        config: TrainConfig,
        views: ScarfCorruption | None,
        outliers: SyntheticOutliers | None,
    ) -> None:
        self.coassociated = labels is not None and labels.ndim == 2
        if self.coassociated and config.loss != "contrastive":
            raise ValueError("co-association targets need the contrastive loss")
        self.labels = labels
        self.n_classes = 0 if labels is None or self.coassociated else len(np.unique(labels))
        self.batch_size = config.batch_size
        self.views = views if self.n_classes < 2 and not self.coassociated else None
        self.view_negatives = config.unlabelled_positives == "views"
        self.outliers = outliers
        self.neighbour_weight = config.neighbour_weight
        self.criterion: nn.Module
        if config.loss == "contrastive":
            self.criterion = ContrastiveLoss(margin=config.effective_margin)
        else:
            self._check_triplet_negatives()
            self.criterion = TripletLoss(margin=config.effective_margin, mining=config.mining)

    def _check_triplet_negatives(self) -> None:
        """A triplet needs a negative: with one class, no view negatives and no synthetic outliers
        every loss would be 0 and the encoder would keep its random weights, silently."""
        if self.n_classes >= 2 or self.coassociated or self.outliers is not None or self.neighbour_weight > 0:
            return  # (the neighbour term learns without negatives)
        if self.views is not None and self.view_negatives:
            return
        raise DataError(
            "the triplet loss has no negatives here: the normal rows train as one class and outlier "
            "exposure is off, so every triplet loss would be 0 and nothing would be learnt; turn "
            "outlier exposure on, give a label field with two or more classes, use "
            "unlabelled_positives='views', or use the contrastive loss"
        )

    def describe(self, classes_from_clusters: bool = False) -> str:
        """E.g. ``contrastive; positives: labelled classes; negatives: other classes, synthetic outliers``
        (``classes_from_clusters``: the classes are k-means clusters of unlabelled rows, not labels)."""
        if self.n_classes >= 2:
            positives = "k-means clusters of the rows" if classes_from_clusters else "labelled classes"
            negatives = ["other clusters" if classes_from_clusters else "other classes"]
        elif self.coassociated:
            positives, negatives = "co-clustered rows (k-means co-association)", ["rows clustered apart"]
        elif self.views is not None:
            positives = "SCARF views of a row" if self.view_negatives else "all normal rows (SCARF views)"
            negatives = ["other rows"] if self.view_negatives else []
        else:
            positives, negatives = "all normal rows (one class)", []
        if self.outliers is not None:
            negatives.append("synthetic outliers")
        name = "contrastive" if isinstance(self.criterion, ContrastiveLoss) else "triplet"
        return f"{name}; positives: {positives}; negatives: {', '.join(negatives) or 'none'}"

    def batches(self, n: int, seed: int) -> Iterator[Index]:
        """Class-balanced batches with >= 2 classes, else a random permutation in chunks; either
        way ``ceil(n / batch_size)`` batches an epoch, the optimiser steps the budget counts
        (:func:`training.learning.budget.epoch_budget`)."""
        steps = math.ceil(n / self.batch_size)
        if self.labels is not None and self.n_classes >= 2:
            per_class = max(2, self.batch_size // min(self.n_classes, 16))
            sampler = ClassBalancedBatchSampler(
                self.labels,
                classes_per_batch=max(2, self.batch_size // per_class),
                samples_per_class=per_class,
                seed=seed,
                batches_per_epoch=steps,
                batch_size=self.batch_size,
            )  # fmt: skip  (batches of exactly batch_size: room for every row once an epoch)
            yield from sampler
            return
        order = np.random.default_rng(seed).permutation(n).astype(np.int64)
        if n < 2:
            return  # no pair to learn from
        bounds = [*range(0, n, self.batch_size), n]
        if steps > 1 and n - bounds[-2] < 2:  # a last chunk of one row: the last two share their rows
            bounds[-2] = (bounds[-3] + n) // 2
        for start, end in itertools.pairwise(bounds):
            yield order[start:end]

    def loss(self, encoder: Encoder, x: Tensor, labels: Tensor | None) -> Tensor:
        """Scalar loss of one batch of normal rows ``x`` (``labels`` when classes are known)."""
        loss, z = self._metric_loss(encoder, x, labels)
        if self.neighbour_weight > 0 and z is not None:
            loss = loss + self.neighbour_weight * neighbour_loss(x, z)
        return loss

    def _metric_loss(self, encoder: Encoder, x: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The metric loss and the embedding of ``x`` itself (``None`` for SCARF views)."""
        n = x.shape[0]
        if labels is not None and labels.dim() == 2:
            z = encoder(x)
            assert isinstance(self.criterion, ContrastiveLoss)  # checked in __init__
            class_loss: Tensor = self.criterion.soft_loss(z, coassociation(labels))
            if self.outliers is None:
                return class_loss, z
            return class_loss + self.criterion.negatives_loss(z, encoder(self.outliers(x))), z
        own: Tensor | None = None
        if self.views is not None:
            z = torch.cat([encoder(self.views(x)), encoder(self.views(x))])
            y = torch.arange(n).repeat(2) if self.view_negatives else torch.zeros(2 * n, dtype=torch.long)
        else:
            z = own = encoder(x)
            y = labels if labels is not None and self.n_classes >= 2 else torch.zeros(n, dtype=torch.long)
        if self.outliers is None:
            out: Tensor = self.criterion(z, y)
            return out, own
        z_outliers = encoder(self.outliers(x))
        if isinstance(self.criterion, ContrastiveLoss):
            # Class structure among normal rows, plus every normal/outlier pair as a negative.
            loss: Tensor = self.criterion(z, y) + self.criterion.negatives_loss(z, z_outliers)
            return loss, own
        # Triplets: each outlier is a class of its own, so it is a negative and never a positive.
        labels = torch.cat([y, -1 - torch.arange(len(z_outliers))])
        loss = self.criterion(torch.cat([z, z_outliers]), labels)
        return loss, own
