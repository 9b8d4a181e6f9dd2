"""Fit a detector on normal records: spec -> featurizer -> encoder -> classes -> centroids -> threshold.

This is the whole trainer behind ``python -m training fit``; the retrain job and the benchmarks
call :func:`fit_detector` directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from threadpoolctl import threadpool_limits

from detector.encoder import Encoder, embed
from detector.errors import DataError
from detector.features import Featurizer
from detector.input_neighbours import GaussTerm, InputNeighbours
from detector.model import Detector
from detector.schema import FeatureSpec
from detector.spec_inference import infer_spec
from training.calibration import (
    MIN_UNSEEN_FOR_SCALE,
    Centroids,
    build_explainer,
    build_geometry,
    build_scorer,
    calibrate_threshold,
    centroid_counts,
    fit_input_terms,
    place_centroids,
    placement_rows,
    radii,
    score_quantiles,
)
from training.config import TrainConfig
from training.crossfit import (
    cross_fit_folds,
    cross_fitted,
    final_epochs,
    fold_of,
    fpr_band,
    min_rows_to_cross_fit,
)
from training.learning.budget import choose_threads, step_work
from training.learning.clustering import choose_k, kmeans
from training.learning.outliers import ColumnLayout
from training.learning.trainer import TrainingHistory, split_validation, train_encoder
from training.score_terms import (
    GaussChoice,
    HeldOutTerms,
    ScaledTerms,
    ScoreTerms,
    TermsChoice,
    choose_terms,
    shuffled_columns,
)

log = logging.getLogger(__name__)
Record = Mapping[str, Any]


class FitConfig(BaseModel):
    """Everything beyond the encoder's training hyper-parameters.

    Attributes:
        target_fpr: false-positive rate the threshold is calibrated for.
        calibration_fraction: share of normals (per class) held out to calibrate.
        cross_fit_below: when that holdout would hold fewer calibration normals than this, calibrate
            by cross-fitting on all normals instead (:mod:`training.crossfit`; 0 = never).
        centroids_per_class: most centroids per normal class (k-means inside the class; at most one
            per 20 training members).
        radius_shrinkage: pseudo-members pulling each centroid's radius toward the global one
            (``None`` = one radius shared by all centroids).
        cluster_candidates: k values tried when deriving classes from unlabelled data.
        input_budget: multiply-adds per event the input-space term of the score may cost (its
            reference points times the featurized width; 0 = embedding score only). See
            :func:`training.calibration.fit_input_terms` and docs/quality.md.
        score_terms: which terms make the score: ``both`` (embedding + input distance), ``input``
            (the input distance alone) or ``auto`` (chosen from the held-out normals, see
            :mod:`training.score_terms`; the test is run and recorded whichever is set).
        gauss_term: the score's rank-Gauss third term (:class:`detector.input_neighbours.GaussTerm`):
            ``auto`` (kept when the same test prefers it), ``on`` or ``off`` (not even fitted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_fpr: float = Field(default=0.01, gt=0, lt=1)
    calibration_fraction: float = Field(default=0.1, gt=0, lt=0.9)
    cross_fit_below: int = Field(default=1000, ge=0)
    centroids_per_class: int = Field(default=64, ge=1)
    radius_shrinkage: float | None = Field(default=None, ge=0)
    cluster_candidates: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12)
    input_budget: int = Field(default=32768, ge=0)
    score_terms: ScoreTerms = "auto"
    gauss_term: GaussChoice = "auto"
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _gauss_needs_the_input_term(self) -> FitConfig:
        if self.gauss_term == "on" and self.input_budget == 0:
            raise ValueError("gauss_term 'on' needs the input-space term (input_budget > 0)")
        return self


@dataclass
class FitResult:
    """The fitted detector and what the fit learnt about the data."""

    detector: Detector
    history: TrainingHistory
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def split_calibration(
    labels: Sequence[str] | None, n: int, fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per-class random split of ``range(n)`` into train and calibration indices."""
    rng = np.random.default_rng(seed + 1)
    keys = np.asarray(labels if labels is not None else ["all"] * n)
    train: list[NDArray[np.int64]] = []
    cal: list[NDArray[np.int64]] = []
    for value in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == value)).astype(np.int64)
        n_cal = max(1, round(len(members) * fraction)) if len(members) >= 2 else 0
        cal.append(members[:n_cal])
        train.append(members[n_cal:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(cal))


def fit_detector(records: Sequence[Record], spec: FeatureSpec | None, config: FitConfig) -> FitResult:
    """Train and calibrate a detector on normal records.

    Args:
        records: normal events (truth column already removed).
        spec: the feature spec, or ``None`` to infer it.
        config: fit settings.

    Raises:
        DataError / InvalidEventError / SpecError: unusable data (names the problem).
    """
    # numpy's BLAS (k-means, distances) gets the thread count the trainer picks for torch: on a
    # contended machine its default threads spend more time waiting than computing.
    n_features_guess = max(1, len(spec.numeric) + len(spec.categorical)) if spec is not None else 1
    threads, _ = choose_threads(step_work(len(records), n_features_guess, config.train), config.train)
    with threadpool_limits(limits=threads, user_api="blas"):
        return _fit(records, spec, config)


@dataclass
class _Trained:
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


def _train(
    records: Sequence[Record],
    labels: Sequence[str] | None,
    spec: FeatureSpec,
    config: FitConfig,
    *,
    scale_from_unseen: bool,
) -> _Trained:
    """Featurizer, encoder, classes and centroids from ``records`` (all of them train).
    ``scale_from_unseen``: the embedding term's scale comes from the rows the encoder held out for
    early stopping (placed apart from the centroids), else from the training rows."""
    featurizer = Featurizer(spec).fit(records)
    x_train = featurizer.transform(records)
    class_names, y_train = _encode_labels(labels, np.arange(len(records), dtype=np.int64))
    encoder, history = train_encoder(x_train, y_train, ColumnLayout.from_featurizer(featurizer), config.train)
    z_train = embed(encoder, x_train)
    if y_train is None:
        class_names, y_train, selection = _derive_classes(z_train, config)
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
    return _Trained(
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


def _scale_from_unseen(labels: Sequence[str] | None, row_sets: Sequence[NDArray[np.int64]], config: FitConfig) -> bool:
    """Whether every model of this fit (the final one, and the fold models when cross-fitting)
    holds out at least :data:`MIN_UNSEEN_FOR_SCALE` rows for early stopping: then each takes its
    embedding scale from them, else none does, so that the models' scales are of one kind. The
    count is the trainer's own split for labelled rows, and its unstratified size otherwise."""
    if config.input_budget <= 0:
        return False  # no input term: the embedding score is the score, and no scale is used
    for rows in row_sets:
        _, y = _encode_labels(labels, rows)
        _, unseen = split_validation(len(rows), y, config.train.validation_fraction, config.train.seed)
        if len(unseen) < MIN_UNSEEN_FOR_SCALE:
            return False
    return True


def _fit(records: Sequence[Record], spec: FeatureSpec | None, config: FitConfig) -> FitResult:
    start = time.perf_counter()
    if spec is None:
        spec = infer_spec(records)
    label_field = spec.label_field
    labels = [_class_name(r.get(label_field)) for r in records] if label_field else None
    train_idx, cal_idx = split_calibration(labels, len(records), config.calibration_fraction, config.train.seed)
    folds = cross_fit_folds(len(cal_idx), len(records), config.cross_fit_below)
    if len(train_idx) < 10 or len(cal_idx) < 1 or (not folds and len(cal_idx) < config.cross_fit_below):
        # The holdout calls for cross-fitting but there are too few rows to cross-fit: a holdout of
        # a row or two would set the threshold at their scores (measured: 45-67% of new normals
        # flagged at a 1% target with 11-12 rows).
        raise DataError(
            f"too few normal rows to train and calibrate ({len(records)}); need at least {min_rows_to_cross_fit()}"
            " (and a few hundred for a threshold that holds its false-positive rate)"
        )
    if folds:
        # Few calibration normals: every normal trains the final model and is scored by a model
        # that did not see it (cross-conformal), instead of losing a small holdout.
        train_idx = np.arange(len(records), dtype=np.int64)
        fold = fold_of(labels, len(records), folds, config.train.seed)
        from_unseen = _scale_from_unseen(
            labels, [train_idx, *(np.flatnonzero(fold != k) for k in range(folds))], config
        )
        model, cal_scores, score_terms = _cross_fitted_calibration(records, labels, folds, spec, config, from_unseen)
        method = f"cross-fitted ({folds} folds over all {len(records)} normals)"
    else:
        from_unseen = _scale_from_unseen(labels, [train_idx], config)
        model = _train(
            [records[i] for i in train_idx], _subset(labels, train_idx), spec, config, scale_from_unseen=from_unseen
        )
        cal_records = [records[i] for i in cal_idx]
        if model.input_neighbours is None:
            cal_scores, score_terms = model.scores(cal_records), None
        else:
            terms = model.held_out_terms(cal_records, _shuffle_rng(config))
            choice = choose_terms([terms], labels is not None, config.score_terms, config.gauss_term)
            model.take(choice)
            cal_scores, score_terms = terms.normals.score(choice.embedding_weight, choice.gauss_weight), choice.evidence
        method = f"held out ({len(cal_idx)} normals)"
    threshold, warnings = calibrate_threshold(cal_scores, config.target_fpr)
    scorer = build_scorer(
        model.centroids, model.radius, model.class_names, cal_scores, threshold, model.input_neighbours
    )
    explainer = build_explainer(model.x_members, model.centroids, model.featurizer.column_fields)
    detector = Detector(model.featurizer, model.encoder, scorer, explainer)
    metadata = {
        "calibration": {
            "target_fpr": config.target_fpr,
            "threshold": threshold,
            "method": method,
            "n_calibration": len(cal_scores),
            "fpr_band_95": fpr_band(cal_scores, threshold),
            "score_quantiles": score_quantiles(cal_scores),
            "warnings": warnings,
        },
        "training": {
            **model.history.summary(),
            "n_train": len(train_idx),
            "n_classes": len(model.class_names),
            "n_centroids": len(model.centroids.positions),
            "n_centroid_rows": len(model.x_members),
            "n_input_points": 0 if model.input_neighbours is None else len(model.input_neighbours.points),
            "n_gauss_points": _gauss_points(model.input_neighbours),
            "embedding_scale_from": model.embedding_scale_from if model.input_neighbours is not None else None,
            "score_terms": score_terms,
            "class_selection": model.selection,
            "fit_seconds": round(time.perf_counter() - start, 2),
            "config": config.model_dump(mode="json"),
        },
    }
    return FitResult(detector, model.history, warnings, metadata)


def _gauss_points(view: InputNeighbours | None) -> int:
    return 0 if view is None or view.gauss is None else len(view.gauss.points)


def _shuffle_rng(config: FitConfig) -> np.random.Generator:
    return np.random.default_rng(config.train.seed + 3)


def _cross_fitted_calibration(
    records: Sequence[Record],
    labels: Sequence[str] | None,
    folds: int,
    spec: FeatureSpec,
    config: FitConfig,
    scale_from_unseen: bool,
) -> tuple[_Trained, NDArray[np.float64], dict[str, Any] | None]:
    """The fold models first, then the final model on all rows, and the out-of-fold calibration
    scores (the score's terms chosen on the out-of-fold normals; ``None`` evidence without an
    input-space term).

    The final model trains for at most the median epoch the fold models' early stopping kept
    (:func:`final_epochs`): its threshold is their out-of-fold quantile, and a model trained
    longer puts new normals on a heavier tail (measured on digits: the 95% quantile of the
    embedding term follows the kept epoch, correlation 0.90 over 60 models)."""

    def train(r: Sequence[Record], y: list[str] | None) -> _Trained:
        return _train(r, y, spec, config, scale_from_unseen=scale_from_unseen)

    seed = config.train.seed
    rng = _shuffle_rng(config)

    def measure(m: _Trained, rows: Sequence[Record]) -> _FoldMeasure:
        budget = m.history.budget
        rule, epoch_budget = str(budget["epoch_budget_rule"]), cast(int, budget["epoch_budget"])
        if m.input_neighbours is None:
            return _FoldMeasure(m.history.best_epoch, epoch_budget, rule, scores=m.scores(rows))
        return _FoldMeasure(m.history.best_epoch, epoch_budget, rule, terms=m.held_out_terms(rows, rng))

    parts = cross_fitted(records, labels, folds, seed, train, measure)
    epochs = final_epochs([fold.kept_epoch for _, fold in parts])
    capped = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs, "patience": epochs})})
    model = _train(records, labels, spec, capped, scale_from_unseen=scale_from_unseen)
    budgets = sorted({fold.epoch_budget for _, fold in parts})
    span = str(budgets[0]) if len(budgets) == 1 else f"{budgets[0]}-{budgets[-1]}"
    model.history.budget["epoch_budget_rule"] = (
        f"{parts[0][1].budget_rule} for the {folds} fold models ({span} epochs); "
        "the final model the median epoch their early stopping kept, its best epoch within that restored"
    )
    scores = np.empty(len(records), dtype=np.float64)
    if config.input_budget <= 0:  # no input-space term: plain scores, no terms to choose
        for outside, fold in parts:
            assert fold.scores is not None
            scores[outside] = fold.scores
        return model, scores, None
    terms = [fold.terms for _, fold in parts if fold.terms is not None]
    choice = choose_terms(terms, labels is not None, config.score_terms, config.gauss_term)
    model.take(choice)
    for (outside, _), held in zip(parts, terms, strict=True):
        scores[outside] = held.normals.score(choice.embedding_weight, choice.gauss_weight)
    return model, scores, choice.evidence


@dataclass
class _FoldMeasure:
    """What a fold model of the cross-fitting gives: the epoch its early stopping kept, and its
    out-of-fold normals' score terms (or plain scores, without an input-space term)."""

    kept_epoch: int
    epoch_budget: int
    budget_rule: str
    scores: NDArray[np.float64] | None = None
    terms: HeldOutTerms | None = None


def _subset(labels: Sequence[str] | None, idx: NDArray[np.int64]) -> list[str] | None:
    return None if labels is None else [labels[i] for i in idx]


def _class_name(value: Any) -> str:
    if value is None or value == "":
        raise DataError("a normal row has an empty normal-class label")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _encode_labels(labels: Sequence[str] | None, idx: NDArray[np.int64]) -> tuple[list[str], NDArray[np.intp] | None]:
    if labels is None:
        return [], None
    names = sorted({labels[i] for i in idx})
    lookup = {name: j for j, name in enumerate(names)}
    return names, np.array([lookup[labels[i]] for i in idx], dtype=np.intp)


def _derive_classes(z: NDArray[np.float32], config: FitConfig) -> tuple[list[str], NDArray[np.intp], dict[str, Any]]:
    """Unlabelled normals: classes = k-means clusters of the embedding, k by silhouette."""
    k, scores = choose_k(z, config.cluster_candidates, config.train.seed)
    labels = kmeans(z, k, config.train.seed).labels if k > 1 else np.zeros(len(z), dtype=np.intp)
    names = [f"cluster-{j}" for j in range(int(labels.max()) + 1)]
    selection = {"criterion": "max silhouette (>= 0.25, else 1)", "k": k, "silhouette": scores}
    return names, labels.astype(np.intp), selection
