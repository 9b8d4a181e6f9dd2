"""Shared detector: feature spec, featurizer, encoder, centroid scorer and model artifact."""

from detector.errors import ArtifactError, DataError, DetectorError, InvalidEventError, SpecError
from detector.model import Detector, ScoredBatch
from detector.schema import FeatureSpec

__all__ = [
    "ArtifactError",
    "DataError",
    "Detector",
    "DetectorError",
    "FeatureSpec",
    "InvalidEventError",
    "ScoredBatch",
    "SpecError",
]
