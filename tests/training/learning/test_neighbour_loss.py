"""The local neighbour term: scale-free, zero when the embedding keeps the input's neighbourhoods."""

from __future__ import annotations

import torch

from training.learning.objective import neighbour_loss


def test_zero_for_a_scaled_copy_and_positive_when_neighbours_move() -> None:
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    assert float(neighbour_loss(x, 3 * x, k=2)) < 1e-10
    assert float(neighbour_loss(x, x[[3, 2, 1, 0]], k=2)) > 0.01


def test_one_row_gives_zero() -> None:
    x = torch.ones(1, 3)
    assert float(neighbour_loss(x, x)) == 0.0
