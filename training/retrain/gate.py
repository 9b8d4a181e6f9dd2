"""The promotion gate of the retrain job: each model's figures on the same data, and the decision.

Pure numpy; no I/O. Conventions as in :mod:`training.evaluation.metrics`: higher score = more anomalous,
an event is flagged when ``score > threshold``.

Rules (every one is stated in the decision report):

1. **FPR, exact.** ``k`` of ``n`` held-out normals above the candidate's threshold give a two-sided
   Clopper–Pearson interval at ``confidence`` (default 0.95). The tolerated range is
   ``target +/- tolerance`` (default tolerance: half the target). The check *fails* only when the
   interval lies wholly above the range (the data show too many false positives) or wholly below it
   (the data show a threshold set too high for recent data, which costs recall).
2. **Enough rows.** Otherwise, with fewer than ``min_rows_to_judge(target)`` = ``ceil(10 / target)``
   held-out normals (about 10 expected false positives), the check is *inconclusive*: "not enough
   held-out normals to judge FPR at this target". The candidate is not promoted (exit 3), and the
   reason says it was for want of data, not on the merits. Otherwise the check passes.
3. **Live model judged too.** The live model's FPR on the same rows is judged by rule 1 against its
   own target. When the data show it outside its range, the report says the live model is
   miscalibrated, and the recall check (rule 4) compares both models at *equal realised FPR*: each
   at the threshold that flags the candidate's target FPR of the held-out normals. (The held-out
   normals are never filtered by the live model: rows it flags are only kept from training.)
4. **Recall.** With labelled anomalies for both models, the candidate's recall (at its own threshold,
   or at equal realised FPR per rule 3) must be at least the live model's minus ``recall_tolerance``.
5. Promote only if every check passes; without a live model only rule 1-2 apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from detector.errors import DataError
from detector.model import Detector
from training.retrain.binomial import clopper_pearson, min_rows_to_judge

QUANTILES = ("0.5", "0.9", "0.99")
DEFAULT_CONFIDENCE = 0.95

Verdict = Literal["pass", "fail", "inconclusive"]


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
        reference_fpr: the realised FPR at which ``recall_at_reference_fpr`` was measured.
        recall_at_reference_fpr: recall at the threshold that flags ``reference_fpr`` of the
            held-out normals (for comparing models at equal realised FPR), or ``None``.
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
    reference_fpr: float | None = None
    recall_at_reference_fpr: float | None = None

    @property
    def false_positives(self) -> int:
        """Held-out normals above the threshold (``fpr * n_holdout``)."""
        return round(self.fpr * self.n_holdout)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "false_positives": self.false_positives}


@dataclass(frozen=True)
class GateConfig:
    """Tolerances of the gate (absolute rates) and the confidence of its FPR test.

    Attributes:
        fpr_tolerance: the tolerated FPR range is the target +/- this (``None``: half the target).
        recall_tolerance: the candidate may lose at most this much recall against the live model.
        confidence: two-sided confidence of the Clopper–Pearson interval on FPR.
    """

    fpr_tolerance: float | None = None
    recall_tolerance: float = 0.02
    confidence: float = DEFAULT_CONFIDENCE

    def fpr_tolerance_for(self, target: float) -> float:
        return 0.5 * target if self.fpr_tolerance is None else self.fpr_tolerance


@dataclass(frozen=True)
class GateCheck:
    """One check of the gate: ``passed`` iff ``verdict == "pass"``; ``value`` against the bound(s)."""

    name: str
    passed: bool
    value: float | None
    lower: float | None
    upper: float | None
    detail: str
    verdict: Verdict = "pass"
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class GateDecision:
    """Promote or keep, with every check, a one-line reason and the live model's calibration."""

    promote: bool
    reason: str
    checks: list[GateCheck] = field(default_factory=list)
    live_calibration: GateCheck | None = None

    @property
    def live_miscalibrated(self) -> bool:
        return self.live_calibration is not None and self.live_calibration.verdict == "fail"

    def as_dict(self) -> dict[str, Any]:
        live = asdict(self.live_calibration) if self.live_calibration is not None else None
        return {
            "promote": self.promote,
            "reason": self.reason,
            "checks": [asdict(c) for c in self.checks],
            "live_calibration": live,
            "live_miscalibrated": self.live_miscalibrated,
        }


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
    reference_fpr: float | None = None,
) -> ModelFigures:
    """Score featurized holdout normals (and anomalies) with ``detector``.

    Recall is measured at the model's own threshold and, given ``reference_fpr``, also at the
    threshold that flags that share of the held-out normals (the ``1 - reference_fpr`` quantile,
    "higher" method, as calibration does).

    Raises:
        DataError: no holdout rows.
    """
    if len(holdout_features) == 0:
        raise DataError("no held-out normal rows to evaluate on")
    normal = detector.score_features(holdout_features).score
    threshold = detector.threshold
    calibration = detector.manifest.get("calibration")
    target = calibration.get("target_fpr") if isinstance(calibration, dict) else None
    recall = at_reference = None
    n_anomalies = 0
    if anomaly_features is not None and len(anomaly_features):
        anomalous = detector.score_features(anomaly_features).score
        n_anomalies = len(anomalous)
        recall = float(np.mean(anomalous > threshold))
        if reference_fpr is not None:
            equal_fpr_threshold = np.quantile(normal, 1.0 - reference_fpr, method="higher")
            at_reference = float(np.mean(anomalous > equal_fpr_threshold))
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
        reference_fpr=reference_fpr,
        recall_at_reference_fpr=at_reference,
    )


def judge_fpr(figures: ModelFigures, target: float, config: GateConfig, name: str, who: str) -> GateCheck:
    """Rules 1-2 of the module docstring for one model against ``target``."""
    tolerance = config.fpr_tolerance_for(target)
    low, high = max(0.0, target - tolerance), target + tolerance
    k, n = figures.false_positives, figures.n_holdout
    ci_low, ci_high = clopper_pearson(k, n, config.confidence)
    needed = min_rows_to_judge(target)
    observed = (
        f"{who} FPR {figures.fpr:.4f} ({k}/{n} held-out recent normals, "
        f"{config.confidence:.0%} CI {ci_low:.4f}-{ci_high:.4f}), target {target:g} +/- {tolerance:g}"
    )
    verdict: Verdict
    if ci_low > high:
        verdict, detail = "fail", f"{observed}: FPR shown above the tolerated range"
    elif ci_high < low:
        verdict, detail = "fail", f"{observed}: FPR shown below the tolerated range (threshold too high)"
    elif n < needed:
        verdict = "inconclusive"
        detail = f"not enough held-out normals to judge FPR at this target: {observed}; need at least {needed}"
    else:
        verdict, detail = "pass", observed
    return GateCheck(name, verdict == "pass", figures.fpr, low, high, detail, verdict, (ci_low, ci_high))


def decide(candidate: ModelFigures, live: ModelFigures | None, config: GateConfig) -> GateDecision:
    """The gate (see the module docstring): promote only if every check passes.

    Raises:
        DataError: the candidate has no target FPR.
    """
    if candidate.target_fpr is None:
        raise DataError("the candidate's manifest has no calibration.target_fpr")
    checks = [judge_fpr(candidate, candidate.target_fpr, config, "candidate_fpr_within_tolerance", "candidate")]
    live_calibration = None
    if live is not None and live.target_fpr is not None:
        live_calibration = judge_fpr(live, live.target_fpr, config, "live_fpr_within_tolerance", "live")
    miscalibrated = live is not None and live_calibration is not None and live_calibration.verdict == "fail"
    notes: list[str] = []
    if live is not None and live_calibration is not None and miscalibrated:
        notes.append(f"live model {live.version} is miscalibrated: {live_calibration.detail}")
    if live is not None and live.recall is not None and candidate.recall is not None:
        checks.append(_recall_check(candidate, live, config, equal_fpr=miscalibrated))
    failed = [c for c in checks if not c.passed]
    if failed:
        kept = "kept the live model: " if live is not None else "kept the candidate unpromoted (no live model): "
        return GateDecision(False, kept + "; ".join([c.detail for c in failed] + notes), checks, live_calibration)
    basis = "no live model" if live is None else f"live model {live.version}"
    reason = f"promoted ({basis}): " + "; ".join([c.detail for c in checks] + notes)
    return GateDecision(True, reason, checks, live_calibration)


def _recall_check(candidate: ModelFigures, live: ModelFigures, config: GateConfig, *, equal_fpr: bool) -> GateCheck:
    cand_recall, live_recall, basis = candidate.recall, live.recall, "each at its own threshold"
    if equal_fpr and candidate.recall_at_reference_fpr is not None and live.recall_at_reference_fpr is not None:
        cand_recall, live_recall = candidate.recall_at_reference_fpr, live.recall_at_reference_fpr
        basis = f"at equal realised FPR {candidate.reference_fpr:g} (the live model is miscalibrated)"
    assert cand_recall is not None and live_recall is not None
    floor = live_recall - config.recall_tolerance
    return GateCheck(
        "candidate_recall_not_lower",
        cand_recall >= floor,
        cand_recall,
        floor,
        None,
        f"candidate recall {cand_recall:.4f} vs live {live_recall:.4f} {basis} "
        f"(tolerance {config.recall_tolerance:g}) on {candidate.n_anomalies} labelled anomalies",
        "pass" if cand_recall >= floor else "fail",
    )
