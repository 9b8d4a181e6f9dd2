"""What the trainer learns from (labels, cluster targets or one class) and its projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from detector.encoder import embed
from detector.errors import DataError
from training.config import TrainConfig
from training.learning.coassociation import COASSOCIATION_KS
from training.learning.objective import MetricObjective
from training.learning.outliers import DEFAULT_NOISE_SCALE, ColumnLayout, noise_scale_for
from training.learning.trainer import (
    resolve_noise,
    resolve_projection,
    split_validation,
    train_encoder,
    training_targets,
)

QUICK = TrainConfig(min_steps=60, batch_size=64, hidden=(32,), embedding_dim=8, progress=False, threads=1)


def three_blobs(n_per: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * 4, [6.0] * 4, [0.0, 6.0] * 2])
    x = np.concatenate([c + rng.normal(0, 0.6, size=(n_per, 4)) for c in centers]).astype(np.float32)
    return x, np.repeat(np.arange(3), n_per)


def one_blob(n: int = 360, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def layout(width: int) -> ColumnLayout:
    return ColumnLayout([f"f{j}" for j in range(width)], list(range(width)), [])


def test_labels_are_used_as_given_and_trained_on_the_plain_sphere() -> None:
    x, truth = three_blobs()
    targets, structure = training_targets(x, truth.astype(np.intp), QUICK)
    assert targets is not None and np.array_equal(targets, truth) and structure is None
    assert resolve_projection(targets, QUICK) == "sphere"


def test_clustered_unlabelled_rows_get_coassociation_targets() -> None:
    x, _ = three_blobs()
    targets, structure = training_targets(x, None, QUICK)
    assert targets is not None and targets.shape == (len(x), len(COASSOCIATION_KS))
    assert structure is not None and structure["clustered"] is True
    assert resolve_projection(targets, QUICK) == "sphere"


def test_triplet_loss_takes_the_best_clustering_as_classes() -> None:
    x, truth = three_blobs()
    targets, structure = training_targets(x, None, QUICK.model_copy(update={"loss": "triplet"}))
    assert targets is not None and targets.ndim == 1 and len(np.unique(targets)) == 3
    assert structure is not None and structure["triplet_classes"] == 3
    # the three classes are the three blobs
    assert all(len(np.unique(targets[truth == t])) == 1 for t in range(3))


def test_the_objective_names_clusters_as_the_classes_of_unlabelled_triplet_training() -> None:
    x, truth = three_blobs()
    triplet = QUICK.model_copy(update={"loss": "triplet"})
    _, unlabelled = train_encoder(x, None, layout(4), triplet)
    assert unlabelled.objective.startswith("triplet; positives: k-means clusters of the rows; negatives: other clust")
    _, labelled = train_encoder(x, truth.astype(np.intp), layout(4), triplet)
    assert labelled.objective.startswith("triplet; positives: labelled classes; negatives: other classes")


def test_a_continuum_is_one_class_on_the_stereographic_sphere() -> None:
    targets, structure = training_targets(one_blob(), None, QUICK)
    assert targets is None and structure is not None and structure["clustered"] is False
    assert resolve_projection(targets, QUICK) == "stereographic"


@pytest.mark.parametrize(
    ("positives", "projection"),
    [("one_class", "stereographic"), ("views_one_class", "stereographic"), ("views", "sphere")],
)
def test_explicit_unlabelled_objectives_skip_the_structure_test(positives: str, projection: str) -> None:
    x, _ = three_blobs()
    config = QUICK.model_copy(update={"unlabelled_positives": positives})
    targets, structure = training_targets(x, None, config)
    assert targets is None and structure is None
    assert resolve_projection(targets, config) == projection


def test_an_explicit_projection_wins() -> None:
    _, truth = three_blobs()
    config = QUICK.model_copy(update={"projection": "stereographic"})
    assert resolve_projection(truth.astype(np.intp), config) == "stereographic"
    assert resolve_projection(None, QUICK.model_copy(update={"projection": "sphere"})) == "sphere"


def test_coassociation_targets_need_the_contrastive_loss() -> None:
    x, _ = three_blobs()
    targets, _ = training_targets(x, None, QUICK)
    assert targets is not None
    with pytest.raises(ValueError, match="contrastive"):
        MetricObjective(targets, QUICK.model_copy(update={"loss": "triplet"}), None, None)


def separation(z: np.ndarray, truth: np.ndarray) -> float:
    """Closest pair of blob means over the mean distance of a row to its blob's mean."""
    means = np.stack([z[truth == t].mean(0) for t in range(3)])
    within = np.mean([np.linalg.norm(z[truth == t] - means[t], axis=1).mean() for t in range(3)])
    return float(min(np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)) / within)


def test_training_on_clustered_rows_keeps_the_clusters_apart() -> None:
    x, truth = three_blobs()
    encoder, history = train_encoder(x, None, layout(4), QUICK)
    summary = history.summary()
    assert summary["projection"] == "sphere" == encoder.config.projection
    assert "co-association" in history.objective
    one_class, _ = train_encoder(x, None, layout(4), QUICK.model_copy(update={"unlabelled_positives": "one_class"}))
    kept = separation(embed(encoder, x), truth)
    assert kept > 2.0
    assert kept > 1.5 * separation(embed(one_class, x), truth)  # one class pulls the blobs together


def test_training_on_one_blob_uses_the_stereographic_projection() -> None:
    x = one_blob()
    encoder, history = train_encoder(x, None, layout(4), QUICK)
    assert history.summary()["projection"] == "stereographic" == encoder.config.projection
    assert history.objective.startswith("contrastive; positives: all normal rows (one class)")
    z = embed(encoder, x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    far = embed(encoder, x[:50] * 50.0)  # fifty times farther out than the training rows
    centre = z.mean(0)
    assert np.linalg.norm(far - centre, axis=1).mean() > 2 * np.linalg.norm(z - centre, axis=1).mean()


def test_outlier_noise_follows_the_objective_unless_set() -> None:
    x, truth = three_blobs()
    wide = one_blob() * 3.0  # standardised-looking rows with wide gaps between neighbours
    gaps = noise_scale_for(wide, QUICK.seed)
    assert gaps > DEFAULT_NOISE_SCALE
    assert resolve_noise(wide, None, QUICK) == gaps  # one class: from the neighbour gaps
    assert resolve_noise(x, truth.astype(np.intp), QUICK) == DEFAULT_NOISE_SCALE  # classes: fixed
    clustered, _ = training_targets(x, None, QUICK)
    assert resolve_noise(x, clustered, QUICK) == DEFAULT_NOISE_SCALE
    assert resolve_noise(wide, None, QUICK.model_copy(update={"outlier_noise": 2.5})) == 2.5
    assert resolve_noise(x, truth.astype(np.intp), QUICK.model_copy(update={"outlier_noise": "auto"})) == (
        noise_scale_for(x, QUICK.seed)
    )


def test_history_records_the_resolved_choices() -> None:
    x = one_blob() * 3.0
    _, history = train_encoder(x, None, layout(4), QUICK)
    summary = history.summary()
    assert summary["projection"] == "stereographic"
    fit_idx, _ = split_validation(len(x), None, QUICK.validation_fraction, QUICK.seed)
    assert summary["outlier_noise"] == round(noise_scale_for(x[fit_idx], QUICK.seed), 3) > DEFAULT_NOISE_SCALE
    structure = summary["cluster_structure"]
    assert isinstance(structure, dict) and structure["clustered"] is False


def test_training_is_seeded_without_touching_the_callers_torch_random_state() -> None:
    x, _ = three_blobs()
    torch.manual_seed(12345)
    before = torch.get_rng_state()
    first, _ = train_encoder(x, None, layout(4), QUICK)
    assert torch.equal(torch.get_rng_state(), before)  # a library does not reseed its user's generator
    torch.manual_seed(999)  # another caller state: the same seed in the config gives the same encoder
    second, _ = train_encoder(x, None, layout(4), QUICK)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_progress_bar_stays_out_of_a_stderr_that_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """A library user's log file or notebook pipe gets no tqdm bars (the CLI writes its own lines there)."""
    x, _ = three_blobs()
    train_encoder(x, None, layout(4), QUICK.model_copy(update={"progress": True}))
    assert capsys.readouterr().err == ""


def test_without_restoring_the_best_epoch_the_last_epochs_weights_are_kept() -> None:
    """The cross-fitted final model's length is its fold models' choice: it keeps its last epoch."""
    x, _ = three_blobs()
    # A learning rate at which the held-out loss bottoms out early (epoch 4 of 12 on this seed).
    config = QUICK.model_copy(update={"epochs": 12, "patience": 12, "learning_rate": 3e-2})
    best, best_history = train_encoder(x, None, layout(4), config)
    last, last_history = train_encoder(x, None, layout(4), config.model_copy(update={"restore_best_epoch": False}))
    assert best_history.kept_epoch == best_history.best_epoch == last_history.best_epoch < 12
    assert last_history.kept_epoch == len(last_history.train_loss) == 12
    assert last_history.summary()["kept_epoch"] == 12
    same = all(torch.equal(a, b) for a, b in zip(best.parameters(), last.parameters(), strict=True))
    assert not same  # the last epoch's weights, not the best one's


def test_with_no_rows_held_out_the_whole_budget_runs_and_its_last_epoch_is_kept() -> None:
    """Found in review: classes of under 10 rows hold none out; every epoch's "validation loss"
    read 0.0, so training stopped after the patience and rolled back to epoch 1 (and a cross-fitted
    fit then gave its final model 1 epoch of the 10 asked for)."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(30), 9).astype(np.intp)  # 30 classes x 9 rows
    x = (rng.normal(size=(270, 4)) + y[:, None] * 0.3).astype(np.float32)
    layout = ColumnLayout(["a", "b", "c", "d"], [0, 1, 2, 3], [])
    config = TrainConfig(epochs=10, threads=1, progress=False, hidden=(16,), embedding_dim=8)
    _, history = train_encoder(x, y, layout, config)
    assert len(history.validation_rows) == 0
    assert len(history.train_loss) == 10 and not history.stopped_early and history.kept_epoch == 10
    assert history.summary()["best_validation_loss"] is None


@pytest.mark.parametrize(
    ("sizes", "labelled"),
    [((95, 95, 96), True), ((286,), False)],  # 256 training rows in 3 classes; 257 rows in one
    ids=["class-balanced", "one-class"],
)
def test_the_summary_counts_the_optimiser_steps_taken(sizes: tuple[int, ...], labelled: bool) -> None:
    """Found in review: the class-balanced batches (255 rows for 3 classes) made 2 steps an epoch
    where the summary and the cross-fit's step count said 1, and the unlabelled path dropped a last
    chunk of one row (1 step where 2 were counted)."""
    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)]).astype(np.intp)
    x = (rng.normal(size=(len(y), 2)) + y[:, None]).astype(np.float32)
    config = TrainConfig(epochs=2, patience=5, threads=1, progress=False, hidden=(8,), embedding_dim=4,
                         unlabelled_positives="one_class")  # fmt: skip
    steps: list[int] = []
    handle = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        _, history = train_encoder(x, y if labelled else None, ColumnLayout(["a", "b"], [0, 1], []), config)
    finally:
        handle.remove()
    summary = history.summary()
    assert len(steps) == summary["epochs_run"] * summary["steps_per_epoch"]  # type: ignore[operator]


def test_training_gives_the_callers_torch_thread_count_back() -> None:
    before = torch.get_num_threads()
    wanted = 3 if before != 3 else 2
    torch.set_num_threads(wanted)
    try:
        train_encoder(one_blob(), None, layout(4), QUICK)  # trains on 1 thread (QUICK.threads)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("positives", ["one_class", "views_one_class", "auto"])
def test_a_triplet_loss_without_negatives_is_refused(positives: str) -> None:
    """One class, no view negatives and no synthetic outliers: every triplet loss would be 0."""
    config = QUICK.model_copy(update={"loss": "triplet", "unlabelled_positives": positives, "outlier_exposure": False})
    with pytest.raises(DataError, match="the triplet loss has no negatives here"):
        train_encoder(one_blob(), None, layout(4), config)


def test_a_triplet_loss_without_negatives_learns_from_the_neighbour_term() -> None:
    """Found in review of the refusal: with the neighbour term the loss is not 0, and it learns."""
    config = QUICK.model_copy(
        update={
            "loss": "triplet",
            "unlabelled_positives": "one_class",
            "outlier_exposure": False,
            "neighbour_weight": 1.0,
        }
    )
    _, history = train_encoder(one_blob(), None, layout(4), config)
    assert any(loss > 0 for loss in history.train_loss)


@pytest.mark.parametrize(
    ("positives", "outliers"), [("views", False), ("one_class", True), ("auto", True), ("clusters", False)]
)
def test_a_triplet_loss_with_negatives_learns(positives: str, outliers: bool) -> None:
    x = three_blobs()[0] if positives == "clusters" else one_blob()
    config = QUICK.model_copy(
        update={"loss": "triplet", "unlabelled_positives": positives, "outlier_exposure": outliers}
    )
    _, history = train_encoder(x, None, layout(4), config)
    assert any(loss > 0 for loss in history.train_loss)
