"""The retrain job: gather recent normals, train a candidate, gate it against the live model, promote or keep.

Steps (see :func:`run_retrain`):

1. Read the live model from the registry (none is fine: the first model).
2. Gather normal data from files and/or the input Kafka topic (:mod:`training.retrain.data`
   states the rules: labelled rows, rows the live model flags, time order), and labelled
   anomalies for the recall check; apply analysts' verdicts (:mod:`training.retrain.feedback`).
3. Hold out the newest normals; train a candidate on the rest with the live model's settings
   (its manifest ``training.config``) and spec, unless overridden.
4. Measure candidate and live model on the same held-out normals (and anomalies) and apply the
   gate (:mod:`training.retrain.gate`).
5. Unless a dry run: register the candidate, promote it if the gate says so, and write
   ``reports/<candidate_version>/decision.json`` (+ ``evaluation.html`` with anomalies). A
   candidate whose version another run registered first is kept, and nothing is written.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.errors import DataError, DetectorError, UsageError
from detector.model import Detector
from detector.registry import LiveChangedError, ModelRegistry, VersionConflictError
from detector.schema import FeatureSpec
from detector.signing import key_pair_matches, load_private_key, load_public_key
from detector.spec_inference import infer_spec
from training.config import TrainConfig
from training.fit import FitConfig, fit_detector
from training.retrain.data import (
    FileOptions,
    RetrainData,
    featurize,
    flagged_by,
    holdout_size,
    read_anomalies,
    read_file_rows,
    split_holdout,
    valid_rows,
)
from training.retrain.feedback import FeedbackOptions, FeedbackRows, apply_verdicts, read_record_events, read_verdicts
from training.retrain.gate import GateConfig, GateDecision, ModelFigures, decide, measure
from training.retrain.kafka_source import KafkaWindow, read_recent_events
from training.retrain.report import decision_report, evaluation_html

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
    """Everything the job needs (built by :mod:`training.cli.retrain`).

    Attributes:
        registry_dir: the model registry.
        data: data files (CSV/JSONL, gzip or not), oldest first.
        kafka: read recent events from the input topic too, or ``None``.
        files: how to read the files.
        anomalies: a file of labelled anomalies for the recall check, or ``None``.
        holdout_fraction: share of the newest normals held out for the gate; ``None`` sizes the
            holdout from the target FPR (:func:`training.retrain.data.holdout_size`).
        gate: the gate's tolerances.
        keep_flagged: train also on unlabelled rows the live model flags (default: they are only
            calibrated on and held out).
        spec_file: a feature spec to use instead of the live model's.
        roles: roles for spec inference when there is neither a live model nor ``spec_file``.
        configure: turns the base fit configuration (the live model's, else defaults) into
            the candidate's (applies command-line overrides).
        dry_run: train and decide, but write nothing to the registry.
        feedback: analysts' verdicts and where their events are (:mod:`training.retrain.feedback`).
        signing_key: sign the registered candidate with this Ed25519 private key (PEM file).
        public_key: accept only signed models (live model, promotion): PEM text or file.
    """

    registry_dir: Path
    data: tuple[Path, ...] = ()
    kafka: KafkaWindow | None = None
    files: FileOptions = field(default_factory=FileOptions)
    anomalies: Path | None = None
    holdout_fraction: float | None = None
    gate: GateConfig = field(default_factory=GateConfig)
    keep_flagged: bool = False
    spec_file: Path | None = None
    roles: SpecRoles = field(default_factory=SpecRoles)
    configure: Callable[[FitConfig], FitConfig] = lambda config: config
    dry_run: bool = False
    feedback: FeedbackOptions = field(default_factory=FeedbackOptions)
    signing_key: Path | None = None
    public_key: str | None = None


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
    signing_key = load_private_key(options.signing_key) if options.signing_key is not None else None
    public_key = load_public_key(options.public_key) if options.public_key else None
    if public_key is not None and (signing_key is None or not key_pair_matches(signing_key, public_key)):
        # Checked before training: the candidate could be registered but never promoted.
        raise UsageError(
            "with a model public key (--public-key or WORKER_MODEL_PUBLIC_KEY) only signed models are "
            "promoted: give --signing-key with the matching private key"
        )
    registry = ModelRegistry(options.registry_dir, public_key=public_key)
    live_version = registry.live_version()
    live = registry.load_version(live_version) if live_version is not None else None
    data, spec = _gather(options, live)
    unreadable = _what_live_cannot_read(live, spec)
    compared = None if unreadable else live  # the settings are still the live model's (below)
    if unreadable:
        # A new event contract (--spec) the live model cannot read: it is not compared (its
        # figures would be those of events it rejects); the candidate is judged as a first model.
        logger.warning("retrain_live_not_comparable", extra={"live": live_version, "changes": unreadable})
    config = options.configure(_base_config(live))
    n_holdout = holdout_size(len(data.normals), options.holdout_fraction, config.target_fpr)
    train, holdout = split_holdout(data.normals, n_holdout)
    untrained = data.untrained[: len(train)] + [False] * len(data.train_only)
    train += data.train_only
    fit = fit_detector(train, spec, config, untrained=untrained)
    with tempfile.TemporaryDirectory(prefix="kestrel-candidate-") as tmp:
        candidate_dir = fit.detector.save(Path(tmp) / "candidate", fit.metadata)
        candidate = Detector.load(candidate_dir)
        reference = config.target_fpr  # recall at equal realised FPR is measured at the candidate's target
        cand_figures = _measure(candidate, holdout, data.anomalies, candidate.version, reference)
        live_figures = (
            _measure(compared, holdout, data.anomalies, live_version, reference) if compared is not None else None
        )
        decision = decide(cand_figures, live_figures, options.gate)
        report = decision_report(options, decision, cand_figures, live_figures, data, len(train), len(holdout))
        # Of the training part's rows, those the live model flags: calibrated on, never trained on.
        report["data"]["n_train_not_trained"] = sum(untrained)
        report["fit_warnings"] = fit.warnings
        report["live_version"] = live_version  # also when the live model was not compared
        if unreadable:
            report["live_not_compared"] = (
                f"live model {live_version} cannot read events of the new spec ({'; '.join(unreadable)}): "
                "the candidate was judged on its own false-positive rate, as a first model"
            )
            report["reason"] = f"{report['reason']}; {report['live_not_compared']}"
        result = RetrainResult(decision, False, candidate.version, report)
        if options.dry_run:
            return result
        try:
            version = registry.add(candidate_dir, signing_key=signing_key)
        except VersionConflictError as exc:
            _lost_race(result, exc)
            return result
    _promote_and_report(
        registry, version, live_version, result, lambda: evaluation_html(candidate, holdout, data.anomalies)
    )
    logger.info("retrain_done", extra={"candidate": version, "promoted": result.promoted, "reason": decision.reason})
    return result


def _promote_and_report(
    registry: ModelRegistry,
    version: str,
    live_version: str | None,
    result: RetrainResult,
    html: Callable[[], bytes | None],
) -> None:
    """Write decision.json, promote if the gate said so, then write decision.json again (with the
    outcome) and evaluation.html.

    The decision is written before LIVE moves: a job that cannot write it fails (exit 1) with
    nothing promoted, never with a live model and no report of why. A report that fails after the
    promotion does not undo it (the job did what it decided; the history records it): the first
    decision.json stays (its "promoted" still false) and ``report_error`` says what failed.
    """
    report = result.report
    report["promoted"] = False
    decision_path = registry.write_report(version, DECISION_REPORT, report)
    if result.decision.promote:
        _promote(registry, version, live_version, result)
    report["promoted"] = result.promoted
    try:
        result.report_paths.append(registry.write_report(version, DECISION_REPORT, report))
        page = html()
        if page is not None:
            result.report_paths.append(registry.write_report(version, EVALUATION_REPORT, page))
    except (OSError, DetectorError) as exc:
        if not result.promoted:
            raise
        report["report_error"] = f"{type(exc).__name__}: {exc}"
        result.report_paths[:] = [decision_path]
        logger.warning("retrain_report_failed", extra={"candidate": version, "error": report["report_error"]})


def _promote(registry: ModelRegistry, version: str, compared_with: str | None, result: RetrainResult) -> None:
    """Compare-and-swap: promote only if ``LIVE`` still names the version the gate compared against.

    An operator's promotion or roll-back made while the job ran wins: the candidate stays
    registered, the report says why, and the job exits 3 (kept).
    """
    try:
        record = registry.promote(version, result.decision.reason, actor=RETRAIN_ACTOR, expected_live=compared_with)
    except LiveChangedError as exc:
        result.report["decision"] = "keep"
        result.report["reason"] = f"kept the candidate unpromoted: {exc}"
        result.report["live_changed"] = True
        logger.warning("retrain_live_changed", extra={"candidate": version, "compared_with": compared_with})
        return
    result.promoted = True
    result.report["promotion"] = record.as_dict()


def _lost_race(result: RetrainResult, conflict: VersionConflictError) -> None:
    """Another run registered this version name first: keep, as when another run promoted first.

    A name is the training second and a hash of the weights, so two runs on the same data and seed
    that finish in the same second build the same name with another ``created_at``. The other run
    owns the version and its ``reports/<version>/`` folder: this run registers and writes nothing.
    """
    result.report["decision"] = "keep"
    result.report["promoted"] = False
    result.report["reason"] = (
        f"kept the candidate unregistered: {conflict} by another run (the same weights, trained in the "
        "same second); that run decides its promotion"
    )
    result.report["live_changed"] = True
    logger.warning("retrain_version_taken", extra={"candidate": result.candidate_version})


def _gather(options: RetrainOptions, live: Detector | None) -> tuple[RetrainData, FeatureSpec]:
    data = RetrainData()
    unlabelled = read_file_rows(options.data, options.files, data)
    file_unlabelled = len(unlabelled)
    if options.kafka is not None:
        events = read_recent_events(options.kafka)
        data.count("kafka_events", len(events.events))
        data.count("kafka_values_not_json_objects", events.skipped)
        data.count("kafka_read_timed_out", int(events.timed_out))
        unlabelled.extend(events.events)
    spec = _spec(options, live, data.normals + unlabelled)
    checked = valid_rows(unlabelled[:file_unlabelled], spec, strict=True, what="files")
    kept = valid_rows(unlabelled[file_unlabelled:], spec, strict=False, what="kafka")
    data.count("kafka_events_invalid", len(unlabelled) - file_unlabelled - len(kept))
    normals_in = checked + kept
    valid_rows(data.normals, spec, strict=True, what="labelled normals")
    feedback = FeedbackRows(normals_in)
    if options.feedback.enabled:
        verdicts = read_verdicts(options.feedback, options.kafka)
        feedback = apply_verdicts(normals_in, verdicts, read_record_events(options.feedback, options.kafka), spec)
        normals_in = feedback.unlabelled
        for key, n in feedback.counts.items():
            data.count(key, n)
    untrained = None
    if live is not None and not options.keep_flagged and not _what_live_cannot_read(live, spec):
        data.count("unlabelled_rows_scored_by_live", len(normals_in))
        untrained = flagged_by(live, normals_in)  # not trained on; calibrated on and held out
        data.count("unlabelled_rows_flagged_by_live_not_trained", sum(untrained))
    # Labelled file normals come first, then unlabelled rows (newest: files, then Kafka); analysts'
    # false positives go to the training part only, whatever the holdout's size (found in review:
    # placed among the normals, a holdout larger than the newest rows took them).
    data.train_only.extend(feedback.false_positives)
    data.add_normals(normals_in, untrained)
    data.anomalies.extend(feedback.confirmed)
    if options.anomalies is not None:
        data.anomalies.extend(read_anomalies(options.anomalies, options.files))
    data.count("normal_rows", len(data.normals) + len(data.train_only))
    data.count("anomaly_rows", len(data.anomalies))
    return data, spec


def _what_live_cannot_read(live: Detector | None, spec: FeatureSpec) -> list[str]:
    """Why events valid under ``spec`` may not fit the live model (empty: they all do): a field
    the live model requires that ``spec`` does not, or a field that changed kind."""
    if live is None:
        return []
    old = live.spec
    required = set(spec.features) - set(spec.optional)
    missing = sorted(set(old.features) - set(old.optional) - required)
    retyped = sorted(set(old.numeric) & set(spec.categorical) | set(old.categorical) & set(spec.numeric))
    reasons = [f"it requires {', '.join(missing)}"] if missing else []
    return reasons + ([f"numeric <-> categorical: {', '.join(retyped)}"] if retyped else [])


def _spec(options: RetrainOptions, live: Detector | None, rows: list[dict[str, Any]]) -> FeatureSpec:
    if options.spec_file is not None:
        spec = FeatureSpec.from_json_file(options.spec_file)
        if spec.shared_roles():
            raise UsageError(f"--spec {options.spec_file}: {'; '.join(spec.shared_roles())}; a column plays one role")
        return spec
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
    detector: Detector,
    holdout: list[dict[str, Any]],
    anomalies: list[dict[str, Any]],
    version: str | None,
    reference_fpr: float,
) -> ModelFigures:
    features = featurize(detector, holdout, "held-out normals")
    anomaly_features = featurize(detector, anomalies, "labelled anomalies") if anomalies else None
    return measure(detector, features, anomaly_features, version, reference_fpr)
