"""SCARF corruption (Bahri et al., 2022) on featurized matrices, for self-supervised pre-training.

A corrupted view of a row replaces a random subset of its features by values drawn from the
empirical marginal (the same feature of a random training row). Features are corrupted by
column GROUP, not by column: all columns that come from one event field (a categorical one-hot
block, a numeric value with its missing indicator) are replaced together from one donor row, so
a corrupted row is still a row the featurizer could have produced.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor


def column_groups_from_fields(column_fields: list[str]) -> list[list[int]]:
    """Group column indices by the event field they come from.

    Args:
        column_fields: for each featurizer column, its field name
            (:attr:`detector.features.Featurizer.column_fields`). Missing-indicator columns carry
            their numeric field's name, so they join that field's group even though they are
            not adjacent to it.

    Returns:
        One list of column indices per field, in order of the field's first column; together
        they partition ``range(len(column_fields))``.
    """
    groups: dict[str, list[int]] = {}
    for column, field in enumerate(column_fields):
        groups.setdefault(field, []).append(column)
    return list(groups.values())


class ScarfCorruption:
    """Makes corrupted views of featurized batches.

    Args:
        train_matrix: ``(n, F)`` featurized training rows: the donors of replacement values.
        column_groups: a partition of ``range(F)``: the columns replaced together.
        rate: probability that one group of one row is replaced, independently per row and group.
        seed: seed of the internal ``torch.Generator``; the same seed and the same sequence of
            calls give the same views.

    Raises:
        ValueError: empty or non-finite ``train_matrix``, groups that are not a partition of its
            columns, or ``rate`` outside ``[0, 1]``.
    """

    def __init__(
        self,
        train_matrix: NDArray[np.floating],
        column_groups: list[list[int]],
        rate: float = 0.6,
        seed: int = 0,
    ) -> None:
        matrix = np.asarray(train_matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] == 0:
            raise ValueError(f"train_matrix must be a non-empty 2-D (n, F) array, got shape {matrix.shape}")
        if not np.isfinite(matrix).all():
            raise ValueError("train_matrix contains NaN or infinite values")
        if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self._group_of_column = torch.as_tensor(_group_of_column(column_groups, matrix.shape[1]))
        self._train = torch.from_numpy(matrix.copy())
        self.n_groups = len(column_groups)
        self.rate = float(rate)
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def n_features(self) -> int:
        """Width ``F`` of the matrices this corruption applies to."""
        return int(self._train.shape[1])

    def __call__(self, batch: Tensor) -> Tensor:
        """A corrupted copy of ``batch``; the input is never modified.

        Args:
            batch: ``(b, F)`` floating-point tensor, on any device.

        Returns:
            ``(b, F)`` tensor of the same dtype and device where each (row, group) is, with
            probability ``rate``, that group's values from a uniformly drawn training row.

        Raises:
            ValueError: ``batch`` is not a 2-D floating-point tensor of width ``F``.
        """
        if batch.dim() != 2 or batch.shape[1] != self.n_features or not batch.is_floating_point():
            raise ValueError(
                f"batch must be a floating-point (b, {self.n_features}) tensor, "
                f"got {batch.dtype} of shape {tuple(batch.shape)}"
            )
        rows = batch.shape[0]
        corrupt = torch.rand(rows, self.n_groups, generator=self._generator) < self.rate
        donors = torch.randint(0, self._train.shape[0], (rows, self.n_groups), generator=self._generator)
        # Expand the per-group draws to columns: every column of a group shares its donor.
        mask = corrupt[:, self._group_of_column]
        replacement = self._train[donors[:, self._group_of_column], torch.arange(self.n_features)]
        return torch.where(mask.to(batch.device), replacement.to(device=batch.device, dtype=batch.dtype), batch)


def _group_of_column(column_groups: list[list[int]], width: int) -> NDArray[np.int64]:
    """Map each column to its group index; raise unless the groups partition ``range(width)``."""
    group_of = np.full(width, -1, dtype=np.int64)
    for g, group in enumerate(column_groups):
        if not group:
            raise ValueError(f"column group {g} is empty")
        for column in group:
            if not 0 <= column < width:
                raise ValueError(f"column group {g} names column {column}, outside 0..{width - 1}")
            if group_of[column] >= 0:
                raise ValueError(f"column {column} is in groups {group_of[column]} and {g}")
            group_of[column] = g
    missing = np.flatnonzero(group_of < 0)
    if missing.size:
        raise ValueError(f"columns {missing.tolist()} belong to no column group")
    return group_of
