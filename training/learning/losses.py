"""Metric-learning losses: contrastive (hard and soft pair targets) and triplet (batch-hard / semi-hard mining).

Shaped after pytorch-metric-learning: a small base class (:class:`LabelledMetricLoss`) checks
the inputs once, each loss implements a short ``compute_loss``, and the distance is injected
(default :class:`EuclideanDistance`). Every loss returns a scalar; a batch without a usable pair
or triplet gives ``0``, still connected to the embeddings, so ``backward()`` never fails.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Literal, Protocol, get_args

import torch
from torch import Tensor, nn

Mining = Literal["batch_hard", "semi_hard"]


class Distance(Protocol):
    """A distance between embeddings; larger = farther apart."""

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """All pairs: ``(n, d)`` and ``(m, d)`` -> ``(n, m)``."""


class EuclideanDistance:
    """Euclidean (L2) distance, exact, with a finite gradient everywhere.

    ``sqrt(|x - y|^2)`` through autograd has an infinite gradient at ``x == y`` (a duplicated
    row would turn every gradient into NaN). ``torch.cdist`` and ``torch.linalg.vector_norm``
    have their own backward: ``(x - y) / d``, bounded by 1, and defined as 0 at ``d == 0``. The
    matrix form avoids the ``|x|^2 + |y|^2 - 2xy`` expansion, which cancels badly for nearby
    points (distances off by ~1e-3 and wrong gradients in float32).
    """

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        distances: Tensor = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
        return distances


# ------------------------------------------------------------------------ input checks
def check_embeddings(embeddings: Tensor, name: str = "embeddings") -> None:
    """Raise ValueError unless ``embeddings`` is a finite, floating-point ``(n, d)`` tensor."""
    if not isinstance(embeddings, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(embeddings).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {embeddings.dtype}")
    if not bool(torch.isfinite(embeddings).all()):
        raise ValueError(f"{name} contain NaN or infinite values")


def check_labels(labels: Tensor, n: int, name: str = "labels") -> None:
    """Raise ValueError unless ``labels`` is a 1-D integer (or bool) tensor of length ``n``."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must be an integer or bool tensor, got {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has length {labels.shape[0]} but there are {n} embeddings")


def _check_margin(margin: float) -> float:
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    return float(margin)


def zero_loss(first: Tensor, *others: Tensor) -> Tensor:
    """A scalar ``0`` that keeps a gradient path to the given tensors (their gradients are zeros)."""
    return sum((t.sum() * 0.0 for t in others), start=first.sum() * 0.0)


class LabelledMetricLoss(nn.Module, ABC):
    """Base of losses called as ``loss(embeddings, labels)``; same label = similar.

    Args:
        distance: distance between embeddings; default :class:`EuclideanDistance`.
    """

    def __init__(self, distance: Distance | None = None) -> None:
        super().__init__()
        self.distance: Distance = distance if distance is not None else EuclideanDistance()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Check ``embeddings`` (``(n, d)``, finite, float) and ``labels`` (``(n,)``, integer); return a scalar.

        Raises:
            ValueError: wrong shape, dtype, length, or non-finite embeddings.
        """
        check_embeddings(embeddings)
        check_labels(labels, embeddings.shape[0])
        return self.compute_loss(embeddings, labels.to(embeddings.device))

    @abstractmethod
    def compute_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss on already-checked inputs."""


# ----------------------------------------------------------------------- contrastive
class ContrastiveLoss(LabelledMetricLoss):
    """Pair-based contrastive loss (Hadsell, Chopra & LeCun, 2006).

    A positive pair (same label) costs ``0.5 * d^2``; a negative pair costs
    ``0.5 * max(0, margin - d)^2``, so negatives at least ``margin`` apart cost nothing.

    Args:
        margin: distance beyond which negative pairs cost nothing (embedding units).
        balance: if True the loss is the mean over positive pairs plus the mean over negative
            pairs (a term is dropped when the batch has no such pair), so the usually far more
            numerous negatives do not drown the positives; if False, the mean over all pairs.
        distance: distance between embeddings; default :class:`EuclideanDistance`.
    """

    def __init__(self, margin: float = 0.5, balance: bool = True, distance: Distance | None = None) -> None:
        super().__init__(distance)
        self.margin = _check_margin(margin)
        self.balance = balance

    def compute_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Every unordered pair ``i < j`` of the batch is one Siamese pair."""
        n = embeddings.shape[0]
        first, second = torch.triu_indices(n, n, offset=1, device=embeddings.device)
        dist = self.distance(embeddings, embeddings)[first, second]
        return self._reduce(dist, labels[first] == labels[second], embeddings)

    def negatives_loss(self, z: Tensor, z_negative: Tensor) -> Tensor:
        """Every pair ``(z[i], z_negative[j])`` is negative: mean of ``0.5 * max(0, margin - d)^2``.

        Used for outlier exposure: synthetic outliers must lie beyond the margin from every
        normal row, while the outliers themselves are not pulled together or pushed apart.
        """
        check_embeddings(z, "z")
        check_embeddings(z_negative, "z_negative")
        if z.shape[0] == 0 or z_negative.shape[0] == 0:
            return zero_loss(z, z_negative)
        return (0.5 * torch.relu(self.margin - self.distance(z, z_negative)).pow(2)).mean()

    def soft_loss(self, embeddings: Tensor, affinity: Tensor) -> Tensor:
        """Contrastive loss with soft pair targets (every unordered pair ``i < j`` of the batch).

        A pair with affinity ``p`` in ``[0, 1]`` is a positive with weight ``p`` and a negative
        with weight ``1 - p``: it costs ``p * 0.5 * d^2 + (1 - p) * 0.5 * max(0, margin - d)^2``.
        With ``balance`` the two parts are weighted means (weights ``p`` and ``1 - p``), so an
        affinity of only 0s and 1s gives exactly the labelled loss.

        Args:
            embeddings: ``(n, d)`` embeddings.
            affinity: ``(n, n)`` pair targets (e.g. the co-association of several clusterings);
                only the upper triangle is read.

        Raises:
            ValueError: wrong shapes, or values outside ``[0, 1]`` / non-finite.
        """
        check_embeddings(embeddings)
        n = embeddings.shape[0]
        if affinity.shape != (n, n) or not affinity.is_floating_point():
            shape = tuple(affinity.shape)
            raise ValueError(f"affinity must be a float ({n}, {n}) tensor, got {affinity.dtype} {shape}")
        if not bool(((affinity >= 0) & (affinity <= 1)).all()):
            raise ValueError("affinity values must lie in [0, 1]")
        first, second = torch.triu_indices(n, n, offset=1, device=embeddings.device)
        dist = self.distance(embeddings, embeddings)[first, second]
        p = affinity.to(embeddings)[first, second]
        positive = 0.5 * dist.pow(2)
        negative = 0.5 * torch.relu(self.margin - dist).pow(2)
        if not self.balance:
            return (p * positive + (1 - p) * negative).mean() if n > 1 else zero_loss(embeddings)
        terms = [(w * t).sum() / w.sum() for w, t in ((p, positive), (1 - p, negative)) if float(w.sum()) > 0]
        return sum(terms, start=zero_loss(embeddings))

    def _reduce(self, dist: Tensor, same: Tensor, first: Tensor, *others: Tensor) -> Tensor:
        positive = 0.5 * dist[same].pow(2)
        negative = 0.5 * torch.relu(self.margin - dist[~same]).pow(2)
        if self.balance:
            terms = [t.mean() for t in (positive, negative) if t.numel() > 0]
        else:
            terms = [torch.cat([positive, negative]).mean()] if dist.numel() > 0 else []
        return sum(terms, start=zero_loss(first, *others))


# --------------------------------------------------------------------------- triplet
Triplets = tuple[Tensor, Tensor, Tensor]


def _positive_negative_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def mine_batch_hard(dist: Tensor, labels: Tensor) -> Triplets:
    """For each anchor, its farthest positive and closest negative (Hermans et al., 2017).

    Args:
        dist: ``(n, n)`` distance matrix.
        labels: ``(n,)`` labels.

    Returns:
        ``(anchor, positive, negative)`` index tensors, one triplet per anchor that has both a
        positive and a negative; anchors lacking either are skipped. Ties go to the lowest index.
    """
    pos_mask, neg_mask = _positive_negative_masks(labels)
    anchors = torch.nonzero(pos_mask.any(dim=1) & neg_mask.any(dim=1)).flatten()
    d = dist.detach()[anchors]
    positives = d.masked_fill(~pos_mask[anchors], -math.inf).argmax(dim=1)
    negatives = d.masked_fill(~neg_mask[anchors], math.inf).argmin(dim=1)
    return anchors, positives, negatives


def mine_semi_hard(dist: Tensor, labels: Tensor, margin: float) -> Triplets:
    """For each (anchor, positive) pair, a semi-hard negative (Schroff et al., 2015).

    Semi-hard: ``d_ap < d_an < d_ap + margin``; the closest such negative is taken. When none
    exists the hardest (closest) negative is taken instead.

    Args:
        dist: ``(n, n)`` distance matrix.
        labels: ``(n,)`` labels.
        margin: the triplet margin.

    Returns:
        ``(anchor, positive, negative)`` index tensors, one triplet per ordered positive pair
        whose anchor has at least one negative.
    """
    pos_mask, neg_mask = _positive_negative_masks(labels)
    anchors, positives = torch.nonzero(pos_mask & neg_mask.any(dim=1, keepdim=True), as_tuple=True)
    if anchors.numel() == 0:
        return anchors, positives, positives
    d = dist.detach().contiguous()
    # Each anchor's negatives sorted by distance (non-negatives last, at +inf; ties by index).
    # Searching every d[a, j] in row a finds the first negative farther than j, all in
    # O(n^2 log n) instead of an (n_pairs, n) comparison.
    sorted_d, order = d.masked_fill(~neg_mask, math.inf).sort(dim=1, stable=True)
    first_farther = torch.searchsorted(sorted_d, d, right=True).clamp_(max=d.shape[1] - 1)
    slot = first_farther[anchors, positives]
    d_ap, candidate = d[anchors, positives], sorted_d[anchors, slot]
    semi_hard = (candidate > d_ap) & (candidate < d_ap + margin)
    return anchors, positives, torch.where(semi_hard, order[anchors, slot], order[anchors, 0])


class TripletLoss(LabelledMetricLoss):
    """Triplet margin loss ``mean(max(0, d_ap - d_an + margin))`` with online mining.

    Args:
        margin: required gap between the anchor-negative and anchor-positive distances.
        mining: ``"batch_hard"`` (one triplet per anchor: hardest positive, hardest negative)
            or ``"semi_hard"`` (one triplet per positive pair, see :func:`mine_semi_hard`).
        distance: distance between embeddings; default :class:`EuclideanDistance`.
    """

    def __init__(self, margin: float = 0.2, mining: Mining = "batch_hard", distance: Distance | None = None) -> None:
        super().__init__(distance)
        if mining not in get_args(Mining):
            raise ValueError(f"mining must be one of {get_args(Mining)}, got {mining!r}")
        self.margin = _check_margin(margin)
        self.mining: Mining = mining

    def mine(self, dist: Tensor, labels: Tensor) -> Triplets:
        """The ``(anchor, positive, negative)`` indices this loss averages over."""
        if self.mining == "batch_hard":
            return mine_batch_hard(dist, labels)
        return mine_semi_hard(dist, labels, self.margin)

    def compute_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Mean hinge over the mined triplets; a connected zero when there are none."""
        dist = self.distance(embeddings, embeddings)
        anchor, positive, negative = self.mine(dist, labels)
        if anchor.numel() == 0:
            return zero_loss(embeddings)
        return torch.relu(dist[anchor, positive] - dist[anchor, negative] + self.margin).mean()
