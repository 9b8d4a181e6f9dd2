"""Fit a detector on normal records: spec -> featurizer -> encoder -> classes -> centroids -> threshold.

This is the whole trainer behind ``python -m training fit``; the retrain job and the benchmarks
call :func:`fit_detector` directly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from detector.errors import DataError
from detector.input_neighbours import InputNeighbours
from detector.model import Detector
from detector.schema import FeatureSpec
from detector.spec_inference import infer_spec
from training.calibration import build_explainer, build_scorer, calibrate_threshold, score_quantiles
from training.crossfit import MIN_FOLD_TRAIN, cross_fit_folds, fold_of, fpr_band, min_rows_to_cross_fit
from training.crossfit_calibration import cross_fitted_calibration
from training.fit_config import FitConfig
from training.learning.budget import choose_threads, step_work, torch_threads
from training.learning.trainer import TrainingHistory
from training.score_terms import choose_terms
from training.trained_model import Record, scale_from_unseen, shuffle_rng, train_model

__all__ = ["FitConfig", "FitResult", "fit_detector", "split_calibration"]


@dataclass
class FitResult:
    """The fitted detector and what the fit learnt about the data."""

    detector: Detector
    history: TrainingHistory
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: The normals calibrated on (indices into the fit's records) and their scores, each from a
    #: model that did not train on it: the final model on the held-out path, a fold model when
    #: cross-fitted. ``fit --report`` evaluates on them.
    calibration_rows: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    calibration_scores: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))


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


def fit_detector(
    records: Sequence[Record],
    spec: FeatureSpec | None,
    config: FitConfig,
    *,
    untrained: Sequence[bool] | None = None,
) -> FitResult:
    """Train and calibrate a detector on normal records.

    Args:
        records: normal events (truth column already removed).
        spec: the feature spec, or ``None`` to infer it.
        config: fit settings.
        untrained: per record, ``True`` for a row no model trains on but that is calibrated on
            like any other when the split (or the cross-fitting) puts it there: the retrain job's
            rows the live model flags, so that the threshold comes from the traffic as it is and
            not from traffic with the live model's flagged share cut off.

    Raises:
        DataError / InvalidEventError / SpecError: unusable data (names the problem).
    """
    # numpy's BLAS (k-means, distances) and torch (embedding for calibration) get the thread count
    # the trainer picks: on a contended machine default threads spend more time waiting than
    # computing. Both are given back after, as the caller had them.
    n_features_guess = max(1, len(spec.numeric) + len(spec.categorical)) if spec is not None else 1
    threads, _ = choose_threads(step_work(len(records), n_features_guess, config.train), config.train)
    trains = np.ones(len(records), dtype=bool) if untrained is None else ~np.asarray(untrained, dtype=bool)
    if len(trains) != len(records):
        raise ValueError(f"untrained has {len(trains)} flags for {len(records)} records")
    with threadpool_limits(limits=threads, user_api="blas"), torch_threads(threads):
        return _fit(records, spec, config, trains)


def _fit(
    records: Sequence[Record], spec: FeatureSpec | None, config: FitConfig, trains: NDArray[np.bool_]
) -> FitResult:
    start = time.perf_counter()
    if spec is None:
        spec = infer_spec(records)
    label_field = spec.label_field
    labels = [_class_name(r.get(label_field)) for r in records] if label_field else None
    if labels is not None and len(set(labels)) == len(labels) >= min_rows_to_cross_fit():
        # Found in review: refused as "too few normal rows (200); need at least 13".
        raise DataError(
            f"label field {label_field!r}: every one of the {len(labels)} normal rows has a class of its own; a"
            " class is a kind of normal behaviour that many rows share (is it an id column?)"
        )
    train_idx, cal_idx = split_calibration(labels, len(records), config.calibration_fraction, config.train.seed)
    folds = cross_fit_folds(len(cal_idx), len(records), config.cross_fit_below)
    if not folds and (len(train_idx) < 10 or len(cal_idx) < max(1, config.cross_fit_below)):
        # The holdout calls for cross-fitting but there are too few rows to cross-fit: a holdout of
        # a row or two would set the threshold at their scores (measured: 45-67% of new normals
        # flagged at a 1% target with 11-12 rows). A cross-fitted fit does not use the holdout
        # (found in review: 19 rows at --calibration-fraction 0.75 were refused for its split).
        raise DataError(
            f"too few normal rows to train and calibrate ({len(records)}); need at least {min_rows_to_cross_fit()}"
            " (and a few hundred for a threshold that holds its false-positive rate)"
        )
    train_idx = train_idx[trains[train_idx]]
    fold = fold_of(labels, len(records), folds, config.train.seed) if folds else None
    _check_trainable(trains, train_idx, fold)
    if fold is not None:
        # Few calibration normals: every normal trains the final model and is scored by a model
        # that did not see it (cross-conformal), instead of losing a small holdout.
        train_idx = np.flatnonzero(trains).astype(np.int64)
        fold_rows = (np.flatnonzero((fold != k) & trains) for k in range(folds))
        from_unseen = scale_from_unseen(labels, [train_idx, *fold_rows], config)
        model, cal_scores, score_terms = cross_fitted_calibration(
            records, labels, folds, spec, config, from_unseen, trains
        )
        method = f"cross-fitted ({folds} folds over all {len(records)} normals)"
        cal_rows = np.arange(len(records), dtype=np.int64)
    else:
        from_unseen = scale_from_unseen(labels, [train_idx], config)
        model = train_model(
            [records[i] for i in train_idx], _subset(labels, train_idx), spec, config, scale_from_unseen=from_unseen
        )
        cal_records = [records[i] for i in cal_idx]
        if model.input_neighbours is None:
            cal_scores, score_terms = model.scores(cal_records), None
        else:
            terms = model.held_out_terms(cal_records, shuffle_rng(config.train.seed))
            choice = choose_terms([terms], labels is not None, config.score_terms, config.gauss_term)
            model.take(choice)
            cal_scores, score_terms = terms.normals.score(choice.embedding_weight, choice.gauss_weight), choice.evidence
        method = f"held out ({len(cal_idx)} normals)"
        cal_rows = cal_idx
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
    return FitResult(detector, model.history, warnings, metadata, cal_rows, np.asarray(cal_scores, dtype=np.float64))


def _check_trainable(trains: NDArray[np.bool_], train_idx: NDArray[np.int64], fold: NDArray[np.intp] | None) -> None:
    """With rows marked not to train on: every model of the fit (each fold model when
    cross-fitting, else the one model) must have rows to train on, named as such."""
    if trains.all():
        return
    fewest = len(train_idx) if fold is None else min(int(((fold != k) & trains).sum()) for k in np.unique(fold))
    if fewest < MIN_FOLD_TRAIN:
        raise DataError(
            f"too few normal rows to train on ({int(trains.sum())} of {len(trains)}, {fewest} for a model of this"
            f" fit; the others are marked not to be trained on, e.g. rows the live model flags); each model needs"
            f" at least {MIN_FOLD_TRAIN}"
        )


def _gauss_points(view: InputNeighbours | None) -> int:
    return 0 if view is None or view.gauss is None else len(view.gauss.points)


def _subset(labels: Sequence[str] | None, idx: NDArray[np.int64]) -> list[str] | None:
    return None if labels is None else [labels[i] for i in idx]


def _class_name(value: Any) -> str:
    if value is None or value == "":
        raise DataError("a normal row has an empty normal-class label")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
