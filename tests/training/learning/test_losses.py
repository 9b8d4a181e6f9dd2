"""Losses checked against values computed by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from training.learning.losses import (
    ContrastiveLoss,
    EuclideanDistance,
    TripletLoss,
    mine_batch_hard,
    mine_semi_hard,
)


def tensor(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=True)


def labels(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# --------------------------------------------------------------------------- distance
def test_euclidean_distance_matches_hand_values() -> None:
    x = tensor([[0, 0], [3, 4]])
    # (0,0)-(3,4): sqrt(9 + 16) = 5; a point to itself: 0.
    expected = torch.tensor([[0, 5], [5, 0]], dtype=torch.float64)
    assert torch.equal(EuclideanDistance()(x, x), expected)


def test_distance_gradient_is_finite_at_and_near_zero_distance() -> None:
    x = tensor([[1, 2], [1, 2], [1, 2 + 1e-150]])
    distance = EuclideanDistance()
    (grad,) = torch.autograd.grad(distance(x, x).sum(), x)
    assert torch.isfinite(grad).all()
    assert grad.abs().max() <= 4  # each of the 4 terms touching a row contributes at most 1


# ------------------------------------------------------------------------ contrastive
# Points: p0=(0,0) label 0, p1=(0,0.6) label 1, p2=(3,4) label 1; margin 1.
#   (p0,p1): d = 0.6, negative -> 0.5 * (1 - 0.6)^2 = 0.5 * 0.16 = 0.08
#   (p0,p2): d = 5,   negative -> beyond the margin -> 0
#   (p1,p2): d^2 = 3^2 + 3.4^2 = 9 + 11.56 = 20.56, positive -> 0.5 * 20.56 = 10.28
CONTRASTIVE_POINTS: list[list[float]] = [[0, 0], [0, 0.6], [3, 4]]
CONTRASTIVE_LABELS = [0, 1, 1]


def test_contrastive_balanced_is_mean_positive_plus_mean_negative() -> None:
    loss = ContrastiveLoss(margin=1.0, balance=True)(tensor(CONTRASTIVE_POINTS), labels(CONTRASTIVE_LABELS))
    # mean positive 10.28 + mean negative (0.08 + 0) / 2 = 10.28 + 0.04
    assert loss.item() == pytest.approx(10.32, abs=1e-6)


def test_contrastive_unbalanced_is_mean_over_all_pairs() -> None:
    loss = ContrastiveLoss(margin=1.0, balance=False)(tensor(CONTRASTIVE_POINTS), labels(CONTRASTIVE_LABELS))
    # (10.28 + 0.08 + 0) / 3
    assert loss.item() == pytest.approx(10.36 / 3, abs=1e-6)


def test_contrastive_negative_beyond_margin_costs_nothing() -> None:
    points = tensor([[0, 0], [3, 4]])  # d = 5
    assert ContrastiveLoss(margin=1.0)(points, labels([0, 1])).item() == 0.0
    # margin 6: 0.5 * (6 - 5)^2 = 0.5
    assert ContrastiveLoss(margin=6.0)(points, labels([0, 1])).item() == pytest.approx(0.5, abs=1e-6)


def test_contrastive_only_positives_drops_the_negative_term() -> None:
    # d = 5, positive: 0.5 * 25 = 12.5; no negative pair, so no negative term
    loss = ContrastiveLoss(margin=1.0, balance=True)(tensor([[0, 0], [3, 4]]), labels([7, 7]))
    assert loss.item() == pytest.approx(12.5, abs=1e-6)


def test_contrastive_single_row_is_a_connected_zero() -> None:
    x = tensor([[1, 2]])
    loss = ContrastiveLoss()(x, labels([0]))
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- triplet
# On the x axis (y = 0): a=0 (label 0), p=2 (label 0), n1=1 (label 1), n2=2.5 (label 2); margin 1.
# Only a and p have a positive, so only they are anchors.
#   from a: d(a,p)=2, d(a,n1)=1, d(a,n2)=2.5      from p: d(p,a)=2, d(p,n1)=1, d(p,n2)=0.5
# batch-hard: a -> (p, n1): 2 - 1 + 1 = 2;  p -> (a, n2): 2 - 0.5 + 1 = 2.5;  mean 2.25
# semi-hard (2 < d_an < 3): a -> n2 (2.5): 2 - 2.5 + 1 = 0.5;
#   p has no negative in (2, 3) -> hardest n2 (0.5): 2.5;  mean (0.5 + 2.5) / 2 = 1.5
TRIPLET_POINTS: list[list[float]] = [[0, 0], [2, 0], [1, 0], [2.5, 0]]
TRIPLET_LABELS = [0, 0, 1, 2]


def test_batch_hard_matches_hand_value_and_picks_hardest_negative() -> None:
    x, y = tensor(TRIPLET_POINTS), labels(TRIPLET_LABELS)
    anchors, positives, negatives = mine_batch_hard(EuclideanDistance()(x, x), y)
    assert anchors.tolist() == [0, 1]
    assert positives.tolist() == [1, 0]
    assert negatives.tolist() == [2, 3]
    assert TripletLoss(margin=1.0, mining="batch_hard")(x, y).item() == pytest.approx(2.25, abs=1e-6)


def test_semi_hard_matches_hand_value_and_picks_a_different_negative() -> None:
    x, y = tensor(TRIPLET_POINTS), labels(TRIPLET_LABELS)
    anchors, positives, negatives = mine_semi_hard(EuclideanDistance()(x, x), y, margin=1.0)
    assert anchors.tolist() == [0, 1]
    assert positives.tolist() == [1, 0]
    assert negatives.tolist() == [3, 3]  # anchor a: semi-hard n2, not batch-hard's n1
    assert TripletLoss(margin=1.0, mining="semi_hard")(x, y).item() == pytest.approx(1.5, abs=1e-6)


def test_semi_hard_takes_the_closest_of_several_semi_hard_negatives() -> None:
    # x axis: a=0, p=1 (label 0); n1=1.5, n2=1.2 (labels 1, 2): both in (1, 1 + margin 1) -> n2.
    # Anchor a: 1 - 1.2 + 1 = 0.8. Anchor p: d(p,a)=1; d(p,n1)=0.5, d(p,n2)=0.2, none in (1, 2)
    # -> hardest n2: 1 - 0.2 + 1 = 1.8. Mean (0.8 + 1.8) / 2 = 1.3.
    x, y = tensor([[0, 0], [1, 0], [1.5, 0], [1.2, 0]]), labels([0, 0, 1, 2])
    _, _, negatives = mine_semi_hard(EuclideanDistance()(x, x), y, margin=1.0)
    assert negatives.tolist() == [3, 3]
    assert TripletLoss(margin=1.0, mining="semi_hard")(x, y).item() == pytest.approx(1.3, abs=1e-6)


def test_triplet_easy_negatives_cost_nothing() -> None:
    # a=(0,0), p=(0,1) label 0; n=(3,4) label 1. a: 1 - 5 + 0.2 < 0; p: 1 - sqrt(9 + 9) + 0.2 < 0
    x, y = tensor([[0, 0], [0, 1], [3, 4]]), labels([0, 0, 1])
    for mining in ("batch_hard", "semi_hard"):
        assert TripletLoss(margin=0.2, mining=mining)(x, y).item() == 0.0


@pytest.mark.parametrize("values", [[0, 0, 0], [0, 1, 2]])
@pytest.mark.parametrize("mining", ["batch_hard", "semi_hard"])
def test_no_triplet_gives_a_connected_zero(values: list[int], mining: str) -> None:
    x = tensor([[0, 0], [1, 0], [0, 1]])
    loss = TripletLoss(mining=mining)(x, labels(values))  # type: ignore[arg-type]
    assert loss.item() == 0.0
    (grad,) = torch.autograd.grad(loss, x)
    assert torch.equal(grad, torch.zeros_like(x))


def test_gradients_are_finite_when_embeddings_coincide() -> None:
    # Rows 0, 1 and 2 coincide: a zero-distance positive pair (0, 1) and negative pairs (0, 2), (1, 2).
    x, y = tensor([[0, 0], [0, 0], [0, 0], [1, 0]]), labels([0, 0, 1, 1])
    losses = [
        ContrastiveLoss(margin=2.0)(x, y),
        TripletLoss(margin=0.5, mining="batch_hard")(x, y),
        TripletLoss(margin=0.5, mining="semi_hard")(x, y),
    ]
    for loss in losses:
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(loss)
        assert torch.isfinite(grad).all()
    (grad,) = torch.autograd.grad(ContrastiveLoss(margin=2.0)(x, y), x)
    assert grad.abs().sum() > 0  # the (0,3), (1,3) negatives at d = 1 < margin 2 still push


# ----------------------------------------------------------------------- input checks
@pytest.mark.parametrize(
    ("embeddings", "label_values", "message"),
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), "2-D"),
        (torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, dtype=torch.long), "floating-point"),
        (torch.tensor([[0.0, math.nan], [1.0, 1.0]]), torch.zeros(2, dtype=torch.long), "NaN"),
        (torch.tensor([[0.0, math.inf], [1.0, 1.0]]), torch.zeros(2, dtype=torch.long), "infinite"),
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), "length 2"),
        (torch.zeros(3, 2), torch.zeros(3, 1, dtype=torch.long), "1-D"),
        (torch.zeros(3, 2), torch.zeros(3), "integer"),
    ],
)
def test_labelled_losses_reject_bad_inputs(embeddings: torch.Tensor, label_values: torch.Tensor, message: str) -> None:
    for loss in (ContrastiveLoss(), TripletLoss()):
        with pytest.raises(ValueError, match=message):
            loss(embeddings, label_values)


def test_constructors_reject_bad_parameters() -> None:
    with pytest.raises(ValueError, match="margin"):
        ContrastiveLoss(margin=-1.0)
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=math.nan)
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="hardest")  # type: ignore[arg-type]


def brute_force_semi_hard(dist: list[list[float]], y: list[int], margin: float) -> list[tuple[int, int, int]]:
    triplets = []
    n = len(y)
    for a in range(n):
        negatives = [j for j in range(n) if y[j] != y[a]]
        for p in (j for j in range(n) if j != a and y[j] == y[a] and negatives):
            semi = [j for j in negatives if dist[a][p] < dist[a][j] < dist[a][p] + margin]
            pool = semi or negatives
            triplets.append((a, p, min(pool, key=lambda j: (dist[a][j], j))))
    return triplets


@pytest.mark.parametrize("seed", range(20))
def test_semi_hard_mining_matches_a_brute_force_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 25, (1,), generator=generator))
    # Integer coordinates make equal distances (ties) and duplicated rows common.
    x = torch.randint(-2, 3, (n, 2), generator=generator).double()
    y = torch.randint(0, 4, (n,), generator=generator)
    dist = EuclideanDistance()(x, x)
    for margin in (0.0, 0.5, 1.5):
        mined = list(zip(*(t.tolist() for t in mine_semi_hard(dist, y, margin)), strict=True))
        assert mined == brute_force_semi_hard(dist.tolist(), y.tolist(), margin)


@pytest.mark.parametrize("rows", [0, 1])
def test_tiny_batches_give_a_connected_zero(rows: int) -> None:
    x = torch.ones(rows, 3, requires_grad=True)
    for loss in (ContrastiveLoss()(x, labels([0] * rows)), TripletLoss(mining="semi_hard")(x, labels([0] * rows))):
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.equal(grad, torch.zeros_like(x))


def test_negatives_loss_by_hand() -> None:
    # normals (0,0) and (0,1); outliers (0,0.5) and (3,4). Margin 1.
    # distances: (0,0)-(0,0.5)=0.5 -> 0.5*(0.5)^2=0.125; (0,0)-(3,4)=5 -> 0;
    #            (0,1)-(0,0.5)=0.5 -> 0.125;           (0,1)-(3,4)=sqrt(9+9)=4.24 -> 0.
    # mean over the 4 pairs = 0.25 / 4 = 0.0625
    loss = ContrastiveLoss(margin=1.0)
    z = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    zn = torch.tensor([[0.0, 0.5], [3.0, 4.0]], requires_grad=True)
    value = loss.negatives_loss(z, zn)
    assert value.item() == pytest.approx(0.0625)
    value.backward()
    assert zn.grad is not None and torch.isfinite(zn.grad).all()
    assert zn.grad[1].abs().sum().item() == 0.0  # beyond the margin: no gradient


# ------------------------------------------------------------- contrastive, soft targets
def test_soft_contrastive_by_hand() -> None:
    # The contrastive points (margin 1): pair distances d01 = 0.6, d02 = 5, d12 = sqrt(20.56).
    #   affinities p01 = 0.5, p02 = 0, p12 = 0.25
    #   positive part, weights p: (0.5 * 0.5 * 0.36 + 0 + 0.25 * 10.28) / 0.75 = (0.09 + 2.57) / 0.75
    #   negative part, weights 1 - p: (0.5 * 0.08 + 1 * 0 + 0.75 * 0) / 2.25 = 0.04 / 2.25
    affinity = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.25], [0.0, 0.25, 1.0]], dtype=torch.float64)
    loss = ContrastiveLoss(margin=1.0).soft_loss(tensor(CONTRASTIVE_POINTS), affinity)
    assert loss.item() == pytest.approx(2.66 / 0.75 + 0.04 / 2.25, abs=1e-9)
    unbalanced = ContrastiveLoss(margin=1.0, balance=False).soft_loss(tensor(CONTRASTIVE_POINTS), affinity)
    # per pair p * pos + (1 - p) * neg: 0.09 + 0.04, 0, 2.57; mean over 3 pairs
    assert unbalanced.item() == pytest.approx((0.13 + 2.57) / 3, abs=1e-9)


@pytest.mark.parametrize("balance", [True, False])
def test_soft_contrastive_with_zero_one_affinity_is_the_labelled_loss(balance: bool) -> None:
    points = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    values = labels([0, 1, 1, 2, 0, 2, 2])
    affinity = (values[:, None] == values[None, :]).to(torch.float64)
    criterion = ContrastiveLoss(margin=1.5, balance=balance)
    assert criterion.soft_loss(points, affinity).item() == pytest.approx(criterion(points, values).item(), abs=1e-12)


def test_soft_contrastive_rejects_bad_affinity() -> None:
    points = tensor(CONTRASTIVE_POINTS)
    with pytest.raises(ValueError, match=r"float \(3, 3\)"):
        ContrastiveLoss().soft_loss(points, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ContrastiveLoss().soft_loss(points, torch.full((3, 3), 1.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ContrastiveLoss().soft_loss(points, torch.full((3, 3), float("nan")))
