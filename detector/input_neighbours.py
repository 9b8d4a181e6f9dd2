"""The input-space half of the score: distance to the nearest normal reference point before the encoder.

The encoder is trained to separate kinds of normal behaviour; what it discards inside a kind can
be what tells an anomaly apart (measured over 22 real sets, docs/quality.md: the distance to the
nearest training normal in the standardised input space beat the embedding score on 11 of 16 sets
it had not been tuned on). So the score adds a second distance, in the featurized input space (the
encoder's input), to the nearest of ``K`` reference points: k-means centroids of the training
normals, or the training rows themselves when there are few enough. Both distances are divided by
their median over normals that did not shape them (a typical new normal scores 1 on each), and
added::

    score = embedding_weight * embedding_score / embedding_scale + input_distance / input_scale

The scales come from the training normals alone: the embedding one from the rows the encoder held
out for early stopping (the centroids placed without them; on small sets, with fewer than ten such
rows, from the training rows), the input one from leave-one-out distances. So the calibration
normals still score exactly as new normals would (the threshold and p-values stay conformal).
``embedding_weight`` is 1 unless the trainer found the input term alone better at telling its
held-out normals from column-shuffled copies of them (:mod:`training.score_terms`); then it is 0
and the embedding still names the nearest normal class and centroid, but does not move the score.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from detector.errors import ArtifactError
from detector.rank_gauss import RankGauss

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

#: Rows of a batch whose distances are computed at once (bounds the (rows, K) matrix).
CHUNK = 2048


class NearestPoints:
    """Euclidean distance from rows to the nearest of ``(K, F)`` reference points.

    Raises:
        ArtifactError: no points.
    """

    def __init__(self, points: F32) -> None:
        if points.ndim != 2 or points.shape[0] == 0:
            raise ArtifactError("input reference points must be a non-empty (K, F) matrix")
        self.points = np.ascontiguousarray(points, dtype=np.float32)
        # The nearest point is found from ||x - p||^2 = ||x||^2 + (||p||^2 - 2 x.p), the bracket in
        # float32 (one matrix product and an in-place add per chunk; 8x faster than in float64,
        # error ~1e-7 of the squared norms); the distance to it is then taken from x - p itself,
        # so a row equal to a point is at 0 (that error was up to 1e-3 in z-scores: on data with
        # duplicate rows the threshold fell among noise that new normals did not share).
        self._minus_two_t = np.ascontiguousarray(-2.0 * self.points.T)
        self._sq_norm = (self.points.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)

    @property
    def n_features(self) -> int:
        return int(self.points.shape[1])

    def distances(self, features: F32) -> F64:
        """``(n,)`` distance from each row to its nearest reference point."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) featurized rows, got shape {x.shape}")
        out = np.empty(len(x), dtype=np.float64)
        for lo in range(0, len(x), CHUNK):
            part = x[lo : lo + CHUNK]
            bracket = part @ self._minus_two_t
            bracket += self._sq_norm
            offset = part.astype(np.float64) - self.points[bracket.argmin(axis=1)]
            out[lo : lo + CHUNK] = np.einsum("ij,ij->i", offset, offset)
        result: F64 = np.sqrt(out)
        return result


class GaussTerm:
    """The score's optional third term: distance to the nearest reference point after the rank-Gauss map.

    Args:
        mapping: the per-column map (:class:`detector.rank_gauss.RankGauss`).
        points: ``(K, F)`` reference points in the mapped space.
        scale: median distance of the training normals (positive).

    Raises:
        ArtifactError: no points, a map wider than the points, or a scale that is not positive.
    """

    def __init__(self, mapping: RankGauss, points: F32, scale: float) -> None:
        self.nearest = NearestPoints(points)
        if mapping.n_columns > self.nearest.n_features:
            width = self.nearest.n_features
            raise ArtifactError(f"the rank-Gauss map has {mapping.n_columns} columns, its points {width}")
        if not (np.isfinite(scale) and scale > 0):
            raise ArtifactError(f"the rank-Gauss term's scale must be positive and finite, got {scale}")
        self.mapping = mapping
        self.scale = float(scale)

    @property
    def points(self) -> F32:
        return self.nearest.points

    def distances(self, features: F32) -> F64:
        """``(n,)`` distance of each featurized row, once mapped, to its nearest reference point."""
        return self.nearest.distances(self.mapping.apply(features))


class InputNeighbours:
    """Reference points in the featurized input space and the scales of the combined score.

    Args:
        points: ``(K, F)`` reference points in featurized input space.
        embedding_scale: median embedding score of the training normals the encoder held out for
            early stopping, or of all training normals on small sets (positive).
        input_scale: median leave-one-out input distance of the training normals (positive).
        embedding_weight: weight of the embedding term (1: both terms; 0: the input term alone).
        gauss: the optional third term (``None``: none).

    Raises:
        ArtifactError: no points, scales that are not positive and finite, a weight that is
            negative or not finite, or a third term of another width.
    """

    def __init__(
        self,
        points: F32,
        embedding_scale: float,
        input_scale: float,
        embedding_weight: float = 1.0,
        gauss: GaussTerm | None = None,
    ) -> None:
        self.nearest = NearestPoints(points)
        scales = np.array([embedding_scale, input_scale], dtype=np.float64)
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise ArtifactError(f"score scales must be positive and finite, got {scales.tolist()}")
        if not (np.isfinite(embedding_weight) and embedding_weight >= 0):
            raise ArtifactError(f"the embedding weight must be finite and non-negative, got {embedding_weight}")
        if gauss is not None and gauss.nearest.n_features != self.nearest.n_features:
            width = gauss.nearest.n_features
            raise ArtifactError(f"the rank-Gauss term has {width} features, the input term {self.n_features}")
        self.embedding_scale = float(embedding_scale)
        self.input_scale = float(input_scale)
        self.embedding_weight = float(embedding_weight)
        self.gauss = gauss

    @property
    def points(self) -> F32:
        return self.nearest.points

    @property
    def n_features(self) -> int:
        return self.nearest.n_features

    def distances(self, features: F32) -> F64:
        """``(n,)`` Euclidean distance from each featurized row to its nearest reference point."""
        return self.nearest.distances(features)

    def with_terms(self, embedding_weight: float, gauss: GaussTerm | None) -> InputNeighbours:
        """The same input term with another embedding weight and third term."""
        return InputNeighbours(self.points, self.embedding_scale, self.input_scale, embedding_weight, gauss)

    def with_embedding_weight(self, weight: float) -> InputNeighbours:
        """The same terms with another embedding weight."""
        return self.with_terms(weight, self.gauss)

    def combine(self, embedding_score: F64, input_distance: F64) -> F64:
        """The embedding and input terms joined (each ~1 for a typical normal); no third term."""
        out: F64 = self.embedding_weight * embedding_score / self.embedding_scale + input_distance / self.input_scale
        return out

    def score(self, embedding_score: F64, features: F32) -> F64:
        """The detector's score of featurized rows from their embedding scores: every term."""
        out = self.combine(embedding_score, self.distances(features))
        if self.gauss is not None:
            out += self.gauss.distances(features) / self.gauss.scale
        return out
