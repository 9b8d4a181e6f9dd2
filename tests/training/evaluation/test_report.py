"""The HTML evaluation report: self-contained, escaped, complete, and metrics.json beside it."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from detector.errors import DataError
from training.evaluation.metrics import EvaluationResult, evaluate
from training.evaluation.report import write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MALICIOUS = '<script>alert("x")</script>'


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray, list[str], float]:
    rng = np.random.default_rng(7)
    n_normal, n_anomalous = 600, 150
    scores = np.concatenate([rng.lognormal(0.0, 0.3, n_normal), rng.lognormal(1.0, 1.0, n_anomalous)])
    labels = np.r_[np.zeros(n_normal, bool), np.ones(n_anomalous, bool)]
    attacks = np.array(["neptune", "smurf", MALICIOUS])
    groups = np.where(labels, attacks[rng.integers(0, 3, labels.size)], "normal").tolist()
    threshold = float(np.quantile(scores[:n_normal], 0.99))
    return scores, labels, groups, threshold


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img [^>]*src="data:image/png;base64,([^"]+)"', page)]


def test_full_report_is_self_contained_and_complete(
    tmp_path: Path, scored: tuple[np.ndarray, np.ndarray, list[str], float]
) -> None:
    scores, labels, groups, threshold = scored
    result = evaluate(scores, labels, threshold, groups=groups)
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(scores.size, 8))
    embeddings[labels] += 2.0
    centroids = embeddings[~labels].mean(axis=0, keepdims=True)
    out_dir = tmp_path / "nested" / "eval"  # created on demand
    path = write_report(
        out_dir,
        result,
        scores,
        labels,
        threshold,
        embeddings=embeddings,
        embedding_labels=groups,
        centroids=centroids,
        centroid_labels=[MALICIOUS],
        title=f"Report {MALICIOUS}",
        extra={"model_version": "2024-01-01T00:00:00Z", "training": {"loss": 0.125, "epochs": 3}, "note": MALICIOUS},
    )
    assert path == out_dir / "report.html"
    page = path.read_text(encoding="utf-8")
    for section in ("Headline metrics", "Recall at fixed false-positive rates", "ROC curve", "Score distribution"):
        assert section in page
    for section in ("Per group", "Embedding projection", "Details"):
        assert section in page
    pngs = embedded_pngs(page)
    assert len(pngs) == 3 and all(png.startswith(PNG_SIGNATURE) for png in pngs)
    assert "http://" not in page and "https://" not in page
    assert re.findall(r'src="(?!data:image/png;base64,)', page) == []
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # group, title, extra value
    assert "training.loss" in page and "model_version" in page
    assert "neptune" in page and f"{result.auroc:.6g}" in page


def test_metrics_json_is_result_as_dict(
    tmp_path: Path, scored: tuple[np.ndarray, np.ndarray, list[str], float]
) -> None:
    scores, labels, groups, threshold = scored
    result = evaluate(scores, labels, threshold, groups=groups)
    write_report(tmp_path, result, scores, labels, threshold)
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics == result.as_dict()
    assert EvaluationResult.model_validate(metrics).auroc == pytest.approx(result.auroc, abs=1e-6)


def test_report_without_embeddings_or_groups(
    tmp_path: Path, scored: tuple[np.ndarray, np.ndarray, list[str], float]
) -> None:
    scores, labels, _, threshold = scored
    result = evaluate(scores, labels, threshold)
    page = write_report(tmp_path, result, scores, labels, threshold).read_text(encoding="utf-8")
    assert len(embedded_pngs(page)) == 2
    assert "Embedding projection" not in page and "Per group" not in page and "Details" not in page
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_report_rewrites_existing_files(
    tmp_path: Path, scored: tuple[np.ndarray, np.ndarray, list[str], float]
) -> None:
    scores, labels, _, threshold = scored
    write_report(tmp_path, evaluate(scores, labels, threshold), scores, labels, threshold, title="first")
    write_report(tmp_path, evaluate(scores, labels, threshold), scores, labels, threshold, title="second")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<title>second</title>" in page and "<title>first" not in page


def test_inconsistent_embedding_inputs_rejected(
    tmp_path: Path, scored: tuple[np.ndarray, np.ndarray, list[str], float]
) -> None:
    scores, labels, _, threshold = scored
    result = evaluate(scores, labels, threshold)
    embeddings = np.zeros((10, 4))
    with pytest.raises(DataError, match="embedding_labels"):
        write_report(tmp_path, result, scores, labels, threshold, embeddings=embeddings, embedding_labels=["a"])
    with pytest.raises(DataError, match="centroids"):
        write_report(tmp_path, result, scores, labels, threshold, embeddings=embeddings, centroids=np.zeros((2, 3)))
    with pytest.raises(DataError, match="embeddings"):
        write_report(tmp_path, result, scores, labels, threshold, embeddings=np.full((3, 2), np.nan))
    assert not (tmp_path / "report.html").exists()  # nothing half-written on failure
