"""The retrain promotion gate on constructed figures, and measure() on a real tiny model."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_model import TinyModel

from detector.errors import DataError
from detector.model import Detector
from training.retrain_gate import GateConfig, ModelFigures, decide, measure


def figures(fpr: float, recall: float | None = None, target: float | None = 0.01, version: str = "v") -> ModelFigures:
    return ModelFigures(
        version=version,
        threshold=1.0,
        target_fpr=target,
        n_holdout=2000,
        fpr=fpr,
        score_quantiles={"0.5": 0.5, "0.9": 0.8, "0.99": 1.1},
        calibration_quantiles={"0.5": 0.5, "0.9": 0.8, "0.99": 1.0},
        n_anomalies=0 if recall is None else 500,
        recall=recall,
    )


def test_first_model_promoted_when_its_fpr_is_within_tolerance() -> None:
    decision = decide(figures(0.012), None, GateConfig())
    assert decision.promote
    assert [c.name for c in decision.checks] == ["candidate_fpr_within_tolerance"]
    assert decision.checks[0].lower == pytest.approx(0.005) and decision.checks[0].upper == pytest.approx(0.015)
    assert "no live model" in decision.reason


@pytest.mark.parametrize("fpr", [0.0151, 0.004, 0.2])
def test_fpr_outside_the_default_tolerance_keeps(fpr: float) -> None:
    decision = decide(figures(fpr), figures(0.01), GateConfig())
    assert not decision.promote
    assert not decision.checks[0].passed
    assert decision.reason.startswith("kept the live model: candidate FPR")


def test_explicit_fpr_tolerance_is_absolute() -> None:
    assert decide(figures(0.03), None, GateConfig(fpr_tolerance=0.025)).promote
    assert not decide(figures(0.011), None, GateConfig(fpr_tolerance=0.0)).promote
    assert decide(figures(0.01), None, GateConfig(fpr_tolerance=0.0)).promote


def test_recall_loss_within_tolerance_promotes() -> None:
    decision = decide(figures(0.01, recall=0.885), figures(0.01, recall=0.9, version="live"), GateConfig())
    assert decision.promote
    assert [c.name for c in decision.checks] == ["candidate_fpr_within_tolerance", "candidate_recall_not_lower"]
    assert decision.checks[1].lower == pytest.approx(0.88)
    assert "live model live" in decision.reason


def test_recall_loss_beyond_tolerance_keeps_even_with_a_good_fpr() -> None:
    decision = decide(figures(0.01, recall=0.85), figures(0.03, recall=0.9), GateConfig(recall_tolerance=0.02))
    assert not decision.promote
    assert decision.checks[0].passed and not decision.checks[1].passed
    assert "recall 0.8500 vs live 0.9000" in decision.reason


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
    result = measure(detector, normal, attack, detector.version)
    scored_normal = detector.score_records(tiny_model.normal_events).flagged
    scored_attack = detector.score_records(tiny_model.attack_events[:300]).flagged
    assert result.fpr == pytest.approx(float(np.mean(scored_normal)))
    assert result.recall == pytest.approx(float(np.mean(scored_attack)))
    assert result.target_fpr == 0.05 and result.n_holdout == len(normal) and result.n_anomalies == 300
    assert result.calibration_quantiles["0.9"] <= result.calibration_quantiles["0.99"]
    assert result.threshold == pytest.approx(detector.threshold)
    with pytest.raises(DataError):
        measure(detector, normal[:0], None, None)
