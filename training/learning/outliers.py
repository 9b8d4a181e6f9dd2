"""Synthetic outliers for outlier exposure: normal rows with a few fields pushed off-distribution.

Each field of a row is replaced with probability ``rate`` (at least one field per row): a numeric
field gets ``noise_scale`` standard deviations of Gaussian noise added (features are standardised,
so 5 means "five sigmas off"), a categorical field gets a uniformly random other category of its
one-hot block (the unknown bucket included; never the row's own). Unlike SCARF's corruption, which draws replacement
values from the normal data itself, this also moves features that are constant on normal
traffic, so the encoder learns to notice them. The trainer pushes every synthetic outlier at
least the margin away from every normal row.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from detector.features import Featurizer


class SyntheticOutliers:
    """Makes one synthetic outlier per input row.

    Args:
        numeric_columns: featurized columns holding standardised numeric fields.
        category_blocks: one list of columns per categorical field (its one-hot block).
        rate: probability that one field of one row is altered.
        noise_scale: standard deviations of the noise added to an altered numeric field.
        seed: seed of the internal generator.
    """

    def __init__(
        self,
        numeric_columns: list[int],
        category_blocks: list[list[int]],
        rate: float = 0.1,
        noise_scale: float = 5.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"rate must be in (0, 1], got {rate}")
        if not numeric_columns and not category_blocks:
            raise ValueError("synthetic outliers need at least one numeric column or categorical block")
        self.numeric = torch.as_tensor(numeric_columns, dtype=torch.long)
        self.blocks = [torch.as_tensor(b, dtype=torch.long) for b in category_blocks]
        self.rate = rate
        self.noise_scale = noise_scale
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def n_fields(self) -> int:
        return len(self.numeric) + len(self.blocks)

    def __call__(self, x: Tensor) -> Tensor:
        """``(n, F)`` normal rows -> ``(n, F)`` synthetic outliers (a new tensor)."""
        n = x.shape[0]
        g = self.generator
        altered = torch.rand(n, self.n_fields, generator=g) < self.rate
        untouched = ~altered.any(1)
        forced = torch.randint(0, self.n_fields, (int(untouched.sum()),), generator=g)
        altered[untouched.nonzero().squeeze(1), forced] = True
        out = x.clone()
        n_num = len(self.numeric)
        if n_num:
            noise = self.noise_scale * torch.randn(n, n_num, generator=g, dtype=x.dtype)
            cols = out[:, self.numeric]
            out[:, self.numeric] = torch.where(altered[:, :n_num], cols + noise, cols)
        for b, block in enumerate(self.blocks):
            rows = altered[:, n_num + b].nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            out[rows.unsqueeze(1), block.unsqueeze(0)] = self._other_category(out[rows][:, block], g)
        return out

    @staticmethod
    def _other_category(block: Tensor, g: torch.Generator) -> Tensor:
        """One-hot rows of a category other than each row's own (``block``: the rows' one-hot
        columns): drawing from all of them gave a row its own category back, an "outlier" equal
        to its normal row (half the time with three categories)."""
        n, width = block.shape
        one_hot = torch.zeros(n, width, dtype=block.dtype)
        if width == 1:  # one column (the unknown bucket alone): its other value is "not set"
            return 1.0 - block
        own = block.argmax(1)
        has_own = block.amax(1) > 0
        other = torch.randint(0, width - 1, (n,), generator=g)
        other += (other >= own).long()
        one_hot[torch.arange(n), torch.where(has_own, other, torch.randint(0, width, (n,), generator=g))] = 1.0
        return one_hot


#: Noise of synthetic outliers, in standard deviations, unless the data sets it (``outlier_noise``).
DEFAULT_NOISE_SCALE = 5.0
#: Synthetic outliers are pushed at least this many standard deviations off (dense data sets).
MIN_NOISE_SCALE = 5.0
#: ... and at least this many typical neighbour gaps (the median distance to the 5th nearest neighbour).
NEIGHBOUR_GAPS = 15.0


def noise_scale_for(x: NDArray[np.float32], seed: int, sample: int = 2000, chunk: int = 256) -> float:
    """Outlier noise scale from featurized training rows: ``max(5, 15 * median 5-NN distance)``.

    ``outlier_noise="auto"``, the default when the normals are trained as one class
    (:func:`training.learning.trainer.resolve_noise`). On dense data (NSL-KDD's normal traffic: median
    distance to the 5th neighbour 0.34 in standardised units) this is about 5 standard deviations.
    Where normal rows lie far apart (satellite 1.6, cardio 2.2), outliers 5 deviations off in a few
    fields sit inside the normals' own gaps, and the scale grows with the gaps. With labelled
    classes it cost pendigits 0.980 -> 0.976 AUROC, so classes keep the fixed 5 (docs/benchmarks.md).
    """
    if len(x) < 7:
        return MIN_NOISE_SCALE
    rng = np.random.default_rng(seed)
    data = np.asarray(x, dtype=np.float32)
    rows = data[rng.choice(len(data), min(sample, len(data)), replace=False)]
    sq = (data**2).sum(axis=1)
    chunk = max(1, min(chunk, 4_000_000 // len(data)))  # at most ~16 MB of distances at a time
    fifth: list[NDArray[np.float32]] = []
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        d2 = (part**2).sum(axis=1)[:, None] + sq[None, :] - 2.0 * part @ data.T
        fifth.append(np.sqrt(np.maximum(np.partition(d2, 5, axis=1)[:, 5], 0.0)))  # [:, 0] is the row itself
    return max(MIN_NOISE_SCALE, NEIGHBOUR_GAPS * float(np.median(np.concatenate(fifth))))


class ColumnLayout:
    """Which featurized columns are numeric values, categorical blocks, and each column's field."""

    def __init__(self, column_fields: list[str], numeric_columns: list[int], category_blocks: list[list[int]]) -> None:
        self.column_fields = column_fields
        self.numeric_columns = numeric_columns
        self.category_blocks = category_blocks

    @classmethod
    def from_featurizer(cls, featurizer: Featurizer) -> ColumnLayout:
        fields = featurizer.column_fields
        n_num = len(featurizer.spec.numeric)
        blocks = [[j for j, f in enumerate(fields) if f == field] for field in featurizer.spec.categorical]
        return cls(fields, list(range(n_num)), blocks)
