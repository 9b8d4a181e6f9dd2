"""The self-contained HTML evaluation report (plus ``metrics.json``).

``report.html`` is one file that opens anywhere offline: inline CSS, plots embedded as base64
PNG, no script and no external resource. Every string that reaches the HTML (group names, labels,
``extra`` keys and values) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detector.atomic_file import write_atomic
from training.evaluation.metrics import EvaluationResult
from training.evaluation.plots import embedding_projection_png, roc_png, score_histogram_png

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1150px;
       color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #666; font-size: 0.9rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.anomaly td:first-child { border-left: 4px solid #d62728; }
tr.normal td:first-child { border-left: 4px solid #1f77b4; }
img { max-width: 100%; height: auto; display: block; margin: 0.5rem 0; }
"""


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}" if math.isfinite(value) else _text(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_text(header)}</th>" for header in headers)
    body = []
    for index, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{_number(cell)}</td>'
            if isinstance(cell, int | float) and not isinstance(cell, bool)
            else f"<td>{_text(cell)}</td>"
            for cell in row
        )
        row_class = f' class="{_text(row_classes[index])}"' if row_classes else ""
        body.append(f"<tr{row_class}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _image(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_text(alt)}" src="data:image/png;base64,{encoded}">'


def _headline(result: EvaluationResult) -> str:
    rows: list[tuple[str, object]] = [
        ("events", result.n),
        ("normal events", result.n_normal),
        ("anomalous events", result.n_anomalous),
        ("AUROC", result.auroc),
        ("AUPRC (average precision)", result.auprc),
        ("threshold (flag when score > threshold)", result.threshold),
        ("recall (anomalies flagged)", result.recall),
        ("precision", result.precision),
        ("F1", result.f1),
        ("realised false-positive rate (normals flagged)", result.false_positive_rate),
    ]
    fixed = [
        (fpr, result.recall_at_fpr[fpr], result.threshold_at_fpr.get(fpr, float("nan"))) for fpr in result.recall_at_fpr
    ]
    return (
        "<h2>Headline metrics</h2>"
        + _table(["metric", "value"], rows)
        + "<h3>Recall at fixed false-positive rates (oracle thresholds set on this data's normals)</h3>"
        + _table(["FPR", "recall", "threshold"], fixed)
    )


def _per_group(result: EvaluationResult) -> str:
    if not result.per_group:
        return ""
    rows = [
        (entry.group, entry.n, "yes" if entry.is_anomaly else "no", entry.flagged_rate, entry.mean_score)
        for entry in result.per_group
    ]
    classes = ["anomaly" if entry.is_anomaly else "normal" for entry in result.per_group]
    return (
        "<h2>Per group</h2><p>Flagged share: the recall of an anomalous group, the false-positive rate of a "
        "normal one.</p>" + _table(["group", "events", "all anomalous", "flagged share", "mean score"], rows, classes)
    )


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{name}."))
        elif isinstance(value, str | int | float | bool) or value is None:
            rows.append((name, value))
        else:
            rows.append((name, json.dumps(value, default=str)))
    return rows


def _extra(extra: Mapping[str, Any] | None) -> str:
    if not extra:
        return ""
    return "<h2>Details</h2>" + _table(["key", "value"], _flatten(extra))


def write_report(
    out_dir: Path,
    result: EvaluationResult,
    scores: npt.ArrayLike,
    is_anomaly: npt.ArrayLike,
    threshold: float,
    embeddings: np.ndarray | None = None,
    embedding_labels: Sequence[str] | None = None,
    centroids: np.ndarray | None = None,
    centroid_labels: Sequence[str] | None = None,
    title: str = "Kestrel evaluation report",
    extra: Mapping[str, Any] | None = None,
    embedding_note: str | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/metrics.json``.

    Args:
        out_dir: created if missing; existing report files are replaced.
        result: the metrics of ``scores`` at ``threshold`` (see :func:`training.evaluation.metrics.evaluate`).
        scores, is_anomaly: the evaluation set, for the ROC curve and the histograms.
        threshold: the calibrated threshold (flag rule ``score > threshold``), marked on the plots.
        embeddings: optional ``(n, d)`` embeddings; when given, a PCA scatter of a sample of at most
            5,000 of them is added, coloured by ``embedding_labels`` or, failing that, by
            ``is_anomaly`` when it has one entry per embedding.
        centroids, centroid_labels: optional ``(k, d)`` centroids (and names) marked on the scatter.
        title: the page title.
        embedding_note: a sentence shown above the projection (which rows its encoder trained on).
        extra: key/value details rendered as a table (model version, training metrics, ...);
            nested mappings become dotted keys, other values JSON text.

    Returns:
        The path of ``report.html``.

    Raises:
        DataError: inconsistent scores, labels, embeddings or centroids.
    """
    sections = [
        _headline(result),
        "<h2>ROC curve</h2>" + _image(roc_png(scores, is_anomaly, threshold), "ROC curve"),
        "<h2>Score distribution</h2>" + _image(score_histogram_png(scores, is_anomaly, threshold), "Score histograms"),
        _per_group(result),
    ]
    if embeddings is not None:
        png = embedding_projection_png(embeddings, embedding_labels, centroids, centroid_labels, is_anomaly)
        note = f'<p class="meta">{_text(embedding_note)}</p>' if embedding_note else ""
        sections.append("<h2>Embedding projection</h2>" + note + _image(png, "PCA projection of embeddings"))
    sections.append(_extra(extra))
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(title)}</title><style>{_CSS}</style></head><body>"
        f'<h1>{_text(title)}</h1><p class="meta">Generated {_text(generated)}. Higher score = more anomalous; '
        "an event is flagged when its score is above the threshold.</p>" + "".join(sections) + "</body></html>\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_text = json.dumps(result.as_dict(), indent=2, allow_nan=False) + "\n"
    write_atomic(out_dir / METRICS_FILE, metrics_text.encode("utf-8"), durable=False)
    report_path = out_dir / REPORT_FILE
    write_atomic(report_path, page.encode("utf-8"), durable=False)
    return report_path
