"""Training hyper-parameters (frozen; saved in the artifact manifest)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Upper bounds that keep a typo from allocating terabytes or starting a hundred thousand threads.
MAX_WIDTH = 16_384
MAX_THREADS = 256


class TrainConfig(BaseModel):
    """Everything that shapes a training run.

    Attributes:
        loss: metric loss for labelled normal classes: ``contrastive`` (Hadsell et al. 2006,
            pairs) or ``triplet`` (batch-hard or semi-hard mining).
        margin: negative pairs closer than this (Euclidean, on the unit sphere) are pushed
            apart; ``None`` = 0.5 for contrastive, 0.2 for triplet.
        mining: triplet mining strategy.
        epochs: maximum epochs, exactly as given (early stopping on the held-out loss may end
            sooner; a cross-fitted fit's final model runs the optimiser steps its fold
            models kept, :func:`training.crossfit.final_epochs`); ``None`` = derived from the data size
            (:mod:`training.learning.budget`: 10 epochs, more for a small set so that training
            makes about ``min_steps`` optimiser steps).
        min_steps: optimiser steps the derived epoch budget aims for (only when ``epochs`` is None).
        patience: epochs without a held-out improvement before stopping; ``None`` = 30% of the
            epoch budget.
        restore_best_epoch: end with the weights of the epoch with the lowest held-out loss (else
            those of the last epoch run: a cross-fitted fit's final model, whose training length
            its fold models chose).
        unlabelled_positives: without normal-class labels: ``auto`` (``clusters`` when the
            featurized rows show clear cluster structure, else ``one_class``; see
            :mod:`training.learning.coassociation`), ``clusters`` (co-association of several k-means
            clusterings as soft pair targets), ``one_class`` (every normal row is a positive of
            every other; synthetic outliers are the negatives), ``views`` (SCARF: two corrupted
            views of a row are a positive pair, other rows negatives) or ``views_one_class``
            (SCARF views as augmentation, every row a positive).
        projection: how the encoder puts its output on the sphere (:mod:`detector.encoder`):
            ``auto`` = ``stereographic`` when the normals are trained as one compact class (no
            labels, no cluster structure), ``sphere`` (L2 normalisation) when there are classes.
        corruption_rate: share of fields replaced in a SCARF view.
        outlier_exposure: add synthetic outliers as negatives (see :mod:`training.learning.outliers`).
        outlier_rate: share of fields altered in a synthetic outlier.
        outlier_noise: standard deviations of noise added to an altered numeric field, or
            ``"auto"``: from the training rows' neighbour gaps (:func:`training.learning.outliers.noise_scale_for`);
            ``None`` (default): ``"auto"`` when the normals are trained as one class, 5 otherwise.
        neighbour_weight: weight of the local term that keeps each row's input-space neighbours
            at proportional embedding distances (:func:`training.learning.objective.neighbour_loss`); off
            by default: the ablation over the 22 benchmark sets (docs/quality.md) found it mixed.
        validation_fraction: share of the training normals held out for early stopping.
        threads: torch CPU threads; ``None`` = chosen by :func:`training.learning.budget.choose_threads`
            (one unless a training step is large).
        max_seconds: wall-clock budget for the loop (None = unbounded).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    loss: Literal["contrastive", "triplet"] = "contrastive"
    margin: float | None = Field(default=None, gt=0)
    mining: Literal["batch_hard", "semi_hard"] = "batch_hard"
    epochs: int | None = Field(default=None, ge=1)
    min_steps: int = Field(default=400, ge=0)
    patience: int | None = Field(default=None, ge=1)
    restore_best_epoch: bool = True
    batch_size: int = Field(default=256, ge=8)
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    hidden: tuple[int, ...] = (256, 128)
    embedding_dim: int = Field(default=64, ge=2, le=MAX_WIDTH)
    unlabelled_positives: Literal["auto", "clusters", "one_class", "views", "views_one_class"] = "auto"
    projection: Literal["auto", "sphere", "stereographic"] = "auto"
    corruption_rate: float = Field(default=0.3, ge=0, le=1)
    outlier_exposure: bool = True
    outlier_rate: float = Field(default=0.1, gt=0, le=1)
    outlier_noise: float | Literal["auto"] | None = None
    neighbour_weight: float = Field(default=0.0, ge=0)
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    threads: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    max_seconds: float | None = Field(default=None, gt=0)
    #: A progress bar per training (on stderr, and only when stderr is a terminal).
    progress: bool = True

    @field_validator("hidden")
    @classmethod
    def _layer_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= w <= MAX_WIDTH for w in value):
            raise ValueError(f"hidden layer widths must be between 1 and {MAX_WIDTH}, got {list(value)}")
        return value

    @field_validator("outlier_noise")
    @classmethod
    def _positive_noise(cls, value: float | str | None) -> float | str | None:
        if value is not None and not isinstance(value, str) and not value > 0:  # NaN too
            raise ValueError("outlier_noise must be positive or 'auto'")
        return value

    @property
    def effective_margin(self) -> float:
        if self.margin is not None:
            return self.margin
        return 0.5 if self.loss == "contrastive" else 0.2
