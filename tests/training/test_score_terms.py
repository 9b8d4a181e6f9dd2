"""The choice of the score's terms: embedding + input, input alone, either + rank-Gauss (training.score_terms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector.errors import DataError
from detector.model import Detector
from training.config import TrainConfig
from training.fit import FitConfig, fit_detector
from training.score_terms import HeldOutTerms, ScaledTerms, TermsChoice, choose_terms, shuffled_columns

FAST = TrainConfig(epochs=2, min_steps=0, threads=1, progress=False)


def test_shuffled_columns_keep_every_column_and_break_the_dependence() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000).astype(np.float32)
    x = np.stack([a, a + 0.01 * rng.normal(size=2000).astype(np.float32)], axis=1)
    out = shuffled_columns(x, np.random.default_rng(1))
    for j in range(2):
        np.testing.assert_array_equal(np.sort(out[:, j]), np.sort(x[:, j]))
    assert np.corrcoef(x.T)[0, 1] > 0.99
    assert abs(np.corrcoef(out.T)[0, 1]) < 0.1


def _terms(
    embedding_separates: float, input_separates: float, gauss_separates: float | None = None, n: int = 400
) -> HeldOutTerms:
    """Normals ~1 on every term; shuffled rows shifted up by the given amounts (plus noise);
    ``gauss_separates=None``: no rank-Gauss term."""
    rng = np.random.default_rng(3)

    def rows(e_shift: float, d_shift: float, g_shift: float | None) -> ScaledTerms:
        gauss = None if g_shift is None else 1.0 + g_shift + rng.normal(0, 0.3, n)
        return ScaledTerms(1.0 + e_shift + rng.normal(0, 0.3, n), 1.0 + d_shift + rng.normal(0, 0.3, n), gauss)

    normal_gauss = None if gauss_separates is None else 0.0
    return HeldOutTerms(rows(0.0, 0.0, normal_gauss), rows(embedding_separates, input_separates, gauss_separates))


def choose_embedding_weight(
    parts: list[HeldOutTerms], labelled: bool, mode: str = "auto"
) -> tuple[float, dict[str, Any]]:
    """The embedding weight and evidence of :func:`choose_terms` (without a rank-Gauss term)."""
    choice = choose_terms(parts, labelled, mode)  # type: ignore[arg-type]
    assert choice.gauss_weight == 0.0
    return choice.embedding_weight, choice.evidence


def test_the_input_term_alone_is_kept_when_the_embedding_only_adds_noise() -> None:
    weight, evidence = choose_embedding_weight([_terms(0.0, 0.5)], labelled=False)
    assert weight == 0.0
    assert evidence["shuffled_auroc_input_alone"] > evidence["shuffled_auroc_both_terms"]
    assert evidence["embedding_weight"] == 0.0 and evidence["n_held_out"] == 400


def test_both_terms_are_kept_when_the_embedding_helps() -> None:
    weight, evidence = choose_embedding_weight([_terms(0.5, 0.3)], labelled=False)
    assert weight == 1.0
    assert evidence["shuffled_auroc_both_terms"] > evidence["shuffled_auroc_input_alone"]


def test_a_tie_keeps_both_terms() -> None:
    same = ScaledTerms(np.zeros(10), np.arange(10.0))
    shifted = ScaledTerms(np.zeros(10), np.arange(10.0) + 20)
    assert choose_embedding_weight([HeldOutTerms(same, shifted)], labelled=False)[0] == 1.0


def test_labelled_normals_keep_both_terms_whatever_the_test_says() -> None:
    weight, evidence = choose_embedding_weight([_terms(0.0, 0.5)], labelled=True)
    assert weight == 1.0
    assert evidence["rule"].startswith("class labels given: embedding term kept")
    assert evidence["shuffled_auroc_input_alone"] > evidence["shuffled_auroc_both_terms"]  # recorded all the same


def test_each_model_is_judged_on_its_own_rows() -> None:
    """Two fold models whose embedding terms sit on different scales: pooled, the sum would lose to the
    input term; judged per model (and averaged), the embedding term's help counts."""
    rng = np.random.default_rng(5)
    parts = []
    for scale in (1.0, 3.0):
        normal = ScaledTerms(scale * rng.normal(1.0, 0.1, 300), rng.normal(1.0, 0.3, 300))
        shuffled = ScaledTerms(scale * rng.normal(1.3, 0.1, 300), rng.normal(1.4, 0.3, 300))
        parts.append(HeldOutTerms(normal, shuffled))
    weight, evidence = choose_embedding_weight(parts, labelled=False)
    assert weight == 1.0 and evidence["n_models"] == 2 and evidence["n_held_out"] == 600
    pooled = HeldOutTerms(
        ScaledTerms(*(np.concatenate([getattr(p.normals, f) for p in parts]) for f in ("embedding", "input"))),
        ScaledTerms(*(np.concatenate([getattr(p.shuffled, f) for p in parts]) for f in ("embedding", "input"))),
    )
    assert choose_embedding_weight([pooled], labelled=False)[0] == 0.0


def test_the_rank_gauss_term_joins_when_it_tells_shuffled_rows_apart_better() -> None:
    choice = choose_terms([_terms(0.8, 0.3, 1.0)], labelled=False)
    assert (choice.embedding_weight, choice.gauss_weight) == (1.0, 1.0)
    assert choice.evidence["chosen"] == "both terms + rank-Gauss"
    assert set(choice.evidence["shuffled_auroc"]) == {
        "both terms",
        "input distance alone",
        "both terms + rank-Gauss",
        "input distance + rank-Gauss",
    }


def test_the_rank_gauss_term_stays_out_when_it_only_adds_noise() -> None:
    choice = choose_terms([_terms(0.5, 0.3, 0.0)], labelled=False)
    assert (choice.embedding_weight, choice.gauss_weight) == (1.0, 0.0)


def test_input_and_rank_gauss_without_the_embedding() -> None:
    choice = choose_terms([_terms(0.0, 0.5, 0.8)], labelled=False)
    assert (choice.embedding_weight, choice.gauss_weight) == (0.0, 1.0)
    labelled = choose_terms([_terms(0.0, 0.5, 0.8)], labelled=True)
    assert (labelled.embedding_weight, labelled.gauss_weight) == (1.0, 1.0)


@pytest.mark.parametrize(("gauss", "weight"), [("on", 1.0), ("off", 0.0)])
def test_a_set_gauss_choice_is_imposed(gauss: str, weight: float) -> None:
    choice: TermsChoice = choose_terms([_terms(0.5, 0.3, 0.3 if gauss == "on" else 1.0)], False, "auto", gauss)  # type: ignore[arg-type]
    assert choice.gauss_weight == weight
    assert "set: rank-Gauss term" in choice.evidence["rule"]


def test_asking_for_a_rank_gauss_term_the_models_lack_is_an_error() -> None:
    with pytest.raises(ValueError, match="rank-Gauss"):
        choose_terms([_terms(0.5, 0.3)], False, "auto", "on")


def test_scaled_terms_refuse_a_missing_rank_gauss_term() -> None:
    with pytest.raises(ValueError, match="rank-Gauss"):
        ScaledTerms(np.zeros(3), np.zeros(3)).score(1.0, 1.0)


@pytest.mark.parametrize(("mode", "weight"), [("both", 1.0), ("input", 0.0)])
def test_a_set_mode_imposes_the_terms_and_still_records_the_test(mode: str, weight: float) -> None:
    chosen, evidence = choose_embedding_weight([_terms(0.5, 0.3)], False, mode)  # type: ignore[arg-type]
    assert chosen == evidence["embedding_weight"] == weight
    assert evidence["rule"].startswith("set: ")
    assert evidence["shuffled_auroc_both_terms"] > evidence["shuffled_auroc_input_alone"]


def _rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Normals on a curve in 4 dimensions (strong dependence between the features)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(-2, 2, n)
    x = np.stack([t, t**2, np.sin(2 * t), np.cos(t)], axis=1) + rng.normal(0, 0.05, (n, 4))
    return [{f"f{j}": float(v) for j, v in enumerate(row)} for row in x]


@pytest.mark.parametrize("cross_fit_below", [0, 1000], ids=["held-out", "cross-fitted"])
def test_the_fit_applies_and_records_its_choice(cross_fit_below: int, tmp_path: Path) -> None:
    config = FitConfig(target_fpr=0.05, cross_fit_below=cross_fit_below, train=FAST)
    result = fit_detector(_rows(600, 0), None, config)
    evidence = result.metadata["training"]["score_terms"]
    view = result.detector.scorer.input_neighbours
    assert view is not None
    assert view.embedding_weight == evidence["embedding_weight"] in (0.0, 1.0)
    assert (view.gauss is not None) == (evidence["gauss_weight"] == 1.0)
    assert evidence["n_held_out"] == (60 if cross_fit_below == 0 else 600)
    assert evidence["n_models"] == (1 if cross_fit_below == 0 else 5)
    loaded = Detector.load(result.detector.save(tmp_path / "model", result.metadata))
    assert loaded.scorer.input_neighbours.embedding_weight == view.embedding_weight  # type: ignore[union-attr]
    assert loaded.manifest["format_version"] == (2 if view.gauss is not None else 1)
    assert loaded.manifest["training"]["score_terms"] == evidence
    # the calibration scores are the chosen score's: a fresh normal is flagged at about the target rate
    fresh = result.detector.score_records(_rows(2000, 1), top=0)
    assert 0.0 < float(np.mean(fresh.flagged)) < 0.15


def test_asking_for_the_rank_gauss_term_without_what_it_needs_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="needs the input-space term"):
        FitConfig(gauss_term="on", input_budget=0)
    rows = [{"kind": ["a", "b", "c"][i % 3], "zone": ["x", "y"][i % 2]} for i in range(300)]
    with pytest.raises(DataError, match="numeric fields"):
        fit_detector(rows, None, FitConfig(gauss_term="on", cross_fit_below=0, train=FAST))


@pytest.mark.parametrize("gauss_term", ["on", "off"])
def test_the_rank_gauss_term_scores_the_same_after_a_round_trip(gauss_term: str, tmp_path: Path) -> None:
    config = FitConfig(target_fpr=0.05, cross_fit_below=0, gauss_term=gauss_term, train=FAST)  # type: ignore[arg-type]
    result = fit_detector(_rows(600, 0), None, config)
    view = result.detector.scorer.input_neighbours
    assert view is not None and (view.gauss is not None) == (gauss_term == "on")
    assert result.metadata["training"]["n_gauss_points"] == (0 if view.gauss is None else len(view.gauss.points))
    loaded = Detector.load(result.detector.save(tmp_path / "model", result.metadata))
    fresh = _rows(300, 2)
    np.testing.assert_allclose(
        loaded.score_records(fresh, top=0).scores, result.detector.score_records(fresh, top=0).scores, rtol=1e-6
    )
