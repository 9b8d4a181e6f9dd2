"""The bodies of ``fit``, ``score`` and ``evaluate`` (argument parsing lives in :mod:`training.cli.main`)."""

from __future__ import annotations

import argparse
import csv
import json
import stat
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from detector.artifact import check_artifact_target
from detector.atomic_file import atomic_writer
from detector.errors import ArtifactError, DataError, InvalidEventError, SpecError, UsageError
from detector.features import DEFAULT_MAX_CATEGORIES
from detector.model import Detector
from detector.schema import FeatureSpec
from detector.spec_inference import crowded_categorical_columns, infer_spec, likely_key_columns
from training.cli.heartbeat import Heartbeat
from training.config import TrainConfig
from training.data import Record, as_text, check_values, iter_records, load_records, require_columns, split_by_truth
from training.evaluation.metrics import evaluate
from training.fit import FitConfig, fit_detector

SCORE_CHUNK = 4096


def read_normals(args: argparse.Namespace) -> tuple[list[Record], list[Record], list[bool], FeatureSpec]:
    """Load DATA, check the named columns, keep normal rows, build the spec.

    Returns:
        ``(normals, all_rows, is_anomaly, spec)``; ``all_rows`` is every row without the truth
        column (for an optional report).
    """
    if (args.truth_column is None) != (args.normal_value is None):
        raise UsageError("--truth-column and --normal-value go together")
    _one_role_per_column(args)
    drop = [c for c in args.drop_columns.split(",") if c]
    records = load_records(args.data, text_columns=[c for c in (args.id_column, args.timestamp_column) if c])
    # Id and timestamp columns are read online only: training data may lack them.
    require_columns(records, [args.label_column, args.truth_column, *drop], args.data)
    records = [{k: v for k, v in r.items() if k not in drop} for r in records] if drop else records
    if args.truth_column:
        rows, flags = split_by_truth(records, args.truth_column, args.normal_value)
    else:
        rows, flags = records, [False] * len(records)
    normals = [r for r, anomalous in zip(rows, flags, strict=True) if not anomalous]
    if not normals:
        raise DataError(
            f"{args.data}: no row has {args.truth_column}={args.normal_value!r}; "
            f"values seen: {values_seen(records, args.truth_column)}"
        )
    if args.report is not None and not any(flags):
        # Found in review: the model was trained and written, then the report failed (exit 1).
        raise DataError(
            f"{args.data}: every row has {args.truth_column}={args.normal_value!r}, and --report evaluates on the"
            f" anomalous rows too; values seen: {values_seen(records, args.truth_column)} (leave out --report to"
            " train on these rows)"
        )
    roles = {"id_field": args.id_column, "timestamp_field": args.timestamp_column, "label_field": args.label_column}
    if args.spec:
        spec = FeatureSpec.from_json_file(args.spec)
        overrides = {k: v for k, v in roles.items() if v is not None}
        if overrides:
            try:
                spec = FeatureSpec.model_validate(spec.model_dump() | overrides)
            except ValidationError as exc:
                reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
                raise UsageError(f"--spec {args.spec} and the column options disagree: {reasons}") from exc
        shared = spec.shared_roles() + [
            f"{role} names the truth column {args.truth_column!r}"
            for role in ("id_field", "timestamp_field", "label_field")
            if args.truth_column is not None and getattr(spec, role) == args.truth_column
        ]
        if shared:  # found in review: one column as both id and timestamp trained without a word
            raise UsageError(f"--spec {args.spec}: {'; '.join(shared)}; a column plays one role")
        require_columns(normals, spec.features, args.spec)
    else:
        try:
            spec = infer_spec(normals, **roles, row_numbers=[i + 1 for i, a in enumerate(flags) if not a])
        except SpecError as exc:
            raise SpecError(f"{args.data}: {exc}") from exc
    check_values(rows, flags, spec, args.data)
    label = spec.label_field
    if label:  # --label-column, or a --spec's label_field
        blank = next((i for i, r in enumerate(rows) if not flags[i] and r.get(label) in (None, "")), None)
        if blank is not None:
            raise DataError(
                f"{args.data}: row {blank + 1}: normal row with an empty normal-class label in {label!r}"
                " (give every normal row its class, or train without class labels)"
            )
    return normals, rows, flags, spec


def _one_role_per_column(args: argparse.Namespace) -> None:
    """A column plays one role: two options naming the same one are a usage error."""
    options = ("--label-column", "--truth-column", "--id-column", "--timestamp-column")
    named = [(o, getattr(args, o[2:].replace("-", "_"), None)) for o in options]
    for i, (first, column) in enumerate(named):
        for second, other in named[i + 1 :]:
            if column is not None and column == other:
                raise UsageError(f"{first} and {second} both name column {column!r}; a column plays one role")


def values_seen(records: list[Record], column: str, shown: int = 5) -> str:
    """The most common values of a column with their counts, e.g. ``'Normal' (400), 'attack' (27)``."""
    counts = Counter(as_text(r.get(column)) for r in records)
    text = ", ".join(f"{value!r} ({count})" for value, count in counts.most_common(shown))
    return text + (f" and {len(counts) - shown} more" if len(counts) > shown else "")


def warn_about_key_columns(normals: list[Record], spec: FeatureSpec) -> None:
    """Warn (stderr) about inferred feature columns that look like an id or a timestamp, and about
    categorical columns with more distinct values than the featurizer keeps."""
    keys = likely_key_columns(normals, spec)
    for column in keys:
        print(
            f"warning: column {column!r} has a different value in (nearly) every row, like an id or a timestamp; "
            "it becomes a feature the worker then requires in every event. Name it with --id-column or "
            "--timestamp-column, or leave it out with --drop-columns",
            file=sys.stderr,
        )
    for column, distinct in crowded_categorical_columns(normals, spec, DEFAULT_MAX_CATEGORIES).items():
        if column not in keys:
            print(
                f"warning: categorical column {column!r} has {distinct:,} distinct values; the"
                f" {DEFAULT_MAX_CATEGORIES} most frequent are kept and the rest share one 'other' value, so"
                " events with a kept but rare value can score as anomalous. Leave it out with --drop-columns,"
                " or group its values into fewer categories",
                file=sys.stderr,
            )


def fit_config_from_args(args: argparse.Namespace, base: FitConfig | None = None) -> FitConfig:
    """Apply command-line overrides to a fit configuration."""
    base = base or FitConfig()
    train_overrides = {
        "loss": args.loss,
        "mining": args.mining,
        "margin": args.margin,
        "epochs": args.epochs,
        "min_steps": args.min_steps,
        "embedding_dim": args.embedding_dim,
        "unlabelled_positives": getattr(args, "unlabelled_objective", None),
        "projection": getattr(args, "projection", None),
        "seed": args.seed,
        "threads": args.threads,
    }
    train = base.train.model_copy(update={k: v for k, v in train_overrides.items() if v is not None})
    train = train.model_copy(update={"progress": not args.quiet and sys.stderr.isatty()})
    if args.mining is not None and train.loss != "triplet":  # found in review: ignored without a word
        raise UsageError(f"--mining chooses the triplet loss's negatives; the loss here is {train.loss!r}")
    fit_overrides: dict[str, Any] = {"target_fpr": args.target_fpr}
    if getattr(args, "calibration_fraction", None) is not None:
        fit_overrides["calibration_fraction"] = args.calibration_fraction
    if getattr(args, "score_terms", None) is not None:
        fit_overrides["score_terms"] = args.score_terms
    if getattr(args, "gauss_term", None) is not None:
        fit_overrides["gauss_term"] = args.gauss_term
    config = base.model_copy(update={k: v for k, v in fit_overrides.items() if v is not None} | {"train": train})
    # model_copy skips validation: re-validate so a bad flag value is a one-line error.
    try:
        return FitConfig.model_validate(
            {**config.model_dump(), "train": TrainConfig.model_validate(train.model_dump())}
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        option = "--" + str(first["loc"][-1]).replace("_", "-") if first["loc"] else "an option"
        raise UsageError(f"{option}: {first['msg']}") from exc


def run_fit(args: argparse.Namespace) -> int:
    """``fit``; with stderr not a terminal (and not ``--quiet``), a progress line every few seconds."""
    if args.quiet or sys.stderr.isatty():
        return _fit(args, None)
    with Heartbeat(sys.stderr, f"reading {args.data}") as heartbeat:
        return _fit(args, heartbeat)


def _fit(args: argparse.Namespace, heartbeat: Heartbeat | None) -> int:
    if args.report and not args.truth_column:
        raise UsageError("--report needs --truth-column and --normal-value")
    check_report_target(args.report, args.out)
    config = fit_config_from_args(args)  # a bad option value fails before the data is read
    try:  # a cheap look now; saving checks again (and for real) after training
        check_artifact_target(args.out)
    except ArtifactError as exc:
        raise ArtifactError(f"--out {exc}") from exc
    report = args.report
    normals, rows, flags, spec = read_normals(args)
    if not args.spec:
        warn_about_key_columns(normals, spec)
    if heartbeat is not None:
        heartbeat.stage = f"training and calibrating on {len(normals)} normal rows"
    result = fit_detector(normals, spec, config)
    result.detector.save(args.out, result.metadata)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    summary = {
        "model": str(args.out),
        "model_version": result.detector.version,
        "n_normal_rows": len(normals),
        "threshold": result.detector.threshold,
        "calibration": {k: result.metadata["calibration"][k] for k in ("method", "n_calibration", "fpr_band_95")},
        **result.metadata["training"],
    }
    summary.pop("config", None)
    if report is not None:
        # The normals the fit calibrated on, each scored by a model that did not train on it, and
        # every anomalous row (found in review: every row was scored, the training normals too,
        # at distance 0 from themselves: AUROC 1.0 on a model that had learnt little).
        held_out = [normals[i] for i in result.calibration_rows.tolist()]
        anomalous = [r for r, f in zip(rows, flags, strict=True) if f]
        eval_flags = [False] * len(held_out) + [True] * len(anomalous)
        groups = ["anomalous" if f else "normal" for f in eval_flags]
        if heartbeat is not None:
            heartbeat.stage = f"evaluating on {len(eval_flags)} rows"
        method = result.metadata["calibration"]["method"]
        note = (
            "The normals shown are rows this encoder trained on (cross-fitted: every normal trains the final"
            " model); their scores above come from the fold models that did not."
            if method.startswith("cross-fitted")
            else "The normals shown were held out of training."
        )
        summary["evaluation"] = _evaluate_and_report(
            result.detector,
            held_out + anomalous,
            eval_flags,
            groups,
            report,
            args.data,
            result.calibration_scores,
            note,
        )
        summary["evaluation"]["normals_from"] = method
    print(json.dumps(summary, indent=2, default=str))
    return 0


def run_score(args: argparse.Namespace) -> int:
    """``score``: the CSV is written to a temporary sibling of ``--out`` and renamed over it only
    once every row is scored, so a failed run leaves the previous file (and no temporary one)."""
    out: Path = args.out
    if out.is_dir():
        raise DataError(f"--out {out} is a directory; give the scores file's name")
    if out.exists() and args.data.exists() and out.samefile(args.data):
        raise UsageError(f"--out {out} is the data file {args.data}; scores must go to another file")
    detector = Detector.load(args.model)
    spec = detector.spec
    text = [c for c in (spec.id_field, spec.timestamp_field) if c]
    # The data row's number last (1 = the first record, as in error messages; last, so scripts that
    # read the earlier columns by position keep working): joins every score back to its row, also
    # without an id column or where a row's id is empty.
    row_column = "input_row" if spec.id_field == "row" else "row"
    header = [*([spec.id_field] if spec.id_field else []), "score", "flagged", "nearest_class", "p_value", row_column]
    mode = stat.S_IMODE(out.stat().st_mode) if out.exists() else 0o644  # mkstemp's 0600 would hide it
    count = 0
    try:
        with atomic_writer(out, mode=mode, encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            chunk: list[Record] = []
            for record in iter_records(args.data, text_columns=text):
                chunk.append(record)
                if len(chunk) == SCORE_CHUNK:
                    count += _write_scores(writer, detector, chunk, count, args.data)
                    chunk = []
            if chunk:
                count += _write_scores(writer, detector, chunk, count, args.data)
            if count == 0:
                raise DataError(f"{args.data}: no records")
    except OSError as exc:
        raise DataError(f"--out {out}: cannot write there ({exc.strerror}: {exc.filename})") from exc
    print(json.dumps({"scored": count, "out": str(out), "model_version": detector.version}))
    return 0


def _write_scores(writer: Any, detector: Detector, chunk: list[Record], offset: int, path: Path) -> int:
    try:
        result = detector.score_records(chunk, top=0)
    except InvalidEventError as exc:
        raise DataError(f"{path}: row {offset + _row_of(exc) + 1}: {_without_prefix(exc)}") from exc
    id_field = detector.spec.id_field
    for i, record in enumerate(chunk):
        prefix = [record.get(id_field, "")] if id_field else []
        values = [
            f"{result.scores[i]:.6g}",
            int(result.flagged[i]),
            result.nearest_class[i],
            f"{result.p_values[i]:.6g}",
            offset + i + 1,
        ]
        writer.writerow([*prefix, *values])
    return len(chunk)


def _row_of(exc: Exception) -> int:
    text = str(exc)
    if text.startswith("record "):
        return int(text.split(":", 1)[0].split()[1])
    return 0


def _without_prefix(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 1)[1] if text.startswith("record ") else text


def check_plotting(what: str) -> None:
    """Import the report's plotting (matplotlib) now, before any work.

    Raises:
        UsageError: matplotlib cannot start (an ``MPLBACKEND`` it does not know: found in review, a
            traceback after training, with the model written or promoted).
    """
    try:
        import training.evaluation.report  # noqa: F401, PLC0415 - matplotlib only when a report is written
    except ValueError as exc:
        raise UsageError(f"{what}: matplotlib cannot start ({exc}); unset or correct MPLBACKEND") from exc


def check_report_target(report: Path | None, model_dir: Path | None = None) -> None:
    """Refuse a ``--report`` that cannot hold the report, before any work (found in review: a file
    there failed only after training, with the model already written; one inside ``--out`` made
    the model directory one the same command then refused to replace).

    Raises:
        UsageError: ``report`` is an existing file or lies under one, or is ``model_dir`` or inside it,
            or matplotlib cannot start (:func:`check_plotting`).
    """
    if report is None:
        return
    check_plotting("--report")
    existing = next((p for p in (report, *report.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == report else f"lies under a file, {existing}"
        raise UsageError(f"--report {report} {where}; give a directory (it gets report.html and metrics.json)")
    if model_dir is not None:
        target, model = report.resolve(), model_dir.resolve()
        if target == model or model in target.parents:
            raise UsageError(f"--report {report} is inside the model directory {model_dir}, which holds the model only")


def run_evaluate(args: argparse.Namespace) -> int:
    check_report_target(args.report, args.model)
    detector = Detector.load(args.model)
    spec = detector.spec
    text = [c for c in (spec.id_field, spec.timestamp_field) if c]
    records = load_records(args.data, text_columns=text)
    drop = {c for c in args.drop_columns.split(",") if c}
    require_columns(records, [args.truth_column, *sorted(drop)], args.data)  # as fit: a misspelt drop is named
    groups = [str(r.get(args.truth_column)) for r in records]
    rows, flags = split_by_truth(records, args.truth_column, args.normal_value)
    if all(flags) or not any(flags):
        which = "no row has" if all(flags) else "every row has"
        raise DataError(
            f"{args.data}: {which} {args.truth_column}={args.normal_value!r}, and evaluating needs normals and"
            f" anomalies; values seen: {values_seen(records, args.truth_column)}"
        )
    if drop:
        rows = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    metrics = _evaluate_and_report(detector, rows, flags, groups, args.report, args.data)
    print(json.dumps(metrics, indent=2))
    return 0


def _evaluate_and_report(
    detector: Detector,
    rows: list[Record],
    flags: list[bool],
    groups: list[str],
    report: Path | None,
    path: Path,
    first_scores: NDArray[np.float64] | None = None,
    embedding_note: str | None = None,
) -> dict[str, Any]:
    """Score labelled rows, compute metrics (grouped by ``groups``) and optionally write the HTML
    report. ``first_scores``: the scores of the first rows, as known already (out of fold)."""
    features = _transform_or_explain(detector, rows, path)
    embeddings = detector.embed(features)
    score = detector.scorer.score(embeddings, features).score
    if first_scores is not None:
        score = score.copy()
        score[: len(first_scores)] = first_scores
    is_anomaly = np.asarray(flags, dtype=bool)
    result = evaluate(score, is_anomaly, detector.threshold, groups=groups)
    if report is not None:
        from training.evaluation.report import write_report  # noqa: PLC0415 - matplotlib only with --report

        # Every embedding: the plot samples them itself (and says of how many), coloured normal /
        # anomalous in the same colours as the report's other figures.
        write_report(
            report,
            result,
            score,
            is_anomaly,
            detector.threshold,
            embeddings=embeddings,
            centroids=detector.scorer.centroids,
            centroid_labels=[detector.scorer.class_names[c] for c in detector.scorer.centroid_class],
            embedding_note=embedding_note,
            extra={
                "model_version": detector.version,
                **{k: v for k, v in detector.manifest.items() if k in ("calibration", "training")},
            },
        )
    return result.as_dict()


def _transform_or_explain(detector: Detector, rows: list[Record], path: Path | str) -> np.ndarray:
    try:
        return detector.featurizer.transform(rows)
    except InvalidEventError as exc:
        raise DataError(f"{path}: row {_row_of(exc) + 1}: {_without_prefix(exc)}") from exc
