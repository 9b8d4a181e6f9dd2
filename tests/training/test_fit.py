"""Training smoke tests on small real data: calibration, scoring quality, labelled losses, round trip."""

from __future__ import annotations

import logging
import math
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from detector.errors import DataError
from detector.model import Detector
from detector.schema import FeatureSpec
from training.calibration import MIN_EXCEEDANCES, calibrate_threshold
from training.config import TrainConfig
from training.data import iter_records
from training.evaluation.metrics import roc_auc
from training.fit import FitConfig, FitResult, fit_detector, split_calibration
from training.learning.coassociation import STRUCTURE_SILHOUETTE
from training.trained_model import derive_classes

DATA = Path(__file__).resolve().parents[2] / "data"
NSL_KDD = DATA / "nsl-kdd" / "KDDTrain+_20Percent.csv.gz"
DIGITS = DATA / "benchmarks" / "digits_mc.npz"
FAST = TrainConfig(epochs=2, min_steps=0, threads=1, progress=False)
TARGET_FPR = 0.05


def nsl_kdd_rows(limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Normal and attack rows among the first ``limit`` rows (label and difficulty dropped)."""
    normal: list[dict[str, Any]] = []
    attack: list[dict[str, Any]] = []
    for row in islice(iter_records(NSL_KDD), limit):
        record = {k: v for k, v in row.items() if k not in ("label", "difficulty")}
        (normal if row["label"] == "normal" else attack).append(record)
    return normal, attack


@pytest.fixture(scope="module")
def nsl() -> tuple[FitResult, list[dict[str, Any]], list[dict[str, Any]]]:
    """A detector fitted on 1,500 NSL-KDD normals, with held-out normals and attacks."""
    normal, attack = nsl_kdd_rows(4000)
    assert len(normal) > 1800
    result = fit_detector(normal[:1500], None, FitConfig(target_fpr=TARGET_FPR, cross_fit_below=0, train=FAST))
    return result, normal[1500:], attack[:400]


def test_threshold_is_the_conformal_order_statistic_of_the_calibration_scores(nsl: tuple[FitResult, Any, Any]) -> None:
    result, _, _ = nsl
    scorer = result.detector.scorer
    cal = scorer.calibration_scores
    assert len(cal) == result.metadata["calibration"]["n_calibration"] == 150
    k = math.ceil(151 * (1 - TARGET_FPR) - 1e-9)
    assert scorer.threshold == np.sort(cal)[k - 1]
    assert np.mean(cal > scorer.threshold) <= TARGET_FPR
    assert result.metadata["calibration"]["threshold"] == scorer.threshold


def test_calibration_scores_are_the_scores_of_held_out_normals(nsl: tuple[FitResult, Any, Any]) -> None:
    result, _, _ = nsl
    normal, _ = nsl_kdd_rows(4000)
    _, cal_idx = split_calibration(None, 1500, 0.1, FAST.seed)
    rescored = result.detector.score_records([normal[i] for i in cal_idx], top=0).scores
    # The fit sums the held-out terms in float64, scoring fuses float32 distance products: the last
    # digits depend on the CPU's BLAS kernels (bit-equal to 1e-6 on AVX-512 Intel, 2e-5 on AMD EPYC);
    # other rows would differ in the first digits.
    np.testing.assert_allclose(np.sort(rescored), result.detector.scorer.calibration_scores, rtol=1e-4)
    # ... and the fit says which rows they are, with their scores in that order (``fit --report``).
    np.testing.assert_array_equal(result.calibration_rows, cal_idx)
    np.testing.assert_allclose(result.calibration_scores, rescored, rtol=1e-4)


def test_attacks_score_higher_than_held_out_normals(nsl: tuple[FitResult, Any, Any]) -> None:
    result, held_out, attacks = nsl
    normal_scores = result.detector.score_records(held_out, top=0).scores
    attack_scores = result.detector.score_records(attacks, top=0).scores
    assert attack_scores.mean() > normal_scores.mean()
    labels = np.r_[np.zeros(len(normal_scores), bool), np.ones(len(attack_scores), bool)]
    assert roc_auc(np.r_[normal_scores, attack_scores], labels) > 0.8


def test_fit_records_what_it_did(nsl: tuple[FitResult, Any, Any]) -> None:
    result, _, _ = nsl
    training = result.metadata["training"]
    # no label column: the cluster-structure test decides the objective and the projection
    structure = training["cluster_structure"]
    clustered = max(structure["silhouettes"].values(), default=0.0) >= STRUCTURE_SILHOUETTE
    assert structure["clustered"] is clustered
    if clustered:
        assert training["objective"] == (
            "contrastive; positives: co-clustered rows (k-means co-association); "
            "negatives: rows clustered apart, synthetic outliers"
        )
        assert training["projection"] == "sphere"
    else:
        assert training["objective"] == (
            "contrastive; positives: all normal rows (one class); negatives: synthetic outliers"
        )
        assert training["projection"] == "stereographic"
        assert training["outlier_noise"] >= 5.0
    assert training["epochs_run"] == len(result.history.train_loss) <= 2
    assert training["n_train"] == 1350
    assert training["n_centroids"] == len(result.detector.scorer.centroids) >= training["n_classes"] >= 1
    assert {"duration", "src_bytes"} <= set(result.detector.spec.log_scale)


def test_small_calibration_set_warns(nsl: tuple[FitResult, Any, Any]) -> None:
    result, _, _ = nsl
    assert len(result.warnings) == 1
    assert "only 150 calibration normals" in result.warnings[0]
    assert result.metadata["calibration"]["warnings"] == result.warnings


def test_save_load_round_trip_after_fit(nsl: tuple[FitResult, Any, Any], tmp_path: Path) -> None:
    result, held_out, attacks = nsl
    batch = held_out[:50] + attacks[:50]
    before = result.detector.score_records(batch)
    result.detector.save(tmp_path / "model", result.metadata)
    loaded = Detector.load(tmp_path / "model")
    after = loaded.score_records(batch)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after.p_values, before.p_values)
    assert after.nearest_class == before.nearest_class
    assert loaded.manifest["calibration"]["target_fpr"] == TARGET_FPR


def test_calibrate_threshold_warns_only_when_the_set_is_too_small(caplog: pytest.LogCaptureFixture) -> None:
    scores = np.linspace(0.0, 1.0, 200)
    with caplog.at_level(logging.DEBUG, logger="training.calibration"):
        threshold, warnings = calibrate_threshold(scores[:150], 0.01)
    assert threshold == np.sort(scores[:150])[149]  # k = ceil(151 * 0.99) = 150
    assert len(warnings) == 1 and "only 150 calibration normals" in warnings[0]
    assert f">= {int(MIN_EXCEEDANCES / 0.01)} calibration rows" in warnings[0]
    assert [r.getMessage() for r in caplog.records] == ["calibration_set_small"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="training.calibration"):
        _, enough = calibrate_threshold(scores, 0.05)  # 200 * 0.05 = 10 expected exceedances
    assert enough == []
    assert caplog.records == []


@pytest.mark.parametrize("n", [8, 11, 12])
def test_too_few_rows_is_a_data_error(n: int) -> None:
    """11 and 12 rows used to calibrate on a holdout of one row (found in review: 45-67% of new
    normals flagged at a 1% target): too few to cross-fit is too few."""
    normal, _ = nsl_kdd_rows(40)
    with pytest.raises(DataError, match=f"too few normal rows to train and calibrate \\({n}\\); need at least 13"):
        fit_detector(normal[:n], None, FitConfig(train=FAST))


def test_a_cross_fitted_fit_is_not_refused_for_the_holdout_it_does_not_use() -> None:
    """Found in review: 19 rows at calibration fraction 0.75 were refused as "too few normal rows
    (19); need at least 13", though a cross-fitted fit trains and calibrates on all of them."""
    normal, _ = nsl_kdd_rows(40)
    result = fit_detector(normal[:19], None, FitConfig(calibration_fraction=0.75, train=FAST))
    assert result.metadata["calibration"]["method"] == "cross-fitted (5 folds over all 19 normals)"


def digits_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Digits 0-2 (normal classes, split 80/20 into train and held-out) and digit 3 (the anomaly)."""
    data = np.load(DIGITS, allow_pickle=False)
    x, y = data["X"], data["y_class"]
    rng = np.random.default_rng(0)
    train: list[dict[str, Any]] = []
    held_out: list[dict[str, Any]] = []
    for c in (0, 1, 2):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(0.8 * len(idx))
        for part, rows in ((train, idx[:cut]), (held_out, idx[cut:])):
            part.extend({**{f"f{j}": float(v) for j, v in enumerate(x[i])}, "class": str(c)} for i in rows)
    anomalies = [{f"f{j}": float(v) for j, v in enumerate(x[i])} for i in np.flatnonzero(y == 3)]
    return train, held_out, anomalies


@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_labelled_fit_gives_centroids_per_class_and_flags_an_unseen_class(loss: str) -> None:
    train, held_out, anomalies = digits_records()
    spec = FeatureSpec(numeric=[f"f{j}" for j in range(64)], label_field="class")
    config = FitConfig(target_fpr=0.05, centroids_per_class=3, train=FAST.model_copy(update={"loss": loss}))
    result = fit_detector(train, spec, config)
    scorer = result.detector.scorer
    assert scorer.class_names == ["0", "1", "2"]
    assert sorted(set(scorer.centroid_class.tolist())) == [0, 1, 2]  # at least one centroid per class
    assert result.metadata["training"]["objective"].startswith(f"{loss}; positives: labelled classes")
    features = [{k: v for k, v in r.items() if k != "class"} for r in held_out]
    normal = result.detector.score_records(features, top=0)
    odd = result.detector.score_records(anomalies, top=0)
    truth = [r["class"] for r in held_out]
    assert np.mean(np.asarray(normal.nearest_class) == np.asarray(truth)) > 0.9
    labels = np.r_[np.zeros(len(normal.scores), bool), np.ones(len(odd.scores), bool)]
    assert odd.scores.mean() > normal.scores.mean()
    assert roc_auc(np.r_[normal.scores, odd.scores], labels) > 0.8


def test_the_embedding_term_is_scaled_by_normals_training_did_not_see() -> None:
    """Training pulls the rows it saw toward their centroids, the longer it runs the more. The
    embedding term is scaled by the rows held out for early stopping (centroids placed without
    them), so new normals score about 1 on it, however long the encoder trained; the rows it
    trained on score well below that (what a scale taken from them would have set)."""
    train, held_out, _ = digits_records()
    spec = FeatureSpec(numeric=[f"f{j}" for j in range(64)], label_field="class")
    long = TrainConfig(epochs=80, patience=80, min_steps=0, threads=1, progress=False)
    result = fit_detector(train, spec, FitConfig(target_fpr=0.05, cross_fit_below=0, train=long))
    detector, view = result.detector, result.detector.scorer.input_neighbours
    assert view is not None
    assert result.metadata["training"]["embedding_scale_from"].endswith("rows held out for early stopping")

    def median_term(records: list[dict[str, Any]]) -> float:
        features = detector.featurizer.transform([{k: v for k, v in r.items() if k != "class"} for r in records])
        return float(np.median(detector.scorer.geometry.nearest(detector.embed(features)).score)) / view.embedding_scale

    assert median_term(held_out) == pytest.approx(1.0, abs=0.15)
    assert median_term(train) < 0.85


@pytest.mark.parametrize(("n", "scale_from", "centroid_rows"), [(115, "the training rows", 115), (400, "40 rows", 360)])
def test_every_model_of_a_fit_takes_its_embedding_scale_from_rows_of_one_kind(
    n: int, scale_from: str, centroid_rows: int
) -> None:
    """115 normals: the final model would hold out 12 rows, its fold models 9, under the floor of
    10; so none holds rows out of its centroids (the fold models' scales would otherwise be of
    another kind than the final model's, and small sets lose no row). 400: every model does."""
    rng = np.random.default_rng(0)
    records = [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(n, 2))]
    spec = FeatureSpec(numeric=["a", "b"])
    result = fit_detector(records, spec, FitConfig(target_fpr=0.05, train=FAST))
    training = result.metadata["training"]
    assert result.metadata["calibration"]["method"].startswith("cross-fitted")
    assert training["embedding_scale_from"].startswith(scale_from)
    assert training["n_centroid_rows"] == centroid_rows


@pytest.mark.parametrize("row", [{"a": 1.0, "b": 2.0, "c": "x"}, {"a": 5.0, "b": 7.0}], ids=["mixed", "numeric"])
def test_normals_that_are_all_alike_are_not_flagged_in_any_batch(row: dict[str, Any]) -> None:
    """Found in review: 200 identical rows gave a threshold of 0 and scored their own row 0.71 (the
    centroid distance's float32 noise divided by a 1e-6 radius), or 0 or 1.0 by batch size."""
    fitted = fit_detector([dict(row) for _ in range(200)], None, FitConfig(train=FAST))
    detector = fitted.detector
    for batch in (1, 2, 8, 64):
        result = detector.score_records([dict(row) for _ in range(batch)], top=0)
        assert not result.flagged.any() and np.all(result.scores == 0.0), (batch, result.scores[:3])
    other = dict(row, a=row["a"] + 1.0)
    assert detector.score_records([other], top=0).flagged[0]  # anything else is new


def test_a_label_field_with_a_class_per_row_is_refused_naming_the_cause() -> None:
    """Found in review: refused as "too few normal rows to train and calibrate (200); need at least 13"."""
    records = [{"a": float(i), "b": float(i % 7), "k": f"c{i}"} for i in range(200)]
    spec = FeatureSpec(numeric=["a", "b"], label_field="k")
    with pytest.raises(DataError, match="label field 'k': every one of the 200 normal rows has a class of its own"):
        fit_detector(records, spec, FitConfig(train=FAST))
    with pytest.raises(DataError, match="too few normal rows"):  # too few is what to say about 3 rows
        fit_detector(records[:3], spec, FitConfig(train=FAST))


class _SeenError(Exception):
    pass


def test_numpys_blas_gets_the_threads_torch_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: the BLAS limit was chosen from the number of fields before featurizing, so
    257 one-hot columns with a large encoder gave torch 4 threads and BLAS 1; then from all rows
    while torch counted those left after the early-stopping holdout (270 rows: 243, by the batch size)."""
    from threadpoolctl import threadpool_info  # noqa: PLC0415

    from training.learning import budget, trainer  # noqa: PLC0415

    monkeypatch.setattr(budget, "idle_cpus", lambda: 4)
    seen: dict[str, Any] = {}

    def spy(*args: Any, **kwargs: Any) -> budget.Budget:
        seen["torch"] = budget.resolve_budget(*args, **kwargs).threads
        seen["blas"] = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
        raise _SeenError

    monkeypatch.setattr(trainer, "resolve_budget", spy)
    config = FitConfig(train=TrainConfig(hidden=(2700, 2700), progress=False), cross_fit_below=0)
    for rows, kinds in ((400, 300), (300, 200)):  # 300: 270 train (BLAS), 243 after the holdout
        records = [{"service": f"s{i % kinds}"} for i in range(rows)]
        with pytest.raises(_SeenError):
            fit_detector(records, FeatureSpec(numeric=[], categorical=["service"]), config)
        assert seen["blas"] == {seen["torch"]}, (rows, seen)


def test_a_few_extreme_rows_do_not_become_a_normal_class_of_their_own() -> None:
    """Found in review: 3 far rows among 1,000 give k = 2 a silhouette near 1, and the class
    derivation (unlike the structure test) counted such a clustering."""
    rng = np.random.default_rng(0)
    z = np.r_[rng.normal(size=(997, 3)) * 0.3, rng.normal(size=(3, 3)) * 0.05 + 20.0].astype(np.float32)
    _, labels, selection = derive_classes(z, FitConfig())
    assert np.bincount(labels).min() >= 0.02 * len(z)
    assert "no cluster under 2% of the rows" in selection["criterion"]
    blobs = np.r_[rng.normal(size=(500, 3)) * 0.3, rng.normal(size=(500, 3)) * 0.3 + 20.0].astype(np.float32)
    assert derive_classes(blobs, FitConfig())[2]["k"] == 2  # real clusters still count


def test_fit_gives_the_callers_torch_thread_count_back() -> None:
    rows = [{"a": float(i % 17), "b": float(i % 5)} for i in range(200)]
    before = torch.get_num_threads()
    wanted = 3 if before != 3 else 2
    torch.set_num_threads(wanted)
    try:
        fit_detector(rows, None, FitConfig(train=TrainConfig(threads=1, progress=False, epochs=2)))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n_blob", [400, 7500])  # cross-fitted (< 1,000 calibration normals) and held out
def test_rows_marked_untrained_are_calibrated_on_but_never_trained_on(n_blob: int) -> None:
    """The retrain job's rows the live model flags: no model learns them as normal, but the
    threshold comes from the traffic with them in it."""
    rng = np.random.default_rng(0)
    blob = [{"a": float(x), "b": float(y)} for x, y in rng.normal(size=(n_blob, 2))]
    n_far = n_blob // 40
    far = [{"a": 40.0 + float(x), "b": -40.0 + float(y)} for x, y in rng.normal(size=(n_far, 2))]
    rows = blob + far
    config = FitConfig(train=TrainConfig(threads=1, progress=False, epochs=2))
    marked = fit_detector(rows, None, config, untrained=[False] * n_blob + [True] * n_far)
    trained_on = fit_detector(rows, None, config)
    assert marked.metadata["training"]["n_train"] < trained_on.metadata["training"]["n_train"]
    assert marked.metadata["calibration"]["n_calibration"] == trained_on.metadata["calibration"]["n_calibration"]
    far_flagged = marked.detector.score_records(far).flagged.mean()
    assert far_flagged == 1.0  # never learnt as normal
    assert trained_on.detector.score_records(far).flagged.mean() < 0.5  # learnt as normal


def test_untrained_flags_must_match_the_records() -> None:
    with pytest.raises(ValueError, match="untrained has 2 flags for 3 records"):
        fit_detector([{"a": 1.0}] * 3, None, FitConfig(), untrained=[True, False])


@pytest.mark.parametrize(
    "trainable",
    [
        range(8),  # found in review: 8 trainable rows of 3,000 read "too few normal rows (3000)"
        range(0, 3000, 300),  # 10 spread out: about 8 for each fold model
        range(13),  # 13 in a row: all in one or two folds
    ],
)
def test_too_few_rows_left_to_train_on_are_named_as_such(trainable: range) -> None:
    rows = [{"a": float(i % 17), "b": float(i % 5)} for i in range(3000)]
    keep = set(trainable)
    with pytest.raises(DataError, match=rf"too few normal rows to train on \({len(keep)} of 3000, \d+ for a model"):
        fit_detector(rows, None, FitConfig(), untrained=[i not in keep for i in range(3000)])
