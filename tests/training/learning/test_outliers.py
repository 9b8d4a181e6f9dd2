"""Synthetic outliers: which fields move, by how much, and the data-derived noise scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import TrainConfig
from training.learning.outliers import MIN_NOISE_SCALE, NEIGHBOUR_GAPS, SyntheticOutliers, noise_scale_for


def test_every_outlier_differs_from_its_row_and_one_hot_blocks_stay_one_hot() -> None:
    x = torch.zeros(500, 6)
    x[:, 3] = 1.0  # block [3, 4, 5] holds category 0
    outliers = SyntheticOutliers([0, 1, 2], [[3, 4, 5]], rate=0.1, noise_scale=5.0, seed=0)(x)
    assert x[:, :3].abs().sum() == 0 and x[:, 3].sum() == 500  # the input is untouched
    assert outliers[:, 3:].sum(1).eq(1).all()
    moved_numeric = outliers[:, :3].ne(0).any(1)
    moved_category = outliers[:, 3].ne(1)
    assert (moved_numeric | moved_category).all()  # one field per row at least, and a redrawn category is another
    assert outliers[:, :3][outliers[:, :3] != 0].abs().mean() > 2.0  # about 5 sigmas of noise where altered


def test_a_redrawn_category_is_never_the_rows_own_and_every_other_is_drawn() -> None:
    """Found in review: drawn from the whole block, a row's category came back a third of the time
    with three categories, and the "outlier" equalled its normal row."""
    own = torch.arange(600) % 3
    x = torch.nn.functional.one_hot(own, 3).float()
    outliers = SyntheticOutliers([], [[0, 1, 2]], rate=1.0, seed=0)(x)
    assert outliers.sum(1).eq(1).all()
    drawn = outliers.argmax(1)
    assert (drawn != own).all()
    for category in range(3):  # both other categories are drawn, about evenly
        counts = torch.bincount(drawn[own == category], minlength=3)
        assert counts[category] == 0 and counts.min().item() == 0 and sorted(counts.tolist())[1] > 60


def test_a_row_without_a_category_set_may_get_any_and_a_one_column_block_flips() -> None:
    blank = SyntheticOutliers([], [[0, 1, 2]], rate=1.0, seed=0)(torch.zeros(300, 3))
    assert blank.sum(1).eq(1).all() and set(blank.argmax(1).tolist()) == {0, 1, 2}
    single = SyntheticOutliers([], [[0]], rate=1.0, seed=0)(torch.ones(10, 1))
    assert single.eq(0).all()


def test_same_seed_same_outliers() -> None:
    x = torch.randn(64, 4)
    a = SyntheticOutliers([0, 1, 2, 3], [], seed=3)(x)
    b = SyntheticOutliers([0, 1, 2, 3], [], seed=3)(x)
    assert torch.equal(a, b)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        SyntheticOutliers([0], [], rate=0.0)
    with pytest.raises(ValueError, match="at least one"):
        SyntheticOutliers([], [])


@pytest.mark.parametrize("noise", [0.0, -1.0, float("nan"), "loud"])
def test_train_config_refuses_a_bad_outlier_noise(noise: object) -> None:
    with pytest.raises(ValueError, match="outlier_noise"):
        TrainConfig.model_validate({"outlier_noise": noise})


def test_noise_scale_is_the_floor_on_dense_data() -> None:
    rng = np.random.default_rng(0)
    dense = rng.normal(0, 0.01, size=(3000, 4)).astype(np.float32)
    assert noise_scale_for(dense, seed=0) == MIN_NOISE_SCALE
    assert noise_scale_for(dense[:5], seed=0) == MIN_NOISE_SCALE  # too few rows for a 5th neighbour


def test_noise_scale_grows_with_the_gaps_between_rows() -> None:
    grid = np.array([[i, j] for i in range(40) for j in range(40)], dtype=np.float32) * 2.0  # gaps of 2
    scale = noise_scale_for(grid, seed=0, sample=300)
    # the 5th neighbour on a square grid of spacing 2 lies at 2 * sqrt(2) (or 2 at the edges)
    assert scale == pytest.approx(NEIGHBOUR_GAPS * 2.0 * np.sqrt(2.0), rel=1e-4)
