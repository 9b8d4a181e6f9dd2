"""Training budget: epochs mean what they say, patience follows them, threads chosen by a rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.cli.main import main
from training.config import TrainConfig
from training.learning.budget import DEFAULT_EPOCHS, PARALLEL_WORK, choose_threads, epoch_budget, patience_for
from training.learning.outliers import ColumnLayout
from training.learning.trainer import train_encoder


def test_given_epochs_are_not_multiplied_for_small_data() -> None:
    epochs, steps, rule = epoch_budget(459, TrainConfig(epochs=10))
    assert (epochs, steps, rule) == (10, 2, "given")


def test_default_epochs_reach_about_min_steps_on_small_data() -> None:
    epochs, steps, _ = epoch_budget(459, TrainConfig())
    assert steps == 2 and epochs * steps >= TrainConfig().min_steps
    assert epochs * steps < TrainConfig().min_steps + DEFAULT_EPOCHS * steps


def test_default_epochs_on_large_data_are_ten() -> None:
    assert epoch_budget(12_000, TrainConfig())[0] == DEFAULT_EPOCHS


def test_patience_is_a_share_of_the_budget_unless_given() -> None:
    assert patience_for(10, TrainConfig()) == 3
    assert patience_for(200, TrainConfig()) == 60
    assert patience_for(200, TrainConfig(patience=5)) == 5


def test_small_steps_train_on_one_thread() -> None:
    threads, rule = choose_threads(256 * 100_000, TrainConfig(), idle=8)
    assert threads == 1 and rule.startswith("1:")


def test_large_steps_take_the_idle_cores_and_a_given_count_wins() -> None:
    assert choose_threads(PARALLEL_WORK, TrainConfig(), idle=2)[0] == 2
    assert choose_threads(PARALLEL_WORK, TrainConfig(), idle=0)[0] == 1
    assert choose_threads(PARALLEL_WORK, TrainConfig(), idle=64)[0] == 4
    assert choose_threads(1, TrainConfig(threads=3), idle=1) == (3, "given")


def test_trainer_runs_at_most_the_given_epochs_and_reports_the_budget() -> None:
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    layout = ColumnLayout(column_fields=[f"f{j}" for j in range(4)], numeric_columns=list(range(4)), category_blocks=[])
    config = TrainConfig(epochs=3, patience=100, hidden=(16,), embedding_dim=4, progress=False)
    _, history = train_encoder(x, None, layout, config)
    summary = history.summary()
    assert summary["epochs_run"] == 3 and summary["epoch_budget"] == 3 and summary["threads"] == 1


def test_fit_summary_prints_the_budget_and_the_calibration_band(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = np.random.default_rng(1).normal(size=(200, 3))
    data = tmp_path / "normal.csv"
    data.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in rows) + "\n")
    capsys.readouterr()
    assert main(["fit", str(data), "--out", str(tmp_path / "m"), "--epochs", "2", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # Cross-fitted: the fold models get the 2 epochs given, the final model at most their median.
    assert summary["epoch_budget"] <= 2 and summary["epoch_budget_rule"].startswith(
        "given for the 5 fold models (2 epochs)"
    )
    assert summary["epochs_run"] <= 2 and summary["threads"] == 1
    band = summary["calibration"]["fpr_band_95"]
    assert summary["calibration"]["method"].startswith("cross-fitted")
    assert band["low"] <= band["observed"] <= band["high"]
