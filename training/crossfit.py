"""Cross-fitted calibration for small normal sets, and how wide the realised FPR may be.

With a 10% holdout, a set of a few thousand normals leaves a few hundred calibration scores: at a
1% target only a handful lie above the threshold, and the model trains on 10% fewer rows. Below
``FitConfig.cross_fit_below`` calibration normals the fit instead splits *all* normals into
:data:`FOLDS` folds (stratified by normal class), trains one model per fold on the other folds and
scores the fold with it, so every normal gets a score from a model that never saw it; the final
model then trains on all normals, for the optimiser steps the fold models' early stopping kept
(:func:`final_epochs`), and its threshold is the quantile of those out-of-fold scores
(cross-conformal calibration, Vovk 2015; CV+ / jackknife+, Barber et al. 2021). p-values are
computed against the same out-of-fold scores. Cost: ``FOLDS`` extra fits, only on small data.

The band (:func:`fpr_band`) is the Dvoretzky-Kiefer-Wolfowitz bound: with probability at least
95% the false-positive rate of the threshold on new normals from the calibration distribution lies
within ``sqrt(ln(2 / 0.05) / (2 n))`` of the share of calibration scores above it. With cross-fitted
scores the final model differs slightly from the fold models, so the band is approximate there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

#: Folds of the cross-fitted calibration (each fold model trains on 80% of the normals).
FOLDS = 5
#: Fewest training rows a fold model may have.
MIN_FOLD_TRAIN = 10


Model = TypeVar("Model")
Measured = TypeVar("Measured")
Records = Sequence[Mapping[str, Any]]


def cross_fit_folds(n_holdout: int, n_records: int, below: int) -> int:
    """Folds to cross-fit with (0 = use the holdout): when the holdout has fewer than ``below`` rows."""
    if below <= 0 or n_holdout >= below:
        return 0
    folds = min(FOLDS, n_records)
    return folds if n_records - math.ceil(n_records / max(folds, 1)) >= MIN_FOLD_TRAIN and folds >= 2 else 0


def min_rows_to_cross_fit() -> int:
    """The fewest normals :func:`cross_fit_folds` cross-fits (each fold model trains on enough)."""
    n = 2
    while n - math.ceil(n / FOLDS) < MIN_FOLD_TRAIN:
        n += 1
    return n


def fold_of(labels: Sequence[str] | None, n: int, folds: int, seed: int) -> NDArray[np.intp]:
    """Fold index per row, dealt round-robin over a random order within each normal class."""
    rng = np.random.default_rng(seed + 2)
    keys = np.asarray(labels if labels is not None else ["all"] * n)
    out = np.empty(n, dtype=np.intp)
    offset = 0
    for value in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == value))
        out[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # small classes do not all start in fold 0
    return out


def cross_fitted(
    records: Records,
    labels: Sequence[str] | None,
    folds: int,
    seed: int,
    train: Callable[[Records, list[str] | None], Model],
    measure: Callable[[Model, Records], Measured],
    trains: NDArray[np.bool_] | None = None,
) -> list[tuple[NDArray[np.intp], Measured]]:
    """Per fold: its rows' positions, and ``measure`` of them by a model trained on the other folds
    (on those of their rows ``trains`` allows; default: all)."""
    fold = fold_of(labels, len(records), folds, seed)
    allowed = np.ones(len(records), dtype=bool) if trains is None else trains
    out: list[tuple[NDArray[np.intp], Measured]] = []
    for k in range(folds):
        inside, outside = np.flatnonzero((fold != k) & allowed), np.flatnonzero(fold == k)
        ins, outs = inside.tolist(), outside.tolist()
        model = train([records[i] for i in ins], None if labels is None else [labels[i] for i in ins])
        out.append((outside, measure(model, [records[i] for i in outs])))
    return out


def final_epochs(kept_steps: Sequence[int], steps_per_epoch: int) -> int:
    """Epochs for the final model of a cross-fitted fit: the optimiser steps the median fold model
    took up to the epoch its early stopping kept (``kept_steps``: kept epoch times that model's
    steps per epoch), over the final model's ``steps_per_epoch`` (at least 1). The final model has
    5/4 of a fold model's rows, so it needs fewer epochs for as many steps (and on small sets, where
    an epoch is one or two batches, the rounding of batches moves the ratio from 0.8 to 1.6): capped
    at the fold models' *epochs*, it trained longer than they did (docs/quality.md, "Steps, not
    epochs"). The choice of the training length by cross-validation, then a refit on all rows for as
    long, as in Hastie, Tibshirani and Friedman, *Elements of Statistical Learning*, 7.10."""
    return max(1, int(np.median(np.asarray(kept_steps, dtype=np.float64)) / steps_per_epoch))


def fpr_band(calibration_scores: NDArray[np.float64], threshold: float, delta: float = 0.05) -> dict[str, float]:
    """Share of calibration scores above ``threshold`` and its ``1 - delta`` DKW band, clipped to [0, 1]."""
    n = len(calibration_scores)
    observed = float(np.mean(calibration_scores > threshold))
    width = math.sqrt(math.log(2.0 / delta) / (2.0 * n))
    return {
        "observed": round(observed, 5),
        "low": round(max(0.0, observed - width), 5),
        "high": round(min(1.0, observed + width), 5),
        "half_width": round(width, 5),
    }
