"""Calibration by cross-fitting (few normals): the fold models, then the final model on every
row, and the out-of-fold scores its threshold comes from (:func:`cross_fitted_calibration`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from detector.schema import FeatureSpec
from training.crossfit import cross_fitted, final_epochs
from training.fit_config import FitConfig
from training.learning.budget import epoch_budget
from training.score_terms import HeldOutTerms, choose_terms
from training.trained_model import Record, TrainedModel, encoder_rows, shuffle_rng, train_model


def cross_fitted_calibration(
    records: Sequence[Record],
    labels: Sequence[str] | None,
    folds: int,
    spec: FeatureSpec,
    config: FitConfig,
    scale_from_unseen: bool,
    trains: NDArray[np.bool_] | None = None,
) -> tuple[TrainedModel, NDArray[np.float64], dict[str, Any] | None]:
    """The fold models first, then the final model on all rows, and the out-of-fold calibration
    scores (the score's terms chosen on the out-of-fold normals; ``None`` evidence without an
    input-space term). ``trains`` (default: all): the rows models may train on; every row is
    scored out of fold, those no model trains on too.

    The final model trains for the optimiser steps the median fold model took to the epoch its
    early stopping kept (:func:`final_epochs`; in its own epochs, which have more rows), and keeps
    the weights of its last epoch, not an earlier one with a lower
    held-out loss (the length is the fold models' choice; an earlier epoch is a shorter training).
    Its threshold is their out-of-fold quantile, and the length of training sets the tail of new
    normals' scores (digits: the 95% quantile of the embedding term follows the kept epoch,
    correlation 0.90 over 60 models; waveform, seed 2: a final model capped at the fold models'
    epochs flagged 2.2% of new normals at the 1% threshold, capped at their steps 1.0%; musk, seeds
    0 and 2: with an earlier best epoch restored within the cap 0.2%, the model at the cap
    0.45-0.56%)."""

    def train(r: Sequence[Record], y: list[str] | None) -> TrainedModel:
        return train_model(r, y, spec, config, scale_from_unseen=scale_from_unseen)

    seed = config.train.seed
    rng = shuffle_rng(config.train.seed)

    def measure(m: TrainedModel, rows: Sequence[Record]) -> FoldMeasure:
        budget = m.history.budget
        rule, epochs = str(budget["epoch_budget_rule"]), cast(int, budget["epoch_budget"])
        kept_steps = m.history.kept_epoch * cast(int, budget["steps_per_epoch"])
        if m.input_neighbours is None:
            return FoldMeasure(kept_steps, epochs, rule, scores=m.scores(rows))
        return FoldMeasure(kept_steps, epochs, rule, terms=m.held_out_terms(rows, rng))

    trains = np.ones(len(records), dtype=bool) if trains is None else trains
    parts = cross_fitted(records, labels, folds, seed, train, measure, trains)
    trained = np.flatnonzero(trains).astype(np.int64)
    _, steps_per_epoch, _ = epoch_budget(encoder_rows(labels, trained, config), config.train)
    epochs = final_epochs([fold.kept_steps for _, fold in parts], steps_per_epoch)
    length = {"epochs": epochs, "patience": epochs, "restore_best_epoch": False}
    capped = config.model_copy(update={"train": config.train.model_copy(update=length)})
    picked = trained.tolist()
    rows, row_labels = [records[i] for i in picked], None if labels is None else [labels[i] for i in picked]
    model = train_model(rows, row_labels, spec, capped, scale_from_unseen=scale_from_unseen)
    budgets = sorted({fold.epoch_budget for _, fold in parts})
    span = str(budgets[0]) if len(budgets) == 1 else f"{budgets[0]}-{budgets[-1]}"
    model.history.budget["epoch_budget_rule"] = (
        f"{parts[0][1].budget_rule} for the {folds} fold models ({span} epochs); "
        "the final model as many optimiser steps as the median fold model took to the epoch its early "
        "stopping kept, and the weights of its last epoch"
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
class FoldMeasure:
    """What a fold model of the cross-fitting gives: the optimiser steps up to the epoch its early
    stopping kept, and its out-of-fold normals' score terms (or plain scores, without an
    input-space term)."""

    kept_steps: int
    epoch_budget: int
    budget_rule: str
    scores: NDArray[np.float64] | None = None
    terms: HeldOutTerms | None = None
