"""A real, small detector artifact built in seconds from bundled NSL-KDD rows (test fixture).

Random-projection encoder (seeded), k-means centroids of embedded training normals (one class,
"normal"), radius = median member distance, threshold at 5 % FPR on held-out normals.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.encoder import Encoder, EncoderConfig
from detector.explain import Explainer
from detector.features import Featurizer
from detector.input_neighbours import InputNeighbours
from detector.model import Detector
from detector.scorer import CentroidScorer, threshold_at_fpr
from detector.spec_inference import infer_spec

DATA = Path(__file__).resolve().parents[1] / "data" / "nsl-kdd" / "KDDTrain+_20Percent.csv.gz"
TARGET_FPR = 0.05
K = 8


@dataclass(frozen=True)
class TinyModel:
    """The artifact directory and NSL-KDD events (dicts with ``event_id`` and ``ts``) to send."""

    path: Path
    version: str
    normal_events: list[dict[str, Any]]
    attack_events: list[dict[str, Any]]
    threshold: float


def _cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def load_rows(limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` NSL-KDD rows as dicts with numbers converted (label kept)."""
    rows: list[dict[str, Any]] = []
    with gzip.open(DATA, "rt", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= limit:
                break
            rows.append({k: _cell(v) for k, v in row.items()})
    return rows


def to_event(row: dict[str, Any], index: int, ts: float) -> dict[str, Any]:
    """An event from a CSV row: label and difficulty dropped, ``event_id`` and ``ts`` added."""
    event = {k: v for k, v in row.items() if k not in ("label", "difficulty")}
    event["event_id"] = f"evt-{index:06d}"
    event["ts"] = ts
    return event


def _kmeans(points: np.ndarray, k: int, iterations: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = points[rng.choice(len(points), k, replace=False)].copy()
    for _ in range(iterations):
        assign = np.argmin(((points[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
        for c in range(k):
            if np.any(assign == c):
                centers[c] = points[assign == c].mean(axis=0)
    return centers


def build_tiny_model(out_dir: Path, n_rows: int = 4000) -> TinyModel:
    """Fit and save the artifact into ``out_dir``; return it with normal and attack events."""
    rows = load_rows(n_rows)
    events = [to_event(r, i, 1_700_000_000.0 + i) for i, r in enumerate(rows)]
    normal = [e for e, r in zip(events, rows, strict=True) if r["label"] == "normal"]
    attack = [e for e, r in zip(events, rows, strict=True) if r["label"] != "normal"]
    split = int(len(normal) * 0.7)
    train, held_out = normal[:split], normal[split:]
    spec = infer_spec(train, id_field="event_id", timestamp_field="ts")
    feat = Featurizer(spec).fit(train)
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(input_dim=feat.n_features)).eval()
    x_train = feat.transform(train)
    with torch.inference_mode():
        z_train = encoder(torch.from_numpy(x_train)).numpy()
    centroids = _kmeans(z_train.astype(np.float64), K).astype(np.float32)
    dist = np.sqrt(((z_train[:, None, :] - centroids[None]) ** 2).sum(-1))
    member = np.argmin(dist, axis=1)
    radius = np.array(
        [np.median(dist[member == c, c]) if np.any(member == c) else 1.0 for c in range(K)], dtype=np.float32
    )
    radius = np.maximum(radius, 1e-3)
    # The input-space term as the trainer builds it (k-means points, scales = medians on training rows).
    points = _kmeans(x_train.astype(np.float64), 4 * K).astype(np.float32)
    embedding_train = CentroidScorer(centroids, np.zeros(K, dtype=np.intp), ["normal"], radius, np.zeros(1), 0.0)
    train_scores = embedding_train.score(z_train).score
    input_train = InputNeighbours(points, 1.0, 1.0).distances(x_train)
    view = InputNeighbours(points, float(np.median(train_scores)), float(np.median(input_train)))
    provisional = CentroidScorer(centroids, np.zeros(K, dtype=np.intp), ["normal"], radius, np.zeros(1), 0.0, view)
    x_cal = feat.transform(held_out)
    with torch.inference_mode():
        z_cal = encoder(torch.from_numpy(x_cal)).numpy()
    cal = provisional.score(z_cal, x_cal).score
    threshold = threshold_at_fpr(cal, TARGET_FPR)
    scorer = CentroidScorer(centroids, np.zeros(K, dtype=np.intp), ["normal"], radius, cal, threshold, view)
    mean = np.stack([x_train[member == c].mean(axis=0) if np.any(member == c) else x_train.mean(0) for c in range(K)])
    spread = np.stack([x_train[member == c].std(axis=0) if np.any(member == c) else x_train.std(0) for c in range(K)])
    explainer = Explainer(mean.astype(np.float32), spread.astype(np.float32), feat.column_fields)
    detector = Detector(feat, encoder, scorer, explainer)
    detector.save(out_dir, metadata={"calibration": {"target_fpr": TARGET_FPR, "n_calibration": len(cal)}})
    return TinyModel(out_dir, detector.version, held_out, attack, threshold)
