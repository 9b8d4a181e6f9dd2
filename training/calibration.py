"""Centroids, radii, threshold and explainer statistics from embedded training normals.

* Each normal class gets ``k`` centroids: k-means inside the class in embedding space, with a
  budget of centroids shared between classes in proportion to their size
  (:func:`centroid_counts`), placed on the rows the encoder trained on; the rows it held out for
  early stopping set the embedding term's scale (:func:`placement_rows`).
* A centroid's radius is the root-mean-square distance of its members, shrunk toward the
  global value with ``shrinkage`` pseudo-members, so that a small cluster cannot get a tiny
  radius and turn every visitor into an anomaly; ``None`` = one shared radius.
* The input-space term of the score (:class:`detector.input_neighbours.InputNeighbours`): as
  many reference points as the worker's per-event budget of multiply-adds allows (``budget //
  features``, at least :data:`MIN_INPUT_POINTS`): the training rows themselves when there are no
  more, else that many k-means centroids of them. Its two scales are medians over the training
  normals: the embedding one over the held-out rows above, the input one of leave-one-out
  distances (:func:`leave_one_out_distances`).
* The optional third term (:class:`detector.input_neighbours.GaussTerm`): the numeric columns'
  rank-Gauss map (:func:`fit_rank_gauss`), then one reference point per input reference point's
  members (their mean in the mapped space) and a leave-one-out scale (:func:`fit_gauss_term`).
* The threshold is the conformal (1 - target FPR) order statistic of the held-out calibration
  normals' scores (:func:`detector.scorer.threshold_at_fpr`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from detector.explain import Explainer
from detector.input_neighbours import GaussTerm, InputNeighbours
from detector.rank_gauss import RankGauss
from detector.scorer import EMBEDDING_RESOLUTION, CentroidGeometry, CentroidScorer, threshold_at_fpr
from training.learning.clustering import kmeans

log = logging.getLogger(__name__)

#: Calibration normals expected above the threshold below which the threshold is unreliable.
MIN_EXCEEDANCES = 10
#: Fewest input-space reference points (when the budget divided by the features is smaller).
MIN_INPUT_POINTS = 64
#: Lloyd iterations of the input-space k-means (a coarse quantiser: more barely moves the score).
INPUT_KMEANS_ITERATIONS = 20
#: Most knots of a column's rank-Gauss map (more distinct values: that many, evenly spaced in rank).
MAX_RANK_GAUSS_KNOTS = 512


@dataclass(frozen=True)
class Centroids:
    """Centroid placement: positions ``(K, D)``, class per centroid ``(K,)``, member -> centroid ``(n,)``."""

    positions: NDArray[np.float32]
    centroid_class: NDArray[np.intp]
    assignment: NDArray[np.intp]


def centroid_counts(labels: NDArray[np.intp], n_classes: int, per_class: int, min_members: int = 20) -> list[int]:
    """Centroids per class: up to ``per_class`` each, and no more than one per ``min_members`` rows.

    Every class with members gets at least one, so a small class keeps a single mean. A large
    class usually holds several modes (kinds of "normal"), which is what several centroids are
    for; each class gets its own allowance, so adding classes does not thin out the others.
    """
    sizes = np.bincount(labels, minlength=n_classes)
    return [int(max(1, min(per_class, n // min_members))) if n else 0 for n in sizes]


#: Fewest rows the encoder holds out for early stopping, in every model of a fit, for them to set
#: the embedding term's scale; with fewer, no row is held out of the centroids and the training rows
#: set it, in every model alike (their distances are optimistic, see :func:`placement_rows`). A
#: floor for a median's noise, not a value chosen from the benchmarks.
MIN_UNSEEN_FOR_SCALE = 10


def placement_rows(labels: NDArray[np.intp], unseen: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows to place the centroids on, and rows left out to measure how new normals score.

    ``unseen`` are the rows the encoder held out for early stopping. Training pulls the rows it
    saw toward their centroids by an amount that depends on how long it ran (measured on digits:
    new normals' median embedding distance 1.2-2.2 times the training rows', following the epoch
    early stopping picked), so a scale taken from them differs from one fit to the next, and the
    final model and the cross-fitted fold models disagree. The unseen rows, with centroids and
    radii placed without them, score as new normals do (0.92-1.12 times the test normals' median
    in the same measurement). A class with no seen row keeps all its rows for placement.
    """
    mask = np.zeros(len(labels), dtype=bool)
    mask[unseen] = True
    for c in np.unique(labels[mask]):
        members = labels == c
        if mask[members].all():
            mask[members] = False
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def place_centroids(z: NDArray[np.float32], labels: NDArray[np.intp], counts: list[int], seed: int) -> Centroids:
    """k-means inside each class in embedding space, ``counts[c]`` centroids for class ``c``."""
    positions: list[NDArray[np.float64]] = []
    owner: list[int] = []
    assignment = np.zeros(len(z), dtype=np.intp)
    for c, k in enumerate(counts):
        members = np.flatnonzero(labels == c)
        if len(members) == 0 or k == 0:
            continue
        result = kmeans(z[members], k, seed)
        assignment[members] = len(positions) + result.labels
        positions.extend(result.centroids)
        owner.extend([c] * len(result.centroids))
    return Centroids(np.asarray(positions, dtype=np.float32), np.asarray(owner, dtype=np.intp), assignment)


def radii(z: NDArray[np.float32], centroids: Centroids, shrinkage: float | None) -> NDArray[np.float32]:
    """RMS member distance per centroid, shrunk toward the global RMS with ``shrinkage`` pseudo-members.

    ``shrinkage=None`` gives every centroid the global RMS (one shared radius).
    """
    dist = np.linalg.norm(z - centroids.positions[centroids.assignment], axis=1)
    global_ms = float(np.mean(dist**2)) if len(dist) else 1.0
    if shrinkage is None:
        return np.full(len(centroids.positions), max(math.sqrt(global_ms), EMBEDDING_RESOLUTION), dtype=np.float32)
    out = np.empty(len(centroids.positions), dtype=np.float32)
    for j in range(len(out)):
        d = dist[centroids.assignment == j]
        out[j] = math.sqrt((float(np.sum(d**2)) + shrinkage * global_ms) / (len(d) + shrinkage))
    return np.maximum(out, EMBEDDING_RESOLUTION)


def fit_input_neighbours(
    x: NDArray[np.float32], embedding_scores: NDArray[np.float64], budget: int, seed: int
) -> InputNeighbours | None:
    """The input-space term from the featurized training rows ``x``; ``embedding_scores`` are the
    embedding term of the normals whose median is its scale (any rows: the fit passes those held
    out for early stopping). ``None`` when ``budget`` is 0: embedding score only."""
    return fit_input_terms(x, embedding_scores, budget, seed, n_numeric=0)[0]


def fit_input_terms(
    x: NDArray[np.float32], embedding_scores: NDArray[np.float64], budget: int, seed: int, n_numeric: int
) -> tuple[InputNeighbours | None, GaussTerm | None]:
    """The input-space term and, when ``n_numeric`` > 0 (the first columns of ``x`` that are numeric
    fields), the rank-Gauss term over the same partition of the rows; ``(None, None)`` when
    ``budget`` is 0."""
    if budget <= 0:
        return None, None
    points, owner = _reference_points(x, budget, seed)
    view = InputNeighbours(points, _typical(embedding_scores), _typical(leave_one_out_distances(x, points, owner)))
    return view, fit_gauss_term(x, n_numeric, owner) if n_numeric > 0 else None


def fit_gauss_term(x: NDArray[np.float32], n_numeric: int, owner: NDArray[np.intp]) -> GaussTerm:
    """The rank-Gauss third term from the featurized training rows ``x`` (whose first ``n_numeric``
    columns are the numeric fields): the map, then one reference point per group of rows that share
    an input reference point (``owner``: the rows themselves on small sets; else the input term's
    k-means cells, whose members' mean in the mapped space is the point: no second k-means)."""
    mapping = fit_rank_gauss(x[:, :n_numeric])
    mapped = mapping.apply(x)
    groups, owner = np.unique(owner, return_inverse=True)
    sums = np.zeros((len(groups), mapped.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, mapped)
    points = (sums / np.bincount(owner, minlength=len(groups))[:, None]).astype(np.float32)
    return GaussTerm(mapping, points, _typical(leave_one_out_distances(mapped, points, owner)))


def fit_rank_gauss(columns: NDArray[np.float32]) -> RankGauss:
    """Each column's mid-rank normal quantiles at its distinct training values (at most
    :data:`MAX_RANK_GAUSS_KNOTS` of them, evenly spaced in rank), and its standard deviation."""
    n, width = columns.shape
    inv_cdf = NormalDist().inv_cdf
    knots_x = np.empty((width, MAX_RANK_GAUSS_KNOTS), dtype=np.float64)
    knots_z = np.empty_like(knots_x)
    for j in range(width):
        values, counts = np.unique(columns[:, j].astype(np.float64), return_counts=True)
        mid_rank = np.cumsum(counts) - counts / 2.0
        if len(values) > MAX_RANK_GAUSS_KNOTS:
            keep = np.unique(np.linspace(0, len(values) - 1, MAX_RANK_GAUSS_KNOTS).round().astype(np.intp))
            values, mid_rank = values[keep], mid_rank[keep]
        z = np.array([inv_cdf((r + 0.5) / (n + 1)) for r in mid_rank], dtype=np.float64)
        knots_x[j, : len(values)], knots_x[j, len(values) :] = values, values[-1]
        knots_z[j, : len(z)], knots_z[j, len(z) :] = z, z[-1]
    spread = columns.astype(np.float64).std(axis=0) if n else np.ones(width)
    return RankGauss(knots_x, knots_z, np.where(spread > 1e-12, spread, 1.0))


def _reference_points(x: NDArray[np.float32], budget: int, seed: int) -> tuple[NDArray[np.float32], NDArray[np.intp]]:
    """``budget // features`` reference points (at least :data:`MIN_INPUT_POINTS`; the rows
    themselves when that reaches their number) and the point each row belongs to."""
    n, width = x.shape
    k = min(n, max(MIN_INPUT_POINTS, budget // max(width, 1)))
    if k >= n:
        points, owner = np.asarray(x, dtype=np.float32), np.arange(n, dtype=np.intp)
    else:
        result = kmeans(x, k, seed, n_init=1, max_iter=INPUT_KMEANS_ITERATIONS)
        points, owner = result.centroids.astype(np.float32), result.labels.astype(np.intp)
    return points, owner


def leave_one_out_distances(
    x: NDArray[np.float32], points: NDArray[np.float32], owner: NDArray[np.intp], chunk: int = 1024
) -> NDArray[np.float64]:
    """Distance from each training row to the nearest reference point as if the row had not been
    used to place them: its own point (``owner``, the mean of its ``m`` members) moves to the mean
    of the other members, ``m / (m - 1)`` times as far from the row, and is gone when ``m = 1``
    (the row itself). In-sample distances would shrink as the points approach one per row (and a
    cross-fitted fold model, with fewer rows per point, would scale differently from the final one);
    these estimate what a new normal row gets."""
    data = x.astype(np.float64)
    members = np.bincount(owner, minlength=len(points)).astype(np.float64)
    shared = members > 1
    stretch = np.divide(members, members - 1, out=np.ones_like(members), where=shared)
    ref = points.astype(np.float64)
    ref_sq = (ref**2).sum(axis=1)
    out = np.empty(len(data), dtype=np.float64)
    for lo in range(0, len(data), chunk):
        part, own = data[lo : lo + chunk], owner[lo : lo + chunk]
        d2 = np.maximum((part**2).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * part @ ref.T, 0.0)
        rows = np.arange(len(part))
        own_distance = np.where(shared[own], np.sqrt(d2[rows, own]) * stretch[own], np.inf)
        d2[rows, own] = np.inf
        out[lo : lo + chunk] = np.minimum(np.sqrt(d2.min(axis=1)), own_distance)
    return out


def _typical(values: NDArray[np.float64]) -> float:
    """Median, else mean when over half are zero (duplicate rows), else 1: a positive scale."""
    for value in (float(np.median(values)), float(np.mean(values))):
        if value > 1e-9:
            return value
    return 1.0


def calibrate_threshold(scores: NDArray[np.float64], target_fpr: float) -> tuple[float, list[str]]:
    """Threshold at ``target_fpr`` and warnings about the calibration set's size."""
    warnings: list[str] = []
    n = len(scores)
    expected = n * target_fpr
    if (n + 1) * target_fpr < 1:
        warnings.append(
            f"only {n} calibration normals: no threshold holds target FPR {target_fpr} (that needs at least "
            f"{math.ceil(1 / target_fpr - 1)}); the threshold is their highest score, which new normals exceed "
            f"at a rate of about 1/{n + 1} = {1 / (n + 1):.3f}"
        )
    elif expected < MIN_EXCEEDANCES:
        warnings.append(
            f"only {n} calibration normals: at target FPR {target_fpr} about {expected:.1f} lie above "
            f"the threshold (want >= {MIN_EXCEEDANCES}, i.e. >= {math.ceil(MIN_EXCEEDANCES / target_fpr)} "
            "calibration rows); the realised false-positive rate will be noisy"
        )
    for message in warnings:
        log.info("calibration_set_small", extra={"detail": message})
    return threshold_at_fpr(scores, target_fpr), warnings


def build_geometry(centroids: Centroids, radius: NDArray[np.float32], class_names: list[str]) -> CentroidGeometry:
    """The normal classes in embedding space, without a threshold (raw scores for calibration)."""
    return CentroidGeometry(centroids.positions, centroids.centroid_class, class_names, radius)


def build_scorer(
    centroids: Centroids,
    radius: NDArray[np.float32],
    class_names: list[str],
    calibration_scores: NDArray[np.float64],
    threshold: float,
    input_neighbours: InputNeighbours | None = None,
) -> CentroidScorer:
    """Assemble the scorer from its fitted parts."""
    return CentroidScorer(
        centroids.positions,
        centroids.centroid_class,
        class_names,
        radius,
        calibration_scores,
        threshold,
        input_neighbours,
    )


def build_explainer(x: NDArray[np.float32], centroids: Centroids, column_fields: list[str]) -> Explainer:
    """Per-centroid mean and spread of the members' featurized rows."""
    k = len(centroids.positions)
    mean = np.zeros((k, x.shape[1]), dtype=np.float32)
    spread = np.ones((k, x.shape[1]), dtype=np.float32)
    for j in range(k):
        members = x[centroids.assignment == j]
        if len(members):
            mean[j] = members.mean(0)
            spread[j] = members.std(0)
    return Explainer(mean, spread, column_fields)


def score_quantiles(scores: NDArray[np.float64]) -> dict[str, float]:
    """Calibration score quantiles exported for drift monitoring."""
    return {q: float(np.quantile(scores, float(q))) for q in ("0.5", "0.9", "0.99")}
