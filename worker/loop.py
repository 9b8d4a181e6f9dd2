"""The I/O shell: poll a batch -> pipeline -> publish -> dead-letter -> flush -> THEN commit.

At-least-once: offsets are committed only after the broker acknowledged every output of the
records before them; a crash repeats at most the uncommitted batch. Broker trouble never stops
the loop: flushes are retried with backoff (the batch is not committed until they succeed),
failed commits are retried with the next batch, readiness is false meanwhile. A stop request
(SIGTERM) finishes the batch, flushes and commits within ``shutdown_timeout_s``. A new model is
swapped in only between batches (:meth:`WorkerLoop.swap_model` or the ``model_updates`` hook).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from worker.errors import BrokerError, CommitError, PublishError
from worker.metrics import HealthState, WorkerMetrics
from worker.model_loading import LoadedModel
from worker.outcomes import BatchResult, RawRecord
from worker.outputs import Sink, send_outputs
from worker.pipeline import score_batch

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
PartitionsCallback = Callable[[list[Partition]], None]
#: Hook polled between batches; returns a newly loaded model to serve, or ``None``.
ModelUpdates = Callable[[], LoadedModel | None]


class Source(Protocol):
    """Where records come from (a Kafka group consumer in production)."""

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]: ...
    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int) -> None: ...
    def assignment(self) -> set[Partition]: ...
    def highwater(self, partition: Partition) -> int | None: ...
    def coordinator_known(self) -> bool: ...
    def close(self, timeout_ms: int) -> None: ...


#: Builds the source given the loop's (on_revoked, on_assigned) rebalance callbacks.
SourceFactory = Callable[[PartitionsCallback, PartitionsCallback], Source]


@dataclass(frozen=True)
class LoopConfig:
    """Topics, batching and retry timing of the loop (times in seconds unless named ``_ms``)."""

    output_topic: str
    dead_letter_topic: str
    batch_size: int = 500
    batch_wait_ms: int = 20
    max_value_bytes: int = 65536
    idle_poll_ms: int = 100
    flush_timeout_s: float = 5.0
    commit_timeout_ms: int = 5000
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    probe_interval_s: float = 2.0
    lag_interval_s: float = 1.0
    shutdown_timeout_s: float = 20.0


class WorkerLoop:
    """Runs batches until :meth:`request_stop`; see the module docstring for the guarantees."""

    def __init__(
        self,
        source_factory: SourceFactory,
        sink: Sink,
        model: LoadedModel,
        metrics: WorkerMetrics,
        health: HealthState,
        config: LoopConfig,
        model_updates: ModelUpdates | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.health = health
        self._sink = sink
        self._model = model
        self._model_updates = model_updates
        self._pending_model: LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._committed: dict[Partition, int] = {}
        self._processed: dict[Partition, int] = {}
        #: A batch was given up while stopping (its outputs were never acknowledged).
        self._abandoned = False
        self._drain_deadline: float | None = None
        self._broker_ok = True
        self._last_broker_ok = time.monotonic()
        self._last_lag = 0.0
        self._lag_partitions: set[Partition] = set()
        self._source = source_factory(self._on_revoked, self._on_assigned)
        self._describe_model(model)

    # ------------------------------------------------------------- control
    @property
    def model(self) -> LoadedModel:
        return self._model

    def request_stop(self) -> None:
        """Ask the loop to finish the current batch, flush, commit and return (signal-safe)."""
        self._stop_deadline()
        self._stop.set()

    def _stop_deadline(self) -> float:
        """One drain deadline for the whole stop: ``shutdown_timeout_s`` after it was first seen."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.config.shutdown_timeout_s
        return self._drain_deadline

    def swap_model(self, model: LoadedModel) -> None:
        """Serve ``model`` from the next batch on (thread-safe)."""
        with self._lock:
            self._pending_model = model

    @property
    def uncommitted(self) -> dict[Partition, int]:
        """Processed offsets not yet committed."""
        return dict(self._processed)

    # ---------------------------------------------------------------- run
    def run(self) -> bool:
        """Process batches until stopped; return whether everything processed was committed."""
        try:
            while not self._stop.is_set():
                self.run_once()
            return self._shutdown()
        except BaseException:
            self._close_quietly()  # leave the group now rather than after the session timeout
            raise
        finally:
            self.health.set_stopped()

    def _close_quietly(self) -> None:
        try:
            self._source.close(1000)
            self._sink.close(1.0)
        except Exception as exc:  # best effort on the way out of a crash
            logger.warning("close_after_crash_failed", extra={"error": str(exc)})

    def run_once(self) -> int:
        """Poll and fully handle one batch (possibly empty); return its number of records."""
        self.health.tick()
        self._apply_model_update()
        records = self._collect()
        if records:
            self._handle(records)
        elif self._processed:
            self._try_commit()
        elif time.monotonic() - self._last_broker_ok > self.config.probe_interval_s:
            self._probe()
        self._update_lag()
        self._update_ready()
        return len(records)

    def _collect(self) -> list[RawRecord]:
        cfg = self.config
        records: list[RawRecord] = []
        try:
            records = self._source.poll(cfg.batch_size, cfg.idle_poll_ms)
            deadline = time.monotonic() + cfg.batch_wait_ms / 1000.0
            while records and len(records) < cfg.batch_size and not self._stop.is_set():
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                records += self._source.poll(cfg.batch_size - len(records), left_ms)
        except BrokerError as exc:
            # Records already returned by an earlier poll are past the consumer's position:
            # they must be processed, or a later commit would skip them.
            self._broker_failed("poll_failed", exc)
        return records

    def _handle(self, records: list[RawRecord]) -> None:
        start = time.perf_counter()
        model = self._model
        result = score_batch(
            records,
            model.detector,
            max_value_bytes=self.config.max_value_bytes,
            now_s=time.time(),
            decoder=model.decoder,
        )
        _, dead_letters = send_outputs(result, self._sink, self.config.output_topic, self.config.dead_letter_topic)
        if not self._flush_until_acked():
            self._abandoned = True  # stopping with outputs unacknowledged: nothing of this batch is committed
            return
        acked_at = time.time()
        # A partition revoked while this batch was collected now belongs to another member:
        # its records were processed (at-least-once), but only its new owner commits it.
        assigned = self._source.assignment()
        for record in records:
            key = (record.topic, record.partition)
            if key in assigned:
                self._processed[key] = max(self._processed.get(key, 0), record.offset + 1)
        self._count(result, dead_letters, acked_at)
        self._try_commit()
        self.metrics.batch_seconds.observe(time.perf_counter() - start)

    def _flush_until_acked(self) -> bool:
        backoff = self.config.backoff_initial_s
        while True:
            self.health.tick()  # retrying through an outage is alive, only not ready
            try:
                self._sink.flush(self.config.flush_timeout_s)
                self._broker_succeeded()
                return True
            except PublishError as exc:
                self.metrics.publish_failures.inc()
                self._broker_failed("publish_failed", exc)
            if self._stop.is_set() and time.monotonic() > self._stop_deadline():
                logger.error("stop_with_unacknowledged_outputs")
                return False
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.config.backoff_max_s)

    def _try_commit(self) -> bool:
        offsets = dict(self._processed)
        if not offsets:
            return True
        try:
            self._source.commit(offsets, self.config.commit_timeout_ms)
        except CommitError as exc:
            self.metrics.commit_failures.inc()
            self._broker_failed("commit_failed", exc)
            self._stop.wait(self.config.backoff_initial_s)
            return False
        self._committed.update(offsets)
        for key, offset in offsets.items():
            if self._processed.get(key) == offset:
                del self._processed[key]
        self._broker_succeeded()
        return True

    def _probe(self) -> None:
        """Re-commit known offsets to learn whether the broker answers while idle."""
        assigned = self._source.assignment()
        offsets = {p: o for p, o in self._committed.items() if p in assigned}
        self._last_broker_ok = time.monotonic()  # one probe per interval, whatever the outcome
        if not offsets:
            return
        try:
            self._source.commit(offsets, self.config.commit_timeout_ms)
            self._broker_succeeded()
        except CommitError as exc:
            self._broker_failed("broker_probe_failed", exc)

    def _shutdown(self) -> bool:
        deadline = self._stop_deadline()
        while self._processed and time.monotonic() < deadline and not self._try_commit():
            time.sleep(self.config.backoff_initial_s)
        clean = not self._processed and not self._abandoned
        # Closing gets what is left of the drain time, at least a moment to leave the group.
        self._source.close(int(max(0.5, deadline - time.monotonic()) * 1000))
        self._sink.close(max(0.5, deadline - time.monotonic()))
        logger.info("worker_stopped", extra={"clean": clean})
        return clean

    # ------------------------------------------------------------ rebalance
    def _on_revoked(self, partitions: list[Partition]) -> None:
        """Commit what was processed for the revoked partitions, then forget them."""
        revoked = set(partitions)
        offsets = {p: o for p, o in self._processed.items() if p in revoked}
        if offsets:
            try:
                self._source.commit(offsets, self.config.commit_timeout_ms)
            except CommitError as exc:
                self.metrics.commit_failures.inc()
                logger.warning("revoke_commit_failed", extra={"error": str(exc)})
        for p in revoked:
            self._processed.pop(p, None)
            self._committed.pop(p, None)
        logger.info("partitions_revoked", extra={"partitions": sorted(revoked)})

    def _on_assigned(self, partitions: list[Partition]) -> None:
        logger.info("partitions_assigned", extra={"partitions": sorted(partitions)})

    # --------------------------------------------------------------- state
    def _broker_failed(self, event: str, exc: Exception) -> None:
        self.metrics.broker_errors.inc()
        if self._broker_ok:
            logger.warning(event, extra={"error": str(exc)})
        self._broker_ok = False
        self._update_ready()

    def _broker_succeeded(self) -> None:
        if not self._broker_ok:
            logger.info("broker_recovered")
        self._broker_ok = True
        self._last_broker_ok = time.monotonic()

    def _update_ready(self) -> None:
        ready = self._broker_ok and bool(self._source.assignment()) and self._source.coordinator_known()
        self.health.set_ready(ready)
        self.metrics.ready.set(1 if ready else 0)

    def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag < self.config.lag_interval_s:
            return
        self._last_lag = now
        lag: dict[Partition, int] = {}
        for p in self._source.assignment():
            high, done = self._source.highwater(p), self._committed.get(p)
            if high is not None and done is not None:
                lag[p] = max(0, high - done)
        self.metrics.set_lag(lag, self._lag_partitions - set(lag))
        self._lag_partitions = set(lag)

    def _count(self, result: BatchResult, dead_letters: int, acked_at: float) -> None:
        m = self.metrics
        for flagged in result.flagged:
            m.anomalies.labels(flagged.nearest_class).inc()
        for rejected in result.rejected:
            m.rejected.labels(rejected.reason).inc()
        m.events.labels("normal").inc(result.n_normal)
        m.events.labels("anomaly").inc(len(result.flagged))
        m.events.labels("rejected").inc(len(result.rejected))
        m.dead_letters.inc(dead_letters)
        m.batch_size.observe(len(result.records))
        m.observe_scores(result.scores, self._model.detector.threshold)
        m.observe_latencies(np.maximum(acked_at - result.event_times_s, 0.0).tolist())

    def _apply_model_update(self) -> None:
        with self._lock:
            new, self._pending_model = self._pending_model, None
        if new is None and self._model_updates is not None:
            new = self._model_updates()
        if new is not None and new.detector.version != self._model.detector.version:
            old = self._model.detector.version
            self._model = new
            self._describe_model(new)
            self.metrics.model_reloads.inc()
            logger.info("model_swapped", extra={"old_version": old, "new_version": new.detector.version})

    def _describe_model(self, model: LoadedModel) -> None:
        det = model.detector
        self.metrics.set_model(
            det.version,
            model.load_seconds,
            model.created_unix_s,
            det.threshold,
            model.target_fpr,
            det.scorer.calibration_scores,
        )
