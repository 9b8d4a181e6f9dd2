"""ScarfCorruption: identity at rate 0, whole groups from train rows, one-hot validity, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.features import Featurizer
from detector.schema import FeatureSpec
from training.learning.corruption import ScarfCorruption, column_groups_from_fields

# Columns: 0 = numeric "x", 1 = numeric "y", 2 = "y" missing indicator, 3..5 = one-hot "colour".
FIELDS = ["x", "y", "y", "colour", "colour", "colour"]
GROUPS = [[0], [1, 2], [3, 4, 5]]


def train_matrix(rows: int = 20) -> np.ndarray:
    """Rows whose values identify the row: x = 100 + r, y = 200 + r, indicator r % 2, colour r % 3."""
    matrix = np.zeros((rows, 6), dtype=np.float32)
    for r in range(rows):
        matrix[r, :3] = [100 + r, 200 + r, r % 2]
        matrix[r, 3 + r % 3] = 1.0
    return matrix


def batch(rows: int = 50) -> torch.Tensor:
    """Rows unlike any train row: x = -1 - r, y = -1000 - r, indicator 0, colour 0."""
    out = torch.zeros(rows, 6)
    out[:, 0] = -1 - torch.arange(rows, dtype=torch.float32)
    out[:, 1] = -1000 - torch.arange(rows, dtype=torch.float32)
    out[:, 3] = 1.0
    return out


def test_column_groups_follow_fields() -> None:
    assert column_groups_from_fields(FIELDS) == GROUPS
    assert column_groups_from_fields(["a", "b", "a"]) == [[0, 2], [1]]
    assert column_groups_from_fields([]) == []


def test_column_groups_from_a_real_featurizer() -> None:
    spec = FeatureSpec(numeric=["bytes", "port"], categorical=["proto"], optional=["port"])
    records = [{"bytes": 10, "port": 80, "proto": "tcp"}, {"bytes": 5, "proto": "udp"}]
    featurizer = Featurizer(spec).fit(records)
    groups = column_groups_from_fields(featurizer.column_fields)
    names = featurizer.column_names
    assert [[names[c] for c in g] for g in groups] == [
        ["bytes"],
        ["port", "port:missing"],
        ["proto=tcp", "proto=udp", "proto=<unknown>"],
    ]


def test_rate_zero_is_identity_and_never_modifies_the_input() -> None:
    x = batch()
    original = x.clone()
    out = ScarfCorruption(train_matrix(), GROUPS, rate=0.0)(x)
    assert torch.equal(out, original)
    assert out is not x
    assert torch.equal(x, original)


def test_rate_one_replaces_every_group_with_one_train_rows_values() -> None:
    train = torch.from_numpy(train_matrix())
    out = ScarfCorruption(train.numpy(), GROUPS, rate=1.0, seed=7)(batch())
    for row in out:
        for group in GROUPS:
            values = row[group]
            donors = [r for r in range(train.shape[0]) if torch.equal(train[r, group], values)]
            assert donors, f"group {group} of {row.tolist()} is not any train row's group"


def test_groups_take_their_donors_independently() -> None:
    out = ScarfCorruption(train_matrix(), GROUPS, rate=1.0, seed=0)(batch(200))
    x_donor = out[:, 0] - 100  # x = 100 + r identifies the donor of group 0
    y_donor = out[:, 1] - 200  # y = 200 + r identifies the donor of group 1
    assert (x_donor != y_donor).float().mean() > 0.5


def test_one_hot_blocks_stay_one_hot_and_groups_move_together() -> None:
    out = ScarfCorruption(train_matrix(), GROUPS, rate=0.5, seed=1)(batch(500))
    block = out[:, 3:6]
    assert torch.equal(block.sum(dim=1), torch.ones(500))
    assert bool(((block == 0) | (block == 1)).all())
    # y and its missing indicator come from the same row: the original (y < 0, indicator 0) or a
    # train row r (y = 200 + r, indicator r % 2).
    y, indicator = out[:, 1], out[:, 2]
    kept = y < 0
    assert torch.equal(indicator[kept], torch.zeros(int(kept.sum())))
    assert torch.equal(indicator[~kept], (y[~kept] - 200) % 2)


def test_corruption_rate_is_respected_on_average() -> None:
    out = ScarfCorruption(train_matrix(), GROUPS, rate=0.3, seed=2)(batch(2000))
    corrupted_x = (out[:, 0] >= 100).float().mean().item()
    corrupted_y = (out[:, 1] >= 200).float().mean().item()
    # 2000 Bernoulli(0.3) draws: standard deviation ~0.01.
    assert corrupted_x == pytest.approx(0.3, abs=0.05)
    assert corrupted_y == pytest.approx(0.3, abs=0.05)


def test_same_seed_same_views_and_successive_calls_differ() -> None:
    first = ScarfCorruption(train_matrix(), GROUPS, rate=0.6, seed=11)
    second = ScarfCorruption(train_matrix(), GROUPS, rate=0.6, seed=11)
    views = [first(batch()) for _ in range(2)]
    assert all(torch.equal(a, second(batch())) for a in views)
    assert not torch.equal(views[0], views[1])
    assert not torch.equal(views[0], ScarfCorruption(train_matrix(), GROUPS, rate=0.6, seed=12)(batch()))


def test_keeps_dtype() -> None:
    out = ScarfCorruption(train_matrix(), GROUPS, rate=1.0)(batch().double())
    assert out.dtype == torch.float64


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([[0], [1, 2], [3, 4]], r"columns \[5\] belong to no column group"),
        ([[0, 1], [1, 2], [3, 4, 5]], "column 1 is in groups 0 and 1"),
        ([[0], [1, 2], [3, 4, 5, 6]], "outside"),
        ([[0], [], [1, 2, 3, 4, 5]], "empty"),
    ],
)
def test_rejects_groups_that_are_not_a_partition(groups: list[list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScarfCorruption(train_matrix(), groups)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rate"):
        ScarfCorruption(train_matrix(), GROUPS, rate=1.5)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        ScarfCorruption(np.zeros((0, 6), dtype=np.float32), GROUPS)
    with pytest.raises(ValueError, match="NaN"):
        ScarfCorruption(np.full((2, 6), np.nan, dtype=np.float32), GROUPS)
    with pytest.raises(ValueError, match=r"\(b, 6\)"):
        ScarfCorruption(train_matrix(), GROUPS)(torch.zeros(3, 5))
