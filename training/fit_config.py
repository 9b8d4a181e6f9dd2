"""The fit's settings beyond the encoder's hyper-parameters (:class:`FitConfig`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.config import TrainConfig
from training.score_terms import GaussChoice, ScoreTerms


class FitConfig(BaseModel):
    """Everything beyond the encoder's training hyper-parameters.

    Attributes:
        target_fpr: false-positive rate the threshold is calibrated for.
        calibration_fraction: share of normals (per class) held out to calibrate.
        cross_fit_below: when that holdout would hold fewer calibration normals than this, calibrate
            by cross-fitting on all normals instead (:mod:`training.crossfit`; 0 = never).
        centroids_per_class: most centroids per normal class (k-means inside the class; at most one
            per 20 training members).
        radius_shrinkage: pseudo-members pulling each centroid's radius toward the global one
            (``None`` = one radius shared by all centroids).
        cluster_candidates: k values tried when deriving classes from unlabelled data.
        input_budget: multiply-adds per event the input-space term of the score may cost (its
            reference points times the featurized width; 0 = embedding score only). See
            :func:`training.calibration.fit_input_terms` and docs/quality.md.
        score_terms: which terms make the score: ``both`` (embedding + input distance), ``input``
            (the input distance alone) or ``auto`` (chosen from the held-out normals, see
            :mod:`training.score_terms`; the test is run and recorded whichever is set).
        gauss_term: the score's rank-Gauss third term (:class:`detector.input_neighbours.GaussTerm`):
            ``auto`` (kept when the same test prefers it), ``on`` or ``off`` (not even fitted).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    target_fpr: float = Field(default=0.01, gt=0, lt=1)
    calibration_fraction: float = Field(default=0.1, gt=0, lt=0.9)
    cross_fit_below: int = Field(default=1000, ge=0)
    centroids_per_class: int = Field(default=64, ge=1)
    radius_shrinkage: float | None = Field(default=None, ge=0)
    cluster_candidates: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 12)
    input_budget: int = Field(default=32768, ge=0)
    score_terms: ScoreTerms = "auto"
    gauss_term: GaussChoice = "auto"
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _gauss_needs_the_input_term(self) -> FitConfig:
        if self.gauss_term == "on" and self.input_budget == 0:
            raise ValueError("gauss_term 'on' needs the input-space term (input_budget > 0)")
        return self
