"""The model the loop serves, and the hand-over of a new one between two batches.

A new model arrives from the reload thread (:meth:`ModelSlot.offer`, thread-safe) or from a hook
polled between batches; :meth:`ModelSlot.apply_update` swaps it in only there, so a batch is
scored by one model from its first record to its last.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from worker.metrics import WorkerMetrics
from worker.model_loading import LoadedModel

#: The loop's logger, as before this module was split from it (operators filter on it; as
#: :mod:`worker.rebalance` does).
logger = logging.getLogger("worker.loop")

#: Hook polled between batches; returns a newly loaded model to serve, or ``None``.
ModelUpdates = Callable[[], LoadedModel | None]


class ModelSlot:
    """Holds the live model; describes it in the metrics; swaps in a new version between batches."""

    def __init__(self, model: LoadedModel, metrics: WorkerMetrics, updates: ModelUpdates | None = None) -> None:
        self._model = model
        self._metrics = metrics
        self._updates = updates
        self._pending: LoadedModel | None = None
        self._lock = threading.Lock()
        self._describe(model)

    @property
    def current(self) -> LoadedModel:
        return self._model

    def offer(self, model: LoadedModel) -> None:
        """Serve ``model`` from the next :meth:`apply_update` on (thread-safe)."""
        with self._lock:
            self._pending = model

    def apply_update(self) -> None:
        """Swap in the model offered, else the one the hook returns, if its version is new."""
        with self._lock:
            new, self._pending = self._pending, None
        if new is None and self._updates is not None:
            new = self._updates()
        if new is not None and new.detector.version != self._model.detector.version:
            old, old_spec = self._model.detector.version, self._model.detector.spec
            self._model = new
            self._describe(new)
            self._metrics.model_reloads.inc()
            logger.info("model_swapped", extra={"old_version": old, "new_version": new.detector.version})
            if changes := new.detector.spec.changes_from(old_spec):
                logger.warning(
                    "model_swapped_spec_changed",
                    extra={"old_version": old, "new_version": new.detector.version, "changes": changes},
                )

    def _describe(self, model: LoadedModel) -> None:
        det = model.detector
        self._metrics.set_model(
            det.version,
            model.load_seconds,
            model.created_unix_s,
            det.threshold,
            model.target_fpr,
            det.scorer.calibration_scores,
        )
