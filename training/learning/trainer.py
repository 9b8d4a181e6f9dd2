"""The training loop: mini-batch Adam on an objective, early stopping on a held-out loss.

Deterministic for a seed (torch, numpy and the corruption generators are all seeded; the
held-out loss uses fixed views). Shows a progress bar (tqdm) when asked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from detector.encoder import Encoder, EncoderConfig
from training.config import TrainConfig
from training.learning.budget import resolve_budget, torch_threads
from training.learning.clustering import kmeans
from training.learning.coassociation import STRUCTURE_CANDIDATES, find_structure
from training.learning.corruption import ScarfCorruption, column_groups_from_fields
from training.learning.objective import MetricObjective
from training.learning.outliers import DEFAULT_NOISE_SCALE, ColumnLayout, SyntheticOutliers, noise_scale_for

log = logging.getLogger(__name__)


@dataclass
class TrainingHistory:
    """Per-epoch losses and how the run ended."""

    objective: str
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_epoch: int = 0
    #: The epoch whose weights the encoder ends with: ``best_epoch``, or the last epoch run when
    #: the config does not restore the best one.
    kept_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    projection: str = "sphere"
    outlier_noise: float | None = None
    cluster_structure: dict[str, object] | None = None
    budget: dict[str, object] = field(default_factory=dict)
    #: Rows (indices into the training rows) held out for early stopping: no gradient step trained
    #: on them (the epoch was chosen on their loss), so the fit can measure on them how new normals
    #: score (not in :meth:`summary`).
    validation_rows: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def summary(self) -> dict[str, object]:
        return {
            "objective": self.objective,
            "epochs_run": len(self.train_loss),
            "best_epoch": self.best_epoch,
            "kept_epoch": self.kept_epoch,
            "best_validation_loss": round(min(self.validation_loss), 6) if self.validation_loss else None,
            "final_train_loss": round(self.train_loss[-1], 6) if self.train_loss else None,
            "stopped_early": self.stopped_early,
            "training_loop_seconds": round(self.seconds, 2),
            "projection": self.projection,
            "outlier_noise": None if self.outlier_noise is None else round(self.outlier_noise, 3),
            "cluster_structure": self.cluster_structure,
            **self.budget,
        }


def split_validation(
    n: int, labels: NDArray[np.intp] | None, fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Stratified (by label when given) split of ``range(n)`` into fit and validation indices."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    fit: list[NDArray[np.int64]] = []
    val: list[NDArray[np.int64]] = []
    for members in groups:
        shuffled = rng.permutation(members).astype(np.int64)
        n_val = round(len(shuffled) * fraction) if len(shuffled) >= 10 else 0
        val.append(shuffled[:n_val])
        fit.append(shuffled[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def make_objective(
    x_fit: NDArray[np.float32],
    labels: NDArray[np.intp] | None,
    layout: ColumnLayout,
    config: TrainConfig,
    seed: int,
    noise_scale: float = DEFAULT_NOISE_SCALE,
) -> MetricObjective:
    """The objective for these rows (see :mod:`training.learning.objective`), its randomness seeded.

    ``noise_scale``: standard deviations of the synthetic outliers' noise (:func:`resolve_noise`).
    """
    views = None
    one_class = labels is None or (labels.ndim == 1 and len(np.unique(labels)) < 2)
    if one_class and config.unlabelled_positives in ("views", "views_one_class"):
        groups = column_groups_from_fields(layout.column_fields)
        views = ScarfCorruption(x_fit, groups, config.corruption_rate, seed)
    outliers = None
    if config.outlier_exposure:
        outliers = SyntheticOutliers(
            layout.numeric_columns,
            layout.category_blocks,
            config.outlier_rate,
            noise_scale,
            seed,
        )
    return MetricObjective(labels, config, views, outliers)


def training_targets(
    x: NDArray[np.float32], labels: NDArray[np.intp] | None, config: TrainConfig
) -> tuple[NDArray[np.intp] | None, dict[str, object] | None]:
    """What the objective learns from: the labels, or for unlabelled rows cluster targets.

    Unlabelled with ``unlabelled_positives`` ``auto`` / ``clusters``: when the rows show cluster
    structure (or ``clusters`` forces it), ``(n, C)`` k-means assignments whose co-association is
    the contrastive target; the triplet loss takes the clusters of the best k as classes.
    Returns the targets (``None`` = one class) and the structure test's summary.
    """
    if labels is not None or config.unlabelled_positives not in ("auto", "clusters"):
        return labels, None
    forced = config.unlabelled_positives == "clusters"
    structure = find_structure(x, STRUCTURE_CANDIDATES, config.seed, force=forced)
    if structure.assignments is None:
        return None, structure.summary()
    if config.loss == "triplet":
        k = max(structure.best_k, 2)
        return kmeans(x, k, config.seed + k).labels.astype(np.intp), structure.summary() | {"triplet_classes": k}
    return structure.assignments, structure.summary()


def trains_one_class(targets: NDArray[np.intp] | None, config: TrainConfig) -> bool:
    """True when the normals are trained as one compact class (no classes, clusters or SCARF negatives)."""
    if targets is not None and (targets.ndim == 2 or len(np.unique(targets)) >= 2):
        return False
    return config.unlabelled_positives != "views"


def resolve_projection(targets: NDArray[np.intp] | None, config: TrainConfig) -> Literal["sphere", "stereographic"]:
    """``projection="auto"``: stereographic for one compact class, the plain sphere otherwise."""
    if config.projection != "auto":
        return config.projection
    return "stereographic" if trains_one_class(targets, config) else "sphere"


def resolve_noise(x_fit: NDArray[np.float32], targets: NDArray[np.intp] | None, config: TrainConfig) -> float:
    """Synthetic-outlier noise in standard deviations; ``outlier_noise=None`` picks by the objective.

    One compact class: ``"auto"`` (from the training rows' neighbour gaps): outliers inside the
    normals' own gaps would be pulled in by the one-class positives and pushed out as outliers at
    once. With classes, the negatives between classes shape the space, and the fixed 5 standard
    deviations measured better (docs/benchmarks.md).
    """
    noise = config.outlier_noise
    if noise is None:
        noise = "auto" if trains_one_class(targets, config) else DEFAULT_NOISE_SCALE
    return noise_scale_for(x_fit, config.seed) if noise == "auto" else float(noise)


def train_encoder(
    x: NDArray[np.float32],
    labels: NDArray[np.intp] | None,
    layout: ColumnLayout,
    config: TrainConfig,
) -> tuple[Encoder, TrainingHistory]:
    """Train an encoder on featurized normal rows.

    Args:
        x: ``(n, F)`` featurized training normals.
        labels: ``(n,)`` normal-class indices, or ``None`` (self-supervised; cluster targets
            when the rows are clustered, see :func:`training_targets`).
        layout: the featurizer's column layout (SCARF groups, synthetic outliers).
        config: hyper-parameters.

    Returns:
        The encoder restored to its best held-out epoch (unless ``config.restore_best_epoch`` is
        False: the weights of the last epoch run), in eval mode, and the history.
    """
    # Seeded for reproducibility, on a forked generator: the caller's torch random stream is
    # left as it was (a library must not reseed its user's global state); so is its thread count,
    # which training sets from its budget.
    with torch.random.fork_rng(devices=[]), torch_threads(torch.get_num_threads()):
        torch.manual_seed(config.seed)
        return _train_encoder(x, labels, layout, config)


def _train_encoder(
    x: NDArray[np.float32], labels: NDArray[np.intp] | None, layout: ColumnLayout, config: TrainConfig
) -> tuple[Encoder, TrainingHistory]:
    targets, structure = training_targets(x, labels, config)
    stratify = targets if targets is not None and targets.ndim == 1 else None
    fit_idx, val_idx = split_validation(len(x), stratify, config.validation_fraction, config.seed)
    x_fit, x_val = torch.from_numpy(x[fit_idx]), torch.from_numpy(x[val_idx])
    y_fit = None if targets is None else torch.from_numpy(targets[fit_idx].astype(np.int64))
    y_val = None if targets is None else torch.from_numpy(targets[val_idx].astype(np.int64))
    fit_targets = None if targets is None else targets[fit_idx]
    # No synthetic outliers, no noise scale to compute (the gap-based one costs a neighbour search).
    noise = resolve_noise(x[fit_idx], targets, config) if config.outlier_exposure else DEFAULT_NOISE_SCALE
    objective = make_objective(x[fit_idx], fit_targets, layout, config, config.seed, noise)
    projection = resolve_projection(targets, config)
    encoder = Encoder(
        EncoderConfig(
            input_dim=x.shape[1], hidden=config.hidden, embedding_dim=config.embedding_dim, projection=projection
        )
    )
    budget = resolve_budget(len(fit_idx), x.shape[1], config, n_rows=len(x))
    torch.set_num_threads(budget.threads)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = TrainingHistory(
        objective=objective.describe(classes_from_clusters=labels is None),
        projection=projection,
        outlier_noise=noise if config.outlier_exposure else None,
        cluster_structure=structure,
        budget=budget.summary() | {"neighbour_weight": config.neighbour_weight},
        validation_rows=val_idx,
    )
    best_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    best, waited, start = float("inf"), 0, time.perf_counter()
    epochs, patience = budget.epochs, budget.patience
    # Fewer than 2 rows held out (classes of under 10 rows): no loss to judge epochs by, so no early
    # stopping and no best epoch; the whole budget runs and its last epoch is kept.
    judged = len(val_idx) >= 2
    # disable=None: a bar only where stderr is a terminal, never into a log file or a pipe.
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=None if config.progress else True, leave=False)
    for epoch in bar:
        history.train_loss.append(_train_epoch(encoder, objective, optimiser, x_fit, y_fit, config.seed + epoch))
        if judged:
            val_loss = _validation_loss(encoder, x[val_idx], x_val, y_val, layout, config, noise)
            history.validation_loss.append(val_loss)
            bar.set_postfix(loss=f"{history.train_loss[-1]:.4f}", val=f"{val_loss:.4f}")
            if val_loss < best - 1e-4:
                best, waited, history.best_epoch = val_loss, 0, epoch + 1
                best_state = {k: v.clone() for k, v in encoder.state_dict().items()}
            else:
                waited += 1
            if waited >= patience:
                history.stopped_early = True
                break
        if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
            log.warning("training_time_budget_reached", extra={"epochs": epoch + 1})
            break
    bar.close()
    history.kept_epoch = history.best_epoch
    if config.restore_best_epoch and judged:
        encoder.load_state_dict(best_state)
    else:
        history.kept_epoch = len(history.train_loss)
    encoder.eval()
    history.seconds = time.perf_counter() - start
    return encoder, history


def _train_epoch(
    encoder: Encoder,
    objective: MetricObjective,
    optimiser: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor | None,
    seed: int,
) -> float:
    encoder.train()
    total, count = 0.0, 0
    for idx in objective.batches(len(x), seed):
        batch = torch.from_numpy(idx)
        loss = objective.loss(encoder, x[batch], None if y is None else y[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        total += float(loss.detach()) * len(idx)
        count += len(idx)
    return total / max(count, 1)


def _validation_loss(
    encoder: Encoder,
    x_val_np: NDArray[np.float32],
    x_val: torch.Tensor,
    y_val: torch.Tensor | None,
    layout: ColumnLayout,
    config: TrainConfig,
    noise_scale: float,
) -> float:
    """Loss on the held-out rows with fixed batches and fixed corrupted views (repeatable)."""
    if len(x_val) < 2:
        return 0.0
    labels = None if y_val is None else y_val.numpy()
    objective = make_objective(x_val_np, labels, layout, config, 10_000 + config.seed, noise_scale)
    encoder.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for idx in objective.batches(len(x_val), seed=10_000):
            batch = torch.from_numpy(idx)
            loss = objective.loss(encoder, x_val[batch], None if y_val is None else y_val[batch])
            total += float(loss) * len(idx)
            count += len(idx)
    return total / max(count, 1)
