"""Cross-fitted calibration: folds, out-of-fold scores, FPR coverage where the truth is known."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

import training.crossfit_calibration as crossfit_calibration
from detector.schema import FeatureSpec
from detector.scorer import threshold_at_fpr
from training.config import TrainConfig
from training.crossfit import FOLDS, cross_fit_folds, cross_fitted, final_epochs, fold_of, fpr_band
from training.fit import FitConfig, fit_detector


class MeanDistance:
    """A stand-in model: distance to the mean of its training rows."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.mean = np.mean([r["v"] for r in records], axis=0)
        self.trained_on = {r["id"] for r in records}

    def scores(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        assert not self.trained_on & {r["id"] for r in records}  # never scores its own rows
        return np.array([np.linalg.norm(r["v"] - self.mean) for r in records])


def gaussian_records(n: int, seed: int) -> list[dict[str, Any]]:
    x = np.random.default_rng(seed).normal(size=(n, 3))
    return [{"id": i, "v": row} for i, row in enumerate(x)]


def test_folds_only_below_the_limit_and_only_with_enough_rows() -> None:
    assert cross_fit_folds(999, 9_990, 1000) == FOLDS
    assert cross_fit_folds(1000, 10_000, 1000) == 0
    assert cross_fit_folds(10, 100, 0) == 0
    assert cross_fit_folds(1, 8, 1000) == 0


def test_folds_are_balanced_within_each_class() -> None:
    labels = ["a"] * 50 + ["b"] * 7
    fold = fold_of(labels, len(labels), 5, seed=0)
    assert np.bincount(fold[:50]).tolist() == [10] * 5
    assert np.bincount(fold[50:], minlength=5).max() <= 2


def test_cross_fitted_threshold_holds_its_false_positive_rate() -> None:
    """Truth known: new normals come from the same Gaussian; the realised FPR averages the target."""
    realised, covered = [], []
    for seed in range(40):
        records = gaussian_records(200, seed)
        cal = np.empty(len(records))
        for outside, fold_scores in cross_fitted(
            records, None, FOLDS, seed, lambda r, _: MeanDistance(r), lambda m, rows: m.scores(rows)
        ):
            cal[outside] = fold_scores
        threshold = threshold_at_fpr(cal, 0.1)
        final = MeanDistance(records)
        fresh = gaussian_records(2000, 1000 + seed)
        for r in fresh:
            r["id"] = -1 - r["id"]
        realised.append(float(np.mean(final.scores(fresh) > threshold)))
        band = fpr_band(cal, threshold)
        covered.append(band["low"] <= realised[-1] <= band["high"])  # the stated band holds the truth
    assert 0.07 <= np.mean(realised) <= 0.12
    assert np.mean(covered) >= 0.9  # a 95% band: allow a few misses in 40 draws
    assert band["half_width"] == round(np.sqrt(np.log(40) / 400), 5)


def test_fit_cross_fits_small_sets_and_reports_the_band() -> None:
    rng = np.random.default_rng(0)
    records = [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(300, 2))]
    fast = TrainConfig(epochs=2, threads=1, progress=False)
    result = fit_detector(records, None, FitConfig(target_fpr=0.1, train=fast))
    calibration = result.metadata["calibration"]
    assert calibration["method"].startswith("cross-fitted")
    assert calibration["n_calibration"] == 300 == result.metadata["training"]["n_train"]
    assert calibration["fpr_band_95"]["low"] <= 0.1 <= calibration["fpr_band_95"]["high"]
    fresh = [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(3000, 2))]
    realised = float(np.mean(result.detector.score_records(fresh, top=0).flagged))
    assert calibration["fpr_band_95"]["low"] - 0.03 <= realised <= calibration["fpr_band_95"]["high"] + 0.03
    held_out = fit_detector(records, None, FitConfig(target_fpr=0.1, cross_fit_below=0, train=fast))
    assert held_out.metadata["calibration"]["n_calibration"] == 30


def test_the_final_model_gets_the_optimiser_steps_the_median_fold_model_kept() -> None:
    # Kept steps of five fold models; the final model's epochs have 4 steps each.
    assert final_epochs([53, 85, 27, 31, 50], 1) == 50
    assert final_epochs([160, 170, 150, 90, 200], 4) == 40
    assert final_epochs([10, 21], 1) == 15
    assert final_epochs([0], 3) == 1
    assert final_epochs([5, 5, 5], 8) == 1  # fewer steps than one of its epochs: one epoch


def test_a_cross_fitted_final_model_trains_the_steps_its_fold_models_typically_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The threshold is the fold models' out-of-fold quantile; a final model that trained longer
    than they did would put new normals on a heavier tail (docs/quality.md, Calibration)."""
    calls: list[tuple[int | None, int | None, int, Any]] = []
    real = crossfit_calibration.train_model

    def spy(*args: Any, **kwargs: Any) -> Any:
        model = real(*args, **kwargs)
        history = model.history
        calls.append(
            (args[3].train.epochs, args[3].train.patience, history.kept_epoch, history.budget["steps_per_epoch"])
        )
        return model

    monkeypatch.setattr(crossfit_calibration, "train_model", spy)
    rng = np.random.default_rng(1)
    records = [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(300, 2))]
    config = FitConfig(
        target_fpr=0.05, train=TrainConfig(epochs=12, patience=3, min_steps=0, threads=1, progress=False)
    )
    result = fit_detector(records, FeatureSpec(numeric=["a", "b"]), config)
    *folds, final = calls
    assert len(folds) == 5 and all(epochs == 12 and patience == 3 for epochs, patience, _, _ in folds)
    # The cap in the steps the folds kept (counted in the final model's own epochs, as it ran them),
    # no early stop before it, and the weights of its last epoch kept.
    cap = final_epochs([kept * per_epoch for _, _, kept, per_epoch in folds], final[3])
    assert final[0] == final[1] == final[2] == cap
    training = result.metadata["training"]
    assert training["epoch_budget"] == final[0] and training["epochs_run"] == final[0]
    assert training["epoch_budget_rule"] == (
        "given for the 5 fold models (12 epochs); "
        "the final model as many optimiser steps as the median fold model took to the epoch its early "
        "stopping kept, and the weights of its last epoch"
    )


def test_a_cross_fitted_fit_without_the_input_term_calibrates_on_plain_out_of_fold_scores() -> None:
    rng = np.random.default_rng(2)
    records = [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(300, 2))]
    config = FitConfig(
        target_fpr=0.05, input_budget=0, train=TrainConfig(epochs=6, min_steps=0, threads=1, progress=False)
    )
    result = fit_detector(records, FeatureSpec(numeric=["a", "b"]), config)
    assert result.metadata["calibration"]["n_calibration"] == 300
    assert result.metadata["training"]["score_terms"] is None
    assert result.detector.scorer.input_neighbours is None
