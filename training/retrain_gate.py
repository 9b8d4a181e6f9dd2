"""The promotion gate of the retrain job: each model's figures on the same data, and the decision.

Pure numpy; no I/O. Conventions as in :mod:`training.evaluation`: higher score = more anomalous,
an event is flagged when ``score > threshold`` (each model at its own threshold).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from detector.errors import DataError
from detector.model import Detector

QUANTILES = ("0.5", "0.9", "0.99")


@dataclass(frozen=True)
class ModelFigures:
    """One model measured on the held-out recent normals (and optional labelled anomalies).

    Attributes:
        version: the model version (``None`` for a candidate not registered, e.g. a dry run).
        threshold: the model's own calibrated threshold.
        target_fpr: the FPR its threshold was calibrated for (``None`` when the manifest lacks it).
        n_holdout: held-out normal rows scored.
        fpr: realised false-positive rate on them (share with ``score > threshold``).
        score_quantiles: holdout score quantiles (``"0.5"``, ``"0.9"``, ``"0.99"``).
        calibration_quantiles: the same quantiles of the model's own calibration scores.
        n_anomalies: labelled anomalies scored (0 when none were given).
        recall: share of the anomalies flagged, or ``None`` without anomalies.
    """

    version: str | None
    threshold: float
    target_fpr: float | None
    n_holdout: int
    fpr: float
    score_quantiles: dict[str, float]
    calibration_quantiles: dict[str, float]
    n_anomalies: int = 0
    recall: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateConfig:
    """Tolerances of the gate (absolute rates).

    Attributes:
        fpr_tolerance: the candidate's holdout FPR must lie within this of its target
            (``None``: half the target).
        recall_tolerance: the candidate may lose at most this much recall against the live model.
    """

    fpr_tolerance: float | None = None
    recall_tolerance: float = 0.02

    def fpr_tolerance_for(self, target: float) -> float:
        return 0.5 * target if self.fpr_tolerance is None else self.fpr_tolerance


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate: ``passed`` iff ``value`` satisfies the stated bound(s)."""

    name: str
    passed: bool
    value: float | None
    lower: float | None
    upper: float | None
    detail: str


@dataclass(frozen=True)
class GateDecision:
    """Promote or keep, with every check and a one-line reason."""

    promote: bool
    reason: str
    checks: list[GateCheck] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}


def quantiles_of(scores: NDArray[np.float64]) -> dict[str, float]:
    """Score quantiles at :data:`QUANTILES` (empty dict for no scores)."""
    if len(scores) == 0:
        return {}
    return {q: float(np.quantile(scores, float(q))) for q in QUANTILES}


def measure(
    detector: Detector,
    holdout_features: NDArray[np.float32],
    anomaly_features: NDArray[np.float32] | None,
    version: str | None,
) -> ModelFigures:
    """Score featurized holdout normals (and anomalies) with ``detector`` at its own threshold.

    Raises:
        DataError: no holdout rows.
    """
    if len(holdout_features) == 0:
        raise DataError("no held-out normal rows to evaluate on")
    normal = detector.score_features(holdout_features).score
    threshold = detector.threshold
    calibration = detector.manifest.get("calibration")
    target = calibration.get("target_fpr") if isinstance(calibration, dict) else None
    recall = None
    n_anomalies = 0
    if anomaly_features is not None and len(anomaly_features):
        anomalous = detector.score_features(anomaly_features).score
        n_anomalies = len(anomalous)
        recall = float(np.mean(anomalous > threshold))
    return ModelFigures(
        version=version,
        threshold=float(threshold),
        target_fpr=float(target) if isinstance(target, (int, float)) else None,
        n_holdout=len(normal),
        fpr=float(np.mean(normal > threshold)),
        score_quantiles=quantiles_of(normal),
        calibration_quantiles=quantiles_of(np.asarray(detector.scorer.calibration_scores, dtype=np.float64)),
        n_anomalies=n_anomalies,
        recall=recall,
    )


def decide(candidate: ModelFigures, live: ModelFigures | None, config: GateConfig) -> GateDecision:
    """The gate: promote only if every check passes.

    Checks: the candidate's holdout FPR lies within the tolerance of its target FPR (both
    sides: a far lower FPR means a threshold set too high for recent data); and, when both
    models were measured on labelled anomalies, the candidate's recall is at least the live
    model's minus ``recall_tolerance``. Without a live model only the FPR check applies.

    Raises:
        DataError: the candidate has no target FPR.
    """
    if candidate.target_fpr is None:
        raise DataError("the candidate's manifest has no calibration.target_fpr")
    target = candidate.target_fpr
    tolerance = config.fpr_tolerance_for(target)
    low, high = max(0.0, target - tolerance), target + tolerance
    checks = [
        GateCheck(
            "candidate_fpr_within_tolerance",
            low <= candidate.fpr <= high,
            candidate.fpr,
            low,
            high,
            f"candidate FPR {candidate.fpr:.4f} on {candidate.n_holdout} held-out recent normals, "
            f"target {target:g} +/- {tolerance:g}",
        )
    ]
    if live is not None and live.recall is not None and candidate.recall is not None:
        floor = live.recall - config.recall_tolerance
        checks.append(
            GateCheck(
                "candidate_recall_not_lower",
                candidate.recall >= floor,
                candidate.recall,
                floor,
                None,
                f"candidate recall {candidate.recall:.4f} vs live {live.recall:.4f} "
                f"(tolerance {config.recall_tolerance:g}) on {candidate.n_anomalies} labelled anomalies",
            )
        )
    failed = [c for c in checks if not c.passed]
    if failed:
        return GateDecision(False, "kept the live model: " + "; ".join(c.detail for c in failed), checks)
    basis = "no live model" if live is None else f"live model {live.version}"
    return GateDecision(True, f"promoted ({basis}): " + "; ".join(c.detail for c in checks), checks)
