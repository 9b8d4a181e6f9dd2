"""How much compute a training run gets: epochs, patience and torch threads, decided up front.

* **Epochs.** ``TrainConfig.epochs`` given = exactly that many epochs at most (early stopping may end
  sooner); nothing multiplies it. Not given = derived from the data size: 10 epochs, or enough epochs
  for about ``min_steps`` optimiser steps when 10 passes over a small set would be fewer steps
  (a 459-row set gets 200 epochs of 2 steps; NSL-KDD's 12,000 training normals get 10 of 43).
* **Patience.** Given = as given; not given = 30% of the epoch budget (3 of 10), so that a derived
  budget keeps the same share of patience as the default one.
* **Threads.** Given = as given. Not given = one thread unless a training step is large enough
  for more to pay off. Measured on the 2-core development machine with another process busy
  (``docs/quality.md``): the default encoder (256, 128) takes 3.3 ms per step of 256 rows on one
  thread and 10.9 ms on two; even a (1024, 1024) encoder on batches of 1,024 took 161 ms on one
  and 526 ms on two. Torch's intra-op threads only help when each matrix product is large and the
  cores are idle, so above :data:`PARALLEL_WORK` multiply-adds per step the trainer takes the cores
  that are idle now (CPU count minus the 1-minute load average), at most :data:`MAX_THREADS`.
  The same count limits numpy's BLAS threads during the fit (k-means, distances), which on the
  contended machine halved the NSL-KDD fit (39.9 s -> 21.4 s in one pair of runs).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from training.config import TrainConfig

#: Epochs of the default budget before the small-data rule (``min_steps``) raises it.
DEFAULT_EPOCHS = 10
#: Share of the epoch budget waited for a held-out improvement when patience is not given.
PATIENCE_SHARE = 0.3
#: Multiply-adds per training step (batch rows x encoder weights) above which threads may pay off.
PARALLEL_WORK = 2_000_000_000
#: Most threads the automatic choice takes (the small MLP gains little beyond).
MAX_THREADS = 4


@dataclass(frozen=True)
class Budget:
    """The resolved budget of one training run (reported in the fit summary)."""

    epochs: int
    patience: int
    steps_per_epoch: int
    threads: int
    epochs_rule: str
    threads_rule: str

    def summary(self) -> dict[str, object]:
        return {
            "epoch_budget": self.epochs,
            "epoch_budget_rule": self.epochs_rule,
            "patience": self.patience,
            "steps_per_epoch": self.steps_per_epoch,
            "threads": self.threads,
            "threads_rule": self.threads_rule,
        }


def epoch_budget(n_fit: int, config: TrainConfig) -> tuple[int, int, str]:
    """``(epochs, steps_per_epoch, rule)`` for ``n_fit`` training rows (see the module docstring)."""
    steps_per_epoch = max(1, math.ceil(n_fit / config.batch_size))
    if config.epochs is not None:
        return config.epochs, steps_per_epoch, "given"
    scale = max(1, math.ceil(config.min_steps / (DEFAULT_EPOCHS * steps_per_epoch)))
    rule = f"{DEFAULT_EPOCHS} epochs" if scale == 1 else f"about {config.min_steps} steps (min_steps)"
    return DEFAULT_EPOCHS * scale, steps_per_epoch, rule


def patience_for(epochs: int, config: TrainConfig) -> int:
    """Held-out epochs without improvement before stopping."""
    if config.patience is not None:
        return config.patience
    return max(1, math.ceil(PATIENCE_SHARE * epochs - 1e-9))


def idle_cpus() -> int:
    """CPUs this process may use minus the 1-minute load average (at least 1)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform: assume busy
        load = float(available)
    return max(1, min(available, int(available - load)))


def choose_threads(step_work: int, config: TrainConfig, idle: int | None = None) -> tuple[int, str]:
    """Torch threads for a run whose steps cost ``step_work`` multiply-adds each, and the rule used."""
    if config.threads is not None:
        return config.threads, "given"
    if step_work < PARALLEL_WORK:
        return 1, f"1: a step ({step_work:.1e} multiply-adds) is below {PARALLEL_WORK:.0e}"
    idle = idle_cpus() if idle is None else idle
    threads = max(1, min(MAX_THREADS, idle))
    return threads, f"{threads}: large steps, {idle} idle CPUs"


def step_work(n_fit: int, n_features: int, config: TrainConfig) -> int:
    """Multiply-adds of one forward pass of a batch: batch rows x the encoder's weights."""
    widths = [n_features, *config.hidden, config.embedding_dim]
    weights = sum(a * b for a, b in itertools.pairwise(widths))
    return min(n_fit, config.batch_size) * weights


def resolve_budget(n_fit: int, n_features: int, config: TrainConfig, n_rows: int | None = None) -> Budget:
    """Epochs, patience and threads for ``n_fit`` training rows of ``n_features`` featurized columns;
    the threads from ``n_rows`` rows when given (all the rows, before the early-stopping holdout:
    the count :func:`training.trained_model.train_model` gives numpy's BLAS before the split)."""
    epochs, steps, epochs_rule = epoch_budget(n_fit, config)
    threads, threads_rule = choose_threads(step_work(n_fit if n_rows is None else n_rows, n_features, config), config)
    return Budget(epochs, patience_for(epochs, config), steps, threads, epochs_rule, threads_rule)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, and given back after: the
    trainer picks its own count without changing its caller's (a library, a notebook, the tests)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
