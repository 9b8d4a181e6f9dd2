"""A tiny but real model artifact for registry tests (seconds, no training)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.encoder import Encoder, EncoderConfig
from detector.explain import Explainer
from detector.features import Featurizer
from detector.model import Detector
from detector.schema import FeatureSpec
from detector.scorer import CentroidScorer, threshold_at_fpr


def build_artifact(
    out_dir: Path, seed: int, metadata: dict[str, Any] | None = None, optional: Sequence[str] = ()
) -> Path:
    """Save a tiny but real detector (two numeric fields, one categorical, two centroids; the
    ``optional`` ones among them may be missing)."""
    rng = np.random.default_rng(seed)
    records = [
        {"bytes": float(rng.normal(100, 10)), "duration": float(rng.exponential(2)), "proto": ["tcp", "udp"][i % 2]}
        for i in range(50)
    ]
    featurizer = Featurizer(
        FeatureSpec(numeric=["bytes", "duration"], categorical=["proto"], optional=list(optional))
    ).fit(records)
    torch.manual_seed(seed)
    encoder = Encoder(EncoderConfig(input_dim=featurizer.n_features, hidden=(8,), embedding_dim=4)).eval()
    features = featurizer.transform(records)
    with torch.inference_mode():
        embeddings = encoder(torch.from_numpy(features)).numpy()

    def scorer_with(calibration: np.ndarray, threshold: float) -> CentroidScorer:
        return CentroidScorer(
            centroids=embeddings[[0, 1]].copy(),
            centroid_class=np.array([0, 1], dtype=np.intp),
            class_names=["tcp", "udp"],
            radius=np.array([0.5, 0.5], dtype=np.float32),
            calibration_scores=calibration,
            threshold=threshold,
        )

    scores = scorer_with(np.zeros(1), 1.0).score(embeddings).score
    scorer = scorer_with(scores, threshold_at_fpr(scores, 0.05))
    width = featurizer.n_features
    explainer = Explainer(
        np.stack([features[::2].mean(0), features[1::2].mean(0)]).astype(np.float32),
        np.stack([features[::2].std(0), features[1::2].std(0)]).astype(np.float32),
        featurizer.column_fields,
    )
    assert explainer.feature_mean.shape == (2, width)
    Detector(featurizer, encoder, scorer, explainer).save(out_dir, metadata)
    return out_dir
