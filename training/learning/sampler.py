"""Class-balanced batch sampling for metric learning: every batch holds positives and negatives."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray


class _Cycle:
    """Endless draws from ``items``: shuffled rounds, each item once per round.

    ``take(k)`` returns ``k`` distinct items whenever ``k <= len(items)``, even across the end
    of a round (an item already taken is deferred to the next draw instead of repeated).
    """

    def __init__(self, items: NDArray[np.int64], rng: np.random.Generator) -> None:
        self._items = items
        self._rng = rng
        self._queue: deque[int] = deque()

    def take(self, k: int) -> list[int]:
        chosen: list[int] = []
        taken: set[int] = set()
        deferred: list[int] = []
        while len(chosen) < k:
            if not self._queue:
                self._queue.extend(int(i) for i in self._rng.permutation(self._items))
            item = self._queue.popleft()
            if item in taken:
                deferred.append(item)
            else:
                chosen.append(item)
                taken.add(item)
        self._queue.extendleft(reversed(deferred))
        return chosen


class ClassBalancedBatchSampler:
    """Yields batches of ``min(classes_per_batch, n_classes) * samples_per_class`` indices (or ``batch_size``).

    Each batch takes distinct classes and ``samples_per_class`` indices from each, so it always
    holds positive pairs and, with two or more classes, negative pairs. Classes are visited in
    shuffled rounds (every class equally often, +-1), and each class's indices in shuffled
    rounds, so balanced data is covered exactly once per epoch when the sizes divide evenly. A
    class smaller than ``samples_per_class`` gives all its indices plus random repeats.

    Each ``iter()`` starts a new epoch (epoch ``e`` draws from a generator seeded with
    ``(seed, e)``), so runs are reproducible and one epoch never depends on how much of the
    previous one was consumed. Indices of a batch come grouped by class.

    Args:
        labels: one class label per training row.
        classes_per_batch: distinct classes per batch (capped at the number of classes).
        samples_per_class: indices per class per batch.
        seed: seed of the whole sequence of epochs.
        batches_per_epoch: batches per epoch; default ``ceil(n / batch_size)`` (with the
            capped ``classes_per_batch``), enough slots to visit every row once.
        batch_size: indices per batch when more than ``classes_per_batch * samples_per_class``
            (capped): the first classes drawn for a batch give one index more each (a batch of
            exactly the size asked for: 13 classes of 19 make 247 rows, 9 of them give 20 for 256).

    Raises:
        ValueError: empty or non-1-D labels, or a non-positive size.
    """

    def __init__(
        self,
        labels: Sequence[int] | Sequence[str] | NDArray[np.generic],
        classes_per_batch: int,
        samples_per_class: int,
        seed: int,
        batches_per_epoch: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        label_array = np.asarray(labels)
        if label_array.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {label_array.shape}")
        if label_array.size == 0:
            raise ValueError("labels is empty: cannot sample batches from zero rows")
        _check_positive("classes_per_batch", classes_per_batch)
        _check_positive("samples_per_class", samples_per_class)
        if batches_per_epoch is not None:
            _check_positive("batches_per_epoch", batches_per_epoch)
        classes, inverse = np.unique(label_array, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.cumsum(np.bincount(inverse, minlength=len(classes)))[:-1]
        self._members: list[NDArray[np.int64]] = [m.astype(np.int64) for m in np.split(order, bounds)]
        self.n_classes = len(classes)
        self.classes_per_batch = min(classes_per_batch, self.n_classes)
        self.samples_per_class = samples_per_class
        self.batch_size = max(self.classes_per_batch * samples_per_class, batch_size or 0)
        #: Per position of a class in a batch, the indices it gives (the remainder spread one by one).
        extra, self._counts = self.batch_size - self.classes_per_batch * samples_per_class, []
        for position in range(self.classes_per_batch):
            share = extra // self.classes_per_batch + (position < extra % self.classes_per_batch)
            self._counts.append(samples_per_class + share)
        self.seed = seed
        self.epoch = 0
        default = math.ceil(label_array.size / self.batch_size)
        self.batches_per_epoch = batches_per_epoch if batches_per_epoch is not None else default

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[NDArray[np.int64]]:
        """Start the next epoch: an iterator over ``len(self)`` index arrays of ``batch_size``."""
        epoch = self.epoch
        self.epoch += 1
        return self._epoch(epoch)

    def _epoch(self, epoch: int) -> Iterator[NDArray[np.int64]]:
        rng = np.random.default_rng([self.seed, epoch])
        classes = _Cycle(np.arange(self.n_classes, dtype=np.int64), rng)
        members = [_Cycle(m, rng) for m in self._members]
        for _ in range(self.batches_per_epoch):
            drawn = classes.take(self.classes_per_batch)
            picked = [
                self._draw(members[c], len(self._members[c]), count, rng)
                for c, count in zip(drawn, self._counts, strict=True)
            ]
            yield np.concatenate(picked)

    def _draw(self, cycle: _Cycle, size: int, count: int, rng: np.random.Generator) -> NDArray[np.int64]:
        if size >= count:
            return np.asarray(cycle.take(count), dtype=np.int64)
        # Too small to fill its share without repeats: every index once, then random repeats.
        once = np.asarray(cycle.take(size), dtype=np.int64)
        return np.concatenate([once, rng.choice(once, count - size, replace=True)])


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
