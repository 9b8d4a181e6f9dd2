"""The retrain job: gather recent normals, train a candidate, gate it against the live model, promote or keep.

Steps (see :func:`run_retrain`):

1. Read the live model from the registry (none is fine: the first model).
2. Gather normal data from files and/or the input Kafka topic (:mod:`training.retrain_data`
   states the rules: labelled rows, rows the live model flags, time order), and labelled
   anomalies for the recall check.
3. Hold out the newest normals; train a candidate on the rest with the live model's settings
   (its manifest ``training.config``) and spec, unless overridden.
4. Measure candidate and live model on the same held-out normals (and anomalies) and apply the
   gate (:mod:`training.retrain_gate`).
5. Unless a dry run: register the candidate, promote it if the gate says so, and write
   ``reports/<candidate_version>/decision.json`` (+ ``evaluation.html`` with anomalies).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DataError
from detector.model import Detector
from detector.registry import ModelRegistry
from detector.schema import FeatureSpec
from detector.spec_inference import infer_spec
from training.config import TrainConfig
from training.evaluation import evaluate
from training.fit import FitConfig, fit_detector
from training.kafka_source import KafkaWindow, read_recent_events
from training.report import write_report
from training.retrain_data import (
    FileOptions,
    RetrainData,
    featurize,
    read_anomalies,
    read_file_rows,
    split_holdout,
    unflagged,
    valid_rows,
)
from training.retrain_gate import GateConfig, GateDecision, ModelFigures, decide, measure

logger = logging.getLogger(__name__)

DECISION_REPORT = "decision.json"
EVALUATION_REPORT = "evaluation.html"
RETRAIN_ACTOR = "retrain"


@dataclass(frozen=True)
class SpecRoles:
    """Field roles used only when there is no live model and no spec file (the spec is inferred)."""

    id_field: str | None = None
    timestamp_field: str | None = None
    label_field: str | None = None


@dataclass(frozen=True)
class RetrainOptions:
    """Everything the job needs (built by :mod:`training.retrain_cli`).

    Attributes:
        registry_dir: the model registry.
        data: data files (CSV/JSONL, gzip or not), oldest first.
        kafka: read recent events from the input topic too, or ``None``.
        files: how to read the files.
        anomalies: a file of labelled anomalies for the recall check, or ``None``.
        holdout_fraction: share of the newest normals held out for the gate.
        gate: the gate's tolerances.
        keep_flagged: keep unlabelled rows the live model flags (default: leave them out).
        spec_file: a feature spec to use instead of the live model's.
        roles: roles for spec inference when there is neither a live model nor ``spec_file``.
        configure: turns the base fit configuration (the live model's, else defaults) into
            the candidate's (applies command-line overrides).
        dry_run: train and decide, but write nothing to the registry.
    """

    registry_dir: Path
    data: tuple[Path, ...] = ()
    kafka: KafkaWindow | None = None
    files: FileOptions = field(default_factory=FileOptions)
    anomalies: Path | None = None
    holdout_fraction: float = 0.2
    gate: GateConfig = field(default_factory=GateConfig)
    keep_flagged: bool = False
    spec_file: Path | None = None
    roles: SpecRoles = field(default_factory=SpecRoles)
    configure: Callable[[FitConfig], FitConfig] = lambda config: config
    dry_run: bool = False


@dataclass
class RetrainResult:
    """What the job decided and did."""

    decision: GateDecision
    promoted: bool
    candidate_version: str
    report: dict[str, Any]
    report_paths: list[Path] = field(default_factory=list)


def run_retrain(options: RetrainOptions) -> RetrainResult:
    """Run the job once (see the module docstring).

    Raises:
        DataError, SpecError, InvalidEventError: unusable data or options.
        ArtifactError, RegistryError: the live model or the registry is broken.
    """
    if not options.data and options.kafka is None:
        raise DataError("no data: give DATA files and/or --from-kafka")
    registry = ModelRegistry(options.registry_dir)
    live_version = registry.live_version()
    live = registry.load_version(live_version) if live_version is not None else None
    data, spec = _gather(options, live)
    train, holdout = split_holdout(data.normals, options.holdout_fraction)
    config = options.configure(_base_config(live))
    fit = fit_detector(train, spec, config)
    with tempfile.TemporaryDirectory(prefix="kestrel-candidate-") as tmp:
        candidate_dir = fit.detector.save(Path(tmp) / "candidate", fit.metadata)
        candidate = Detector.load(candidate_dir)
        cand_figures = _measure(candidate, holdout, data.anomalies, candidate.version)
        live_figures = _measure(live, holdout, data.anomalies, live_version) if live is not None else None
        decision = decide(cand_figures, live_figures, options.gate)
        report = _decision_report(options, decision, cand_figures, live_figures, data, len(train), len(holdout))
        report["fit_warnings"] = fit.warnings
        result = RetrainResult(decision, False, candidate.version, report)
        if options.dry_run:
            return result
        version = registry.add(candidate_dir)
    if decision.promote:
        record = registry.promote(version, decision.reason, actor=RETRAIN_ACTOR)
        result.promoted = True
        report["promotion"] = record.as_dict()
    report["promoted"] = result.promoted
    result.report_paths.append(registry.write_report(version, DECISION_REPORT, report))
    html = _evaluation_html(candidate, holdout, data.anomalies)
    if html is not None:
        result.report_paths.append(registry.write_report(version, EVALUATION_REPORT, html))
    logger.info("retrain_done", extra={"candidate": version, "promoted": result.promoted, "reason": decision.reason})
    return result


def _gather(options: RetrainOptions, live: Detector | None) -> tuple[RetrainData, FeatureSpec]:
    data = RetrainData()
    unlabelled = read_file_rows(options.data, options.files, data)
    file_unlabelled = len(unlabelled)
    if options.kafka is not None:
        events = read_recent_events(options.kafka)
        data.count("kafka_events", len(events.events))
        data.count("kafka_values_not_json_objects", events.skipped)
        unlabelled.extend(events.events)
    spec = _spec(options, live, data.normals + unlabelled)
    checked = valid_rows(unlabelled[:file_unlabelled], spec, strict=True, what="files")
    kept = valid_rows(unlabelled[file_unlabelled:], spec, strict=False, what="kafka")
    data.count("kafka_events_invalid", len(unlabelled) - file_unlabelled - len(kept))
    normals_in = checked + kept
    valid_rows(data.normals, spec, strict=True, what="labelled normals")
    if live is not None and not options.keep_flagged:
        normals_in, n_flagged = unflagged(normals_in, live)
        data.count("unlabelled_rows_flagged_by_live_left_out", n_flagged)
    # Labelled file normals come first, then unlabelled rows (newest: files, then Kafka).
    data.normals.extend(normals_in)
    if options.anomalies is not None:
        data.anomalies.extend(read_anomalies(options.anomalies, options.files))
    data.count("normal_rows", len(data.normals))
    data.count("anomaly_rows", len(data.anomalies))
    return data, spec


def _spec(options: RetrainOptions, live: Detector | None, rows: list[dict[str, Any]]) -> FeatureSpec:
    if options.spec_file is not None:
        return FeatureSpec.from_json_file(options.spec_file)
    if live is not None:
        return live.spec
    if not rows:
        raise DataError("no normal rows to infer a feature spec from")
    roles = options.roles
    return infer_spec(
        rows, id_field=roles.id_field, timestamp_field=roles.timestamp_field, label_field=roles.label_field
    )


def _base_config(live: Detector | None) -> FitConfig:
    training = live.manifest.get("training") if live is not None else None
    saved = training.get("config") if isinstance(training, dict) else None
    if not isinstance(saved, dict):
        return FitConfig()
    # Settings this build no longer knows (a model trained by an older version) are ignored.
    known = {k: v for k, v in saved.items() if k in FitConfig.model_fields}
    if isinstance(known.get("train"), dict):
        known["train"] = {k: v for k, v in known["train"].items() if k in TrainConfig.model_fields}
        # Saved before the projection was configurable: such models were all on the plain sphere.
        known["train"].setdefault("projection", "sphere")
    if len(known) < len(saved):
        logger.warning("retrain_config_keys_ignored", extra={"keys": sorted(set(saved) - set(known))})
    try:
        return FitConfig.model_validate(known)
    except ValueError as exc:
        raise DataError(f"the live model's training.config is not a valid fit configuration: {exc}") from exc


def _measure(
    detector: Detector, holdout: list[dict[str, Any]], anomalies: list[dict[str, Any]], version: str | None
) -> ModelFigures:
    features = featurize(detector, holdout, "held-out normals")
    anomaly_features = featurize(detector, anomalies, "labelled anomalies") if anomalies else None
    return measure(detector, features, anomaly_features, version)


def _decision_report(
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
        "gate": {
            "fpr_tolerance": options.gate.fpr_tolerance_for(target),
            "recall_tolerance": options.gate.recall_tolerance,
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


def _evaluation_html(
    detector: Detector, holdout: list[dict[str, Any]], anomalies: list[dict[str, Any]]
) -> bytes | None:
    """The candidate's HTML evaluation report on holdout normals + anomalies (needs both)."""
    if not anomalies:
        return None
    features = np.concatenate(
        [featurize(detector, holdout, "held-out normals"), featurize(detector, anomalies, "anomalies")]
    )
    embeddings = detector.embed(features)
    scores = detector.scorer.score(embeddings).score
    is_anomaly = np.r_[np.zeros(len(holdout), dtype=bool), np.ones(len(anomalies), dtype=bool)]
    groups = ["normal" if not a else "anomalous" for a in is_anomaly]
    result = evaluate(scores, is_anomaly, detector.threshold, groups=groups)
    sample = np.random.default_rng(0).permutation(len(scores))[:5000]
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
