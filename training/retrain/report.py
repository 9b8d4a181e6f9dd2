"""The retrain job's reports: ``decision.json`` (the gate's figures and reasons) and ``evaluation.html``."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.model import Detector
from training.evaluation.metrics import evaluate
from training.retrain.binomial import min_rows_to_judge
from training.retrain.data import RetrainData, featurize
from training.retrain.gate import GateDecision, ModelFigures

if TYPE_CHECKING:
    from training.retrain.job import RetrainOptions


def decision_report(
    options: RetrainOptions,
    decision: GateDecision,
    candidate: ModelFigures,
    live: ModelFigures | None,
    data: RetrainData,
    n_train: int,
    n_holdout: int,
) -> dict[str, Any]:
    target = candidate.target_fpr or 0.0
    return {
        "created_at": datetime.now(UTC).isoformat(),
        "decision": "promote" if decision.promote else "keep",
        "dry_run": options.dry_run,
        "reason": decision.reason,
        "checks": decision.as_dict()["checks"],
        "live_calibration": decision.as_dict()["live_calibration"],
        "live_miscalibrated": decision.live_miscalibrated,
        "gate": {
            "fpr_tolerance": options.gate.fpr_tolerance_for(target),
            "recall_tolerance": options.gate.recall_tolerance,
            "confidence": options.gate.confidence,
            "min_holdout_rows_to_judge_fpr": min_rows_to_judge(target) if target else None,
        },
        "candidate": candidate.as_dict(),
        "live": live.as_dict() if live is not None else None,
        "data": {
            "files": [str(p) for p in options.data],
            "kafka_topic": options.kafka.topic if options.kafka is not None else None,
            "holdout_fraction": options.holdout_fraction,
            "n_train": n_train,
            "n_holdout": n_holdout,
            "n_anomalies": len(data.anomalies),
            **dict(sorted(data.counts.items())),
        },
    }


def evaluation_html(detector: Detector, holdout: list[dict[str, Any]], anomalies: list[dict[str, Any]]) -> bytes | None:
    """The candidate's HTML evaluation report on holdout normals + anomalies (needs both)."""
    if not anomalies:
        return None
    features = np.concatenate(
        [featurize(detector, holdout, "held-out normals"), featurize(detector, anomalies, "anomalies")]
    )
    embeddings = detector.embed(features)
    scores = detector.scorer.score(embeddings, features).score
    is_anomaly = np.r_[np.zeros(len(holdout), dtype=bool), np.ones(len(anomalies), dtype=bool)]
    groups = ["normal" if not a else "anomalous" for a in is_anomaly]
    result = evaluate(scores, is_anomaly, detector.threshold, groups=groups)
    sample = np.random.default_rng(0).permutation(len(scores))[:5000]
    from training.evaluation.report import write_report  # noqa: PLC0415 - matplotlib only when a report is written

    with tempfile.TemporaryDirectory(prefix="kestrel-report-") as tmp:
        path = write_report(
            Path(tmp),
            result,
            scores,
            is_anomaly,
            detector.threshold,
            embeddings=embeddings[sample],
            embedding_labels=[groups[i] for i in sample],
            centroids=detector.scorer.centroids,
            centroid_labels=[detector.scorer.class_names[c] for c in detector.scorer.centroid_class],
            title=f"Kestrel retrain candidate {detector.version}",
            extra={"model_version": detector.version, "evaluated_on": "held-out recent normals + labelled anomalies"},
        )
        return path.read_bytes()
