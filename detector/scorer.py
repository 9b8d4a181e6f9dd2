"""Centroid scorer: distance to the nearest normal-class centroid, radius-normalised.

Embedding score: the Euclidean distance in embedding space from an event to a centroid, divided
by that centroid's radius (a typical distance of its own training members to it). A score of 1
means "as far as a typical member"; **higher = more anomalous**. The embedding score of an event
is the minimum over all centroids; each normal class may own several centroids (multi-modal
classes). With :class:`detector.input_neighbours.InputNeighbours` (every model trained since it
exists) the score is that embedding score plus the distance to the nearest normal reference point
in the featurized input space, each divided by its median over training normals that did not
shape it: a typical new normal then scores about 2.

Geometry and thresholding are separate: :class:`CentroidGeometry` knows where the normal classes
are and measures how far an embedding is from the nearest (what training needs to calibrate);
:class:`CentroidScorer` adds the decision: ``threshold`` is the conformal (1 - target FPR) order
statistic of scores on held-out calibration normals (:func:`threshold_at_fpr`), and the p-value of
a score is the share of calibration normals that score at least as high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from detector.errors import ArtifactError
from detector.input_neighbours import InputNeighbours

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]


@dataclass(frozen=True)
class ScoreResult:
    """Per-event results for a batch of ``n`` events (all arrays have length ``n``).

    Attributes:
        score: the detector's score (higher = more anomalous): the embedding score, plus the
            input-space distance term when the scorer has one (see the module docstring).
        flagged: ``score > threshold``.
        nearest_class: index into :attr:`CentroidScorer.class_names`.
        nearest_centroid: index of the nearest centroid (in the order the centroids were given).
        distance: raw embedding distance to the nearest centroid.
        margin: runner-up class score minus the nearest class score (``inf`` with one class).
        p_value: empirical p-value against the calibration scores, in ``(0, 1]``.
    """

    score: F64
    flagged: NDArray[np.bool_]
    nearest_class: NDArray[np.intp]
    nearest_centroid: NDArray[np.intp]
    distance: F64
    margin: F64
    p_value: F64


#: Distances on the unit sphere below this are float32 noise, read as 0; also the smallest radius
#: a centroid gets (a class whose rows all embed alike).
EMBEDDING_RESOLUTION = 1e-5


def threshold_at_fpr(calibration_scores: F64, target_fpr: float) -> float:
    """The conformal threshold: the k-th smallest of the n calibration scores, k = ⌈(n+1)(1 − target_fpr)⌉.

    A new normal exchangeable with the calibration normals then scores above it with probability
    (n + 1 − k) / (n + 1) ≤ ``target_fpr``, and ``score > threshold`` exactly when the score's
    p-value (:meth:`CentroidScorer.p_values`) is at most ``target_fpr``. (The empirical quantile
    used before, one order statistic lower for about half of all n, flagged new normals at up to
    1/(n+1) above the target: 1.64% at a 1% target with 120 calibration normals.) With fewer than
    1/target_fpr − 1 normals no calibration score holds the target: the largest is used, which new
    normals exceed with probability 1/(n+1) (``training.calibration`` warns).
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    n = len(calibration_scores)
    if n == 0:
        raise ValueError("no calibration scores")
    k = min(n, max(1, math.ceil((n + 1) * (1.0 - target_fpr) - 1e-9)))  # 1e-9: (n+1)(1-α) just above an integer
    return float(np.partition(np.asarray(calibration_scores, dtype=np.float64), k - 1)[k - 1])


@dataclass(frozen=True)
class Nearest:
    """How far each of ``n`` embeddings is from the normal classes (all arrays have length ``n``).

    Attributes:
        score: radius-normalised distance to the nearest centroid (higher = more anomalous).
        class_index: index into :attr:`CentroidGeometry.class_names` of the nearest class.
        centroid: index of the nearest centroid (in the order the centroids were given).
        distance: raw embedding distance to the nearest centroid.
        margin: runner-up class score minus the nearest class score (``inf`` with one class).
    """

    score: F64
    class_index: NDArray[np.intp]
    centroid: NDArray[np.intp]
    distance: F64
    margin: F64


class CentroidGeometry:
    """The normal classes in embedding space: centroids, their classes and radii (no threshold).

    Args:
        centroids: ``(K, D)`` centroid positions in embedding space.
        centroid_class: ``(K,)`` class index of each centroid.
        class_names: names of the normal classes.
        radius: ``(K,)`` positive radius of each centroid.

    Raises:
        ArtifactError: inconsistent shapes, radii or class indices.
    """

    def __init__(self, centroids: F32, centroid_class: NDArray[np.intp], class_names: list[str], radius: F32) -> None:
        k = centroids.shape[0]
        if centroids.ndim != 2 or k == 0:
            raise ArtifactError("centroids must be a non-empty (K, D) matrix")
        if not np.all(np.isfinite(centroids)):
            raise ArtifactError("centroids must be finite")
        if centroid_class.shape != (k,) or radius.shape != (k,):
            raise ArtifactError("centroid_class and radius must have one entry per centroid")
        if np.any(radius <= 0) or not np.all(np.isfinite(radius)):
            raise ArtifactError("radii must be positive and finite")
        if centroid_class.min() < 0 or centroid_class.max() >= len(class_names):
            raise ArtifactError("centroid_class refers to an unknown class")
        # Centroids keep their given order (centroid indices are shared with the explainer's per-centroid
        # statistics); the per-class minimum reads them through a by-class permutation instead.
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.centroid_class = centroid_class.astype(np.intp)
        self.radius = radius.astype(np.float32)
        self.class_names = list(class_names)
        # ||z - c||^2 = ||z||^2 + ||c||^2 - 2 z.c in float32 (one matrix product, in-place adds):
        # about twice as fast per batch as in float64, error ~1e-7 on unit-norm embeddings.
        self._minus_two_t = np.ascontiguousarray(-2.0 * self.centroids.T)
        self._sq_norm = (self.centroids.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
        order = np.argsort(self.centroid_class, kind="stable")
        self._by_class: NDArray[np.intp] | None = None if np.all(np.diff(order) > 0) else order
        grouped = self.centroid_class[order]
        self._class_start = np.flatnonzero(np.r_[True, np.diff(grouped) != 0])
        self._present_classes = grouped[self._class_start]

    def distances(self, embeddings: F32) -> F64:
        """``(n, K)`` Euclidean distances from each embedding to each centroid."""
        return self._distances32(embeddings).astype(np.float64)

    def _distances32(self, embeddings: F32) -> F32:
        z = np.asarray(embeddings, dtype=np.float32)
        sq = z @ self._minus_two_t
        sq += self._sq_norm
        sq += (z * z).sum(axis=1, keepdims=True)
        np.maximum(sq, 0.0, out=sq)
        out: F32 = np.sqrt(sq)
        return out

    def nearest(self, embeddings: F32) -> Nearest:
        """The nearest class of each of a ``(n, D)`` batch (one distance computation for the batch)."""
        dist = self._distances32(embeddings)
        normalised = dist / self.radius
        grouped = normalised if self._by_class is None else normalised[:, self._by_class]
        per_class = np.minimum.reduceat(grouped, self._class_start, axis=1)
        n = dist.shape[0]
        nearest_centroid = np.argmin(normalised, axis=1)
        # The nearest centroid's distance again from z - c itself (the expansion's float32 rounding
        # is ~3e-4 on unit-norm embeddings), and below EMBEDDING_RESOLUTION it is 0: the same row
        # embeds ~1e-7 apart in batches of other sizes. Divided by a tight radius, either noise
        # scored the training rows of a constant class as anomalous.
        offset = np.asarray(embeddings, dtype=np.float64) - self.centroids[nearest_centroid]
        distance = np.sqrt(np.einsum("ij,ij->i", offset, offset))
        distance[distance < EMBEDDING_RESOLUTION] = 0.0
        score = distance / self.radius[nearest_centroid]
        if per_class.shape[1] > 1:
            runner_up = np.partition(per_class, 1, axis=1)[:, 1]
            margin = np.maximum(runner_up - score, 0.0)
        else:
            margin = np.full(n, np.inf)
        return Nearest(
            score=score,
            # The class of the centroid the score and the explanation use (on an exact tie between
            # two classes' centroids the per-class minimum could name the other; found in review).
            class_index=self.centroid_class[nearest_centroid],
            centroid=nearest_centroid,
            distance=distance,
            margin=margin.astype(np.float64),
        )


class CentroidScorer:
    """A :class:`CentroidGeometry` plus the decision: threshold and calibration p-values.

    Args:
        centroids: ``(K, D)`` centroid positions in embedding space.
        centroid_class: ``(K,)`` class index of each centroid.
        class_names: names of the normal classes.
        radius: ``(K,)`` positive radius of each centroid.
        calibration_scores: scores of held-out normals (for p-values).
        threshold: flag when ``score > threshold``.
        input_neighbours: the input-space term of the score, or ``None`` (embedding score only:
            models trained before it existed).
    """

    def __init__(
        self,
        centroids: F32,
        centroid_class: NDArray[np.intp],
        class_names: list[str],
        radius: F32,
        calibration_scores: F64,
        threshold: float,
        input_neighbours: InputNeighbours | None = None,
    ) -> None:
        self.geometry = CentroidGeometry(centroids, centroid_class, class_names, radius)
        cal = np.asarray(calibration_scores, dtype=np.float64)
        if cal.ndim != 1 or not np.all(np.isfinite(cal)):
            raise ArtifactError("calibration scores must be a vector of finite numbers")
        if not np.isfinite(threshold):
            raise ArtifactError(f"threshold must be finite, got {threshold}")
        self.input_neighbours = input_neighbours
        self.calibration_scores = np.sort(np.asarray(calibration_scores, dtype=np.float64))
        self.threshold = float(threshold)

    @property
    def centroids(self) -> F32:
        return self.geometry.centroids

    @property
    def centroid_class(self) -> NDArray[np.intp]:
        return self.geometry.centroid_class

    @property
    def radius(self) -> F32:
        return self.geometry.radius

    @property
    def class_names(self) -> list[str]:
        return self.geometry.class_names

    def distances(self, embeddings: F32) -> F64:
        """``(n, K)`` Euclidean distances from each embedding to each centroid."""
        return self.geometry.distances(embeddings)

    def score(self, embeddings: F32, features: F32 | None = None) -> ScoreResult:
        """Score a ``(n, D)`` batch of embeddings of the ``(n, F)`` featurized rows ``features``
        (needed when the scorer has an input-space term).

        Raises:
            ValueError: ``features`` missing although the scorer needs them.
        """
        near = self.geometry.nearest(embeddings)
        score = near.score
        if self.input_neighbours is not None:
            if features is None:
                raise ValueError("this scorer adds an input-space distance: pass the featurized rows too")
            score = self.input_neighbours.score(score, features)
        return ScoreResult(
            score=score,
            flagged=score > self.threshold,
            nearest_class=near.class_index,
            nearest_centroid=near.centroid,
            distance=near.distance,
            margin=near.margin,
            p_value=self.p_values(score),
        )

    def p_values(self, scores: F64) -> F64:
        """``(1 + #calibration scores >= s) / (n_cal + 1)`` for each score ``s``."""
        cal = self.calibration_scores
        at_least = len(cal) - np.searchsorted(cal, scores, side="left")
        out: F64 = ((1.0 + at_least) / (len(cal) + 1.0)).astype(np.float64)
        return out
