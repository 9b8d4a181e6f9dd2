"""One trained model before calibration: featurizer, encoder, classes, centroids and the input
terms of its score (:func:`train_model`), and what the fit and the cross-fitting ask of it: its
scores, its held-out normals' score terms, the terms chosen."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from detector.encoder import Encoder, embed
from detector.errors import DataError
from detector.features import Featurizer
from detector.input_neighbours import GaussTerm, InputNeighbours
from detector.schema import FeatureSpec
from training.calibration import (
    MIN_UNSEEN_FOR_SCALE,
    Centroids,
    build_geometry,
    centroid_counts,
    fit_input_terms,
    place_centroids,
    placement_rows,
    radii,
)
from training.fit_config import FitConfig
from training.learning.budget import choose_threads, step_work, torch_threads
from training.learning.clustering import choose_k, kmeans
from training.learning.coassociation import MIN_CLUSTER_SHARE
from training.learning.outliers import ColumnLayout
from training.learning.trainer import TrainingHistory, split_validation, train_encoder
from training.score_terms import HeldOutTerms, ScaledTerms, TermsChoice, shuffled_columns

Record = Mapping[str, Any]


def shuffle_rng(seed: int) -> np.random.Generator:
    """The generator of the column shuffles the score's terms are chosen against."""
    return np.random.default_rng(seed + 3)


@dataclass
class TrainedModel:
    """One trained model (before calibration) and what its training learnt."""

    featurizer: Featurizer
    encoder: Encoder
    centroids: Centroids
    radius: NDArray[np.float32]
    class_names: list[str]
    history: TrainingHistory
    selection: dict[str, Any]
    #: The featurized rows the centroids were placed on, in the order of ``centroids.assignment``.
    x_members: NDArray[np.float32]
    input_neighbours: InputNeighbours | None
    gauss_candidate: GaussTerm | None
    #: Which rows set the embedding term's scale (recorded in the manifest).
    embedding_scale_from: str

    def scores(self, records: Sequence[Record]) -> NDArray[np.float64]:
        """The detector's scores of ``records`` under this model (before any threshold)."""
        x = self.featurizer.transform(records)
        score = self._embedding_scores(x)
        if self.input_neighbours is None:
            return score
        return self.input_neighbours.score(score, x)

    def held_out_terms(self, records: Sequence[Record], rng: np.random.Generator) -> HeldOutTerms:
        """Scaled score terms of normals this model did not train on, and of their column-shuffled copies."""
        view = self.input_neighbours
        assert view is not None, "only with an input-space term"
        x = self.featurizer.transform(records)

        gauss = self.gauss_candidate

        def terms(rows: NDArray[np.float32]) -> ScaledTerms:
            return ScaledTerms(
                self._embedding_scores(rows) / view.embedding_scale,
                view.distances(rows) / view.input_scale,
                None if gauss is None else gauss.distances(rows) / gauss.scale,
            )

        return HeldOutTerms(terms(x), terms(shuffled_columns(x, rng)))

    def take(self, choice: TermsChoice) -> None:
        """Set the score's terms to ``choice``."""
        assert self.input_neighbours is not None, "only with an input-space term"
        gauss = self.gauss_candidate if choice.gauss_weight else None
        self.input_neighbours = self.input_neighbours.with_terms(choice.embedding_weight, gauss)

    def _embedding_scores(self, x: NDArray[np.float32]) -> NDArray[np.float64]:
        return build_geometry(self.centroids, self.radius, self.class_names).nearest(embed(self.encoder, x)).score


def train_model(
    records: Sequence[Record],
    labels: Sequence[str] | None,
    spec: FeatureSpec,
    config: FitConfig,
    *,
    scale_from_unseen: bool,
) -> TrainedModel:
    """Featurizer, encoder, classes and centroids from ``records`` (all of them train).
    ``scale_from_unseen``: the embedding term's scale comes from the rows the encoder held out for
    early stopping (placed apart from the centroids), else from the training rows."""
    featurizer = Featurizer(spec).fit(records)
    x_train = featurizer.transform(records)
    # numpy's BLAS (k-means, distances) gets the threads torch gets, from the featurized width
    # (fit_detector's limit is a guess from the fields, made before featurizing).
    threads, _ = choose_threads(step_work(len(x_train), x_train.shape[1], config.train), config.train)
    with threadpool_limits(limits=threads, user_api="blas"), torch_threads(threads):
        class_names, y_train = encode_labels(labels, np.arange(len(records), dtype=np.int64))
        encoder, history = train_encoder(x_train, y_train, ColumnLayout.from_featurizer(featurizer), config.train)
        z_train = embed(encoder, x_train)
        if y_train is None:
            class_names, y_train, selection = derive_classes(z_train, config)
        else:
            selection = {"criterion": "given by label column", "k": len(class_names)}
        held = history.validation_rows if scale_from_unseen else np.zeros(0, dtype=np.int64)
        placed, unseen = placement_rows(y_train, held)
        counts = centroid_counts(y_train[placed], len(class_names), config.centroids_per_class)
        centroids = place_centroids(z_train[placed], y_train[placed], counts, config.train.seed)
        radius = radii(z_train[placed], centroids, config.radius_shrinkage)
        scale_rows = unseen if len(unseen) else placed
        embedding_scores = build_geometry(centroids, radius, class_names).nearest(z_train[scale_rows]).score
        if config.gauss_term == "on" and not spec.numeric:
            raise DataError("the rank-Gauss term (--gauss-term on) maps numeric fields, and the feature spec has none")
        n_mapped = 0 if config.gauss_term == "off" else len(spec.numeric)
        view, gauss = fit_input_terms(x_train, embedding_scores, config.input_budget, config.train.seed, n_mapped)
    scale_from = f"{len(unseen)} rows held out for early stopping" if len(unseen) else "the training rows"
    return TrainedModel(
        featurizer,
        encoder,
        centroids,
        radius,
        class_names,
        history,
        selection,
        x_members=x_train[placed],
        input_neighbours=view,
        gauss_candidate=gauss,
        embedding_scale_from=scale_from,
    )


def scale_from_unseen(labels: Sequence[str] | None, row_sets: Sequence[NDArray[np.int64]], config: FitConfig) -> bool:
    """Whether every model of this fit (the final one, and the fold models when cross-fitting)
    holds out at least :data:`MIN_UNSEEN_FOR_SCALE` rows for early stopping: then each takes its
    embedding scale from them, else none does, so that the models' scales are of one kind. The
    count is the trainer's own split for labelled rows, and its unstratified size otherwise."""
    if config.input_budget <= 0:
        return False  # no input term: the embedding score is the score, and no scale is used
    return all(len(rows) - encoder_rows(labels, rows, config) >= MIN_UNSEEN_FOR_SCALE for rows in row_sets)


def encoder_rows(labels: Sequence[str] | None, rows: NDArray[np.int64], config: FitConfig) -> int:
    """How many of ``rows`` a model trained on them takes gradient steps on: those the trainer does
    not hold out for early stopping (its own split for labelled rows; for unlabelled rows the size
    of its unstratified split, which a split by learnt clusters can differ from by a row a cluster)."""
    _, y = encode_labels(labels, rows)
    _, unseen = split_validation(len(rows), y, config.train.validation_fraction, config.train.seed)
    return len(rows) - len(unseen)


def encode_labels(labels: Sequence[str] | None, idx: NDArray[np.int64]) -> tuple[list[str], NDArray[np.intp] | None]:
    if labels is None:
        return [], None
    names = sorted({labels[i] for i in idx})
    lookup = {name: j for j, name in enumerate(names)}
    return names, np.array([lookup[labels[i]] for i in idx], dtype=np.intp)


def derive_classes(z: NDArray[np.float32], config: FitConfig) -> tuple[list[str], NDArray[np.intp], dict[str, Any]]:
    """Unlabelled normals: classes = k-means clusters of the embedding, k by silhouette. A clustering
    with a cluster under ``MIN_CLUSTER_SHARE`` of the rows is not counted: a few extreme rows split
    off score a silhouette near 1, and would become a class of their own."""
    k, scores = choose_k(z, config.cluster_candidates, config.train.seed, min_cluster_share=MIN_CLUSTER_SHARE)
    labels = kmeans(z, k, config.train.seed).labels if k > 1 else np.zeros(len(z), dtype=np.intp)
    names = [f"cluster-{j}" for j in range(int(labels.max()) + 1)]
    criterion = f"max silhouette (>= 0.25, else 1; no cluster under {MIN_CLUSTER_SHARE:.0%} of the rows)"
    selection = {"criterion": criterion, "k": k, "silhouette": scores}
    return names, labels.astype(np.intp), selection
