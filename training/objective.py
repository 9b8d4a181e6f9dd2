"""Training objectives: what one batch's loss is, for labelled or unlabelled normal data.

* :class:`MetricObjective` — normal-class labels are known: class-balanced batches and a metric
  loss (contrastive pairs or triplets) on the embeddings.
* :class:`SelfSupervisedObjective` — no labels: two SCARF-corrupted views of each row are a
  positive pair, the other rows of the batch negatives (NT-Xent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from torch import Tensor, nn

from detector.encoder import Encoder
from training.config import TrainConfig
from training.corruption import ScarfCorruption
from training.losses import ContrastiveLoss, NTXentLoss, TripletLoss
from training.sampler import ClassBalancedBatchSampler

Index = NDArray[np.int64]


class Objective(Protocol):
    """A loss over batches of rows of one matrix."""

    def batches(self, n: int, seed: int) -> Iterator[Index]:
        """Index batches covering about ``n`` rows (the objective's own rows) once, deterministic for ``seed``."""

    def loss(self, encoder: Encoder, x: Tensor, labels: Tensor | None) -> Tensor:
        """Scalar loss of one batch."""


class MetricObjective:
    """Metric loss on labelled normal classes, with class-balanced batches."""

    def __init__(self, labels: NDArray[np.intp], config: TrainConfig) -> None:
        n_classes = len(np.unique(labels))
        self.samples_per_class = max(2, config.batch_size // min(n_classes, 16))
        self.classes_per_batch = max(2, config.batch_size // self.samples_per_class)
        self.labels = labels
        self.criterion: nn.Module
        if config.loss == "contrastive":
            self.criterion = ContrastiveLoss(margin=config.effective_margin)
        else:
            self.criterion = TripletLoss(margin=config.effective_margin, mining=config.mining)

    def batches(self, n: int, seed: int) -> Iterator[Index]:
        sampler = ClassBalancedBatchSampler(
            self.labels,
            classes_per_batch=self.classes_per_batch,
            samples_per_class=self.samples_per_class,
            seed=seed,
        )
        return iter(sampler)

    def loss(self, encoder: Encoder, x: Tensor, labels: Tensor | None) -> Tensor:
        assert labels is not None
        out: Tensor = self.criterion(encoder(x), labels)
        return out


class SelfSupervisedObjective:
    """SCARF: NT-Xent between two corrupted views of every row."""

    def __init__(self, corruption: ScarfCorruption, config: TrainConfig) -> None:
        self.corruption = corruption
        self.criterion = NTXentLoss(temperature=config.temperature)
        self.batch_size = config.batch_size

    def batches(self, n: int, seed: int) -> Iterator[Index]:
        order = np.random.default_rng(seed).permutation(n).astype(np.int64)
        for start in range(0, n - 1, self.batch_size):
            chunk = order[start : start + self.batch_size]
            if len(chunk) >= 2:
                yield chunk

    def loss(self, encoder: Encoder, x: Tensor, labels: Tensor | None) -> Tensor:
        out: Tensor = self.criterion(encoder(self.corruption(x)), encoder(self.corruption(x)))
        return out
