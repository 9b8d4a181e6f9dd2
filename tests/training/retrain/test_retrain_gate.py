"""The retrain promotion gate on constructed figures, and measure() on a real tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_model import TinyModel

from detector.errors import DataError
from detector.model import Detector
from training.retrain.gate import GateConfig, ModelFigures, decide, measure


def figures(
    fpr: float,
    recall: float | None = None,
    target: float | None = 0.01,
    version: str = "v",
    n: int = 2000,
    recall_at_equal_fpr: float | None = None,
) -> ModelFigures:
    return ModelFigures(
        version=version,
        threshold=1.0,
        target_fpr=target,
        n_holdout=n,
        fpr=round(fpr * n) / n,
        score_quantiles={"0.5": 0.5, "0.9": 0.8, "0.99": 1.1},
        calibration_quantiles={"0.5": 0.5, "0.9": 0.8, "0.99": 1.0},
        n_anomalies=0 if recall is None else 500,
        recall=recall,
        reference_fpr=0.01 if recall_at_equal_fpr is not None else None,
        recall_at_reference_fpr=recall_at_equal_fpr,
    )


def test_first_model_promoted_when_its_fpr_is_within_tolerance() -> None:
    decision = decide(figures(0.012), None, GateConfig())
    assert decision.promote
    assert [c.name for c in decision.checks] == ["candidate_fpr_within_tolerance"]
    assert decision.checks[0].lower == pytest.approx(0.005) and decision.checks[0].upper == pytest.approx(0.015)
    assert "no live model" in decision.reason and "95% CI" in decision.reason


def test_noise_around_the_range_is_not_a_refusal() -> None:
    # 30 of 2,000 is 0.015 (on the edge): the interval (0.010-0.021) does not show it outside.
    assert decide(figures(0.0151), figures(0.01), GateConfig()).promote


@pytest.mark.parametrize(("fpr", "side"), [(0.03, "above"), (0.2, "above"), (0.0, "below")])
def test_fpr_shown_outside_the_tolerated_range_keeps(fpr: float, side: str) -> None:
    decision = decide(figures(fpr), figures(0.01), GateConfig())
    assert not decision.promote
    assert decision.checks[0].verdict == "fail"
    assert decision.reason.startswith("kept the live model: candidate FPR")
    assert f"shown {side} the tolerated range" in decision.reason


def test_too_few_held_out_normals_are_inconclusive_not_a_refusal_on_noise() -> None:
    # The case from the issue: 156 rows, target 1%, realised FPR 0 (about 1.6 false positives expected).
    decision = decide(figures(0.0, n=156), figures(0.01, n=156), GateConfig())
    check = decision.checks[0]
    assert not decision.promote and check.verdict == "inconclusive"
    assert "not enough held-out normals to judge FPR at this target" in decision.reason
    assert "need at least 1000" in decision.reason
    first = decide(figures(0.0, n=156), None, GateConfig())
    assert first.reason.startswith("kept the candidate unpromoted (no live model): not enough held-out normals")


def test_an_fpr_clearly_too_high_is_refused_even_on_few_rows() -> None:
    decision = decide(figures(0.104, n=156), None, GateConfig())
    assert decision.checks[0].verdict == "fail" and "shown above" in decision.reason


def test_explicit_fpr_tolerance_is_absolute() -> None:
    assert decide(figures(0.03), None, GateConfig(fpr_tolerance=0.025)).promote
    assert not decide(figures(0.02, n=20000), None, GateConfig(fpr_tolerance=0.005)).promote
    assert decide(figures(0.02, n=20000), None, GateConfig(fpr_tolerance=0.015)).promote


def test_false_refusals_stay_near_the_stated_confidence_on_synthetic_holdouts() -> None:
    """Truth known: held-out normals whose true FPR is the target, or three times it."""
    rng = np.random.default_rng(0)
    config = GateConfig(confidence=0.95)
    for n in (1000, 5000):
        at_target = [decide(figures(k / n, n=n), None, config).promote for k in rng.binomial(n, 0.01, 300)]
        assert np.mean(at_target) >= 0.95  # each side errs at most 2.5%
        too_high = [decide(figures(k / n, n=n), None, config).promote for k in rng.binomial(n, 0.03, 300)]
        assert np.mean(too_high) <= (0.05 if n == 5000 else 0.6)


def test_recall_loss_within_tolerance_promotes() -> None:
    decision = decide(figures(0.01, recall=0.885), figures(0.01, recall=0.9, version="live"), GateConfig())
    assert decision.promote
    assert [c.name for c in decision.checks] == ["candidate_fpr_within_tolerance", "candidate_recall_not_lower"]
    assert decision.checks[1].lower == pytest.approx(0.88)
    assert "live model live" in decision.reason and not decision.live_miscalibrated


def test_recall_loss_beyond_tolerance_keeps_even_with_a_good_fpr() -> None:
    decision = decide(figures(0.01, recall=0.85), figures(0.012, recall=0.9), GateConfig(recall_tolerance=0.02))
    assert not decision.promote
    assert decision.checks[0].passed and not decision.checks[1].passed
    assert "recall 0.8500 vs live 0.9000 each at its own threshold" in decision.reason


def test_a_miscalibrated_live_model_is_reported_and_compared_at_equal_realised_fpr() -> None:
    # The live model flags 10.4% of recent normals against a 1% target: its recall is bought with
    # false positives. At equal realised FPR (1%) the candidate is the better detector.
    live = figures(0.104, recall=0.95, n=2000, version="live", recall_at_equal_fpr=0.70)
    candidate = figures(0.01, recall=0.80, recall_at_equal_fpr=0.80)
    decision = decide(candidate, live, GateConfig())
    assert decision.live_miscalibrated and decision.live_calibration is not None
    assert decision.live_calibration.verdict == "fail"
    assert decision.promote, decision.reason
    assert "live model live is miscalibrated: live FPR 0.1040" in decision.reason
    assert "at equal realised FPR 0.01 (the live model is miscalibrated)" in decision.reason
    # Well calibrated live model: each at its own threshold, and this candidate loses.
    assert not decide(candidate, figures(0.01, recall=0.95, recall_at_equal_fpr=0.95), GateConfig()).promote
    report = decision.as_dict()
    assert report["live_miscalibrated"] is True and report["live_calibration"]["name"] == "live_fpr_within_tolerance"


def test_recall_check_needs_anomalies_for_both_models() -> None:
    decision = decide(figures(0.01, recall=0.1), figures(0.01, recall=None), GateConfig())
    assert decision.promote and len(decision.checks) == 1


def test_candidate_without_target_fpr_is_an_error() -> None:
    with pytest.raises(DataError, match="target_fpr"):
        decide(figures(0.01, target=None), None, GateConfig())


def test_measure_matches_the_detector_flag_rule(tiny_model: TinyModel) -> None:
    detector = Detector.load(tiny_model.path)
    normal = detector.featurizer.transform(tiny_model.normal_events)
    attack = detector.featurizer.transform(tiny_model.attack_events[:300])
    result = measure(detector, normal, attack, detector.version, reference_fpr=0.1)
    scored_normal = detector.score_records(tiny_model.normal_events).flagged
    scored_attack = detector.score_records(tiny_model.attack_events[:300]).flagged
    assert result.fpr == pytest.approx(float(np.mean(scored_normal)))
    assert result.recall == pytest.approx(float(np.mean(scored_attack)))
    assert result.target_fpr == 0.05 and result.n_holdout == len(normal) and result.n_anomalies == 300
    assert result.calibration_quantiles["0.9"] <= result.calibration_quantiles["0.99"]
    assert result.threshold == pytest.approx(detector.threshold)
    normal_scores = detector.score_features(normal).score
    equal_fpr_threshold = np.quantile(normal_scores, 0.9, method="higher")
    assert np.mean(normal_scores > equal_fpr_threshold) <= 0.1
    attack_scores = detector.score_features(attack).score
    assert result.recall_at_reference_fpr == pytest.approx(float(np.mean(attack_scores > equal_fpr_threshold)))
    assert result.as_dict()["false_positives"] == round(result.fpr * len(normal))
    with pytest.raises(DataError):
        measure(detector, normal[:0], None, None)
