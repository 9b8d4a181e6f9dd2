"""The I/O shell: poll a batch -> pipeline -> publish -> dead-letter -> acknowledged -> THEN commit.

At-least-once: offsets are committed only after the broker acknowledged (or, by the operator's
``undeliverable`` policy, gave up) every output of the records before them; a crash repeats at
most the uncommitted batches. With ``overlap_batches`` (the default) one batch may be in flight
while the next is polled and scored: batch N's outputs are sent, batch N+1 is polled, scored and
sent, and only then does the loop wait for N's acknowledgements (usually there by then) and
commit N. Batches finish strictly in order, so a commit never passes an unacknowledged output.
While batches keep coming, commits are sent at most every ``commit_interval_s`` (a commit covers
every batch finished before it); an idle poll, a rebalance and a stop commit at once. Records
collected of a partition that a rebalance takes away are left out of the batch: the revoke commits
what was processed before them, and the partition's next owner reads them (this loop too, its
consumer rewound to them, when the partition comes back), so a rebalance repeats nothing but a
batch whose acknowledgements did not come within ``revoke_flush_timeout_s`` or a revoke whose
commit failed (both logged) when the partition goes to another member.

Broker trouble never stops the loop: the consumer is (re)built with backoff, flushes are retried
with backoff (the batch is not committed until they succeed), failed commits are retried with the
next batch, and a client that stays broken (or reports a fatal error) is closed and rebuilt without
losing the uncommitted batch. A stop request (SIGTERM) finishes the batch, flushes and commits
within ``shutdown_timeout_s``, in every state. A new model is swapped in only between batches
(:meth:`WorkerLoop.swap_model` or ``model_updates``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from worker.batch_accounting import count_batch
from worker.broker_health import Backoff, BrokerStatus, ClientHealth
from worker.errors import BrokerError, CommitError, PublishError, UnreadableBatchError
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.model_loading import LoadedModel
from worker.model_slot import ModelSlot, ModelUpdates
from worker.offsets import OffsetBook
from worker.outcomes import RawRecord
from worker.output_flush import InFlight, OutputFlusher
from worker.outputs import Sink, Undeliverable, send_outputs
from worker.pipeline import score_batch
from worker.rebalance import RebalanceBook
from worker.source import Partition, Source, SourceFactory
from worker.stop_signal import StopSignal

logger = logging.getLogger(__name__)


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.health = health
        self._sink = sink
        self._models = ModelSlot(model, metrics, model_updates)
        self._stop = StopSignal(config.shutdown_timeout_s)
        self._offsets = OffsetBook()
        #: A batch was given up while stopping (its outputs were never acknowledged): nothing
        #: after it may be committed either, or the commit would pass its records.
        self._abandoned = False
        self._in_flight: InFlight | None = None
        self._clock = clock
        self._status = BrokerStatus(metrics.broker_errors, clock)
        self._last_lag = -float("inf")
        self._last_commit_sent = -float("inf")
        self._lag: dict[Partition, int] = {}
        self._source_factory = source_factory
        #: Revoked partitions, records taken out of the batch, rewinds (see worker.rebalance).
        self._rebalance = RebalanceBook()
        self._rebuild_requested = False
        #: The last collect's poll raised (the client may have passed records it did not return).
        self._poll_failed = False
        #: Partitions paused at a record the client cannot read (offset), kept out of liveness.
        self._unreadable: dict[Partition, int] = {}
        self._source: Source | None = None
        #: Bumped for each consumer built or dropped: callbacks of a consumer since closed are ignored.
        self._source_generation = 0
        self._connect_backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, clock)
        #: Between consumers rebuilt because an assignment could not be taken (group offsets unknown,
        #: a rewind refused); reset by an assignment taken whole (group offsets known, every rewind done).
        self._rejoin_backoff = Backoff(config.backoff_initial_s, config.backoff_max_s, clock)
        after = (config.rebuild_after_failures, config.rebuild_after_s)
        self._consumer_health = ClientHealth("consumer", *after, clock=clock)
        #: Commits count apart from polls: a poll that succeeds must not hide commits that keep failing.
        self._commit_health = ClientHealth("consumer", *after, clock=clock)
        self._flusher = OutputFlusher(
            sink, config, metrics, health, self._status, self._stop, self._after_flush_failed, clock
        )

    # ------------------------------------------------------------- control
    @property
    def model(self) -> LoadedModel:
        return self._models.current

    def request_stop(self, reason: str = "signal") -> None:
        """Ask the loop to finish the current batch, flush, commit and return. Thread-safe; not from a
        signal handler (it takes a lock: start a thread there, as ``worker.__main__`` does)."""
        self._stop.request(reason)

    @property
    def stop_reason(self) -> str:
        return self._stop.reason

    def swap_model(self, model: LoadedModel) -> None:
        """Serve ``model`` from the next batch on (thread-safe)."""
        self._models.offer(model)

    @property
    def uncommitted(self) -> dict[Partition, int]:
        """Processed offsets not yet committed."""
        return self._offsets.uncommitted

    # ---------------------------------------------------------------- run
    def run(self) -> bool:
        """Process batches until stopped; return whether everything processed was committed."""
        try:
            self._prepare_sink()
            while not self._stop.is_set():
                self.run_once()
            return self._shutdown()
        except BaseException:
            self._close_quietly()  # leave the group now rather than after the session timeout
            raise
        finally:
            self.health.set_stopped()

    def _prepare_sink(self) -> None:
        """Start the producer while the consumer joins its group, so the first batch does not wait
        for a new producer's handshake (measured: ~0.5-0.9 s on librdkafka at first output)."""
        topics = [self.config.output_topic, self.config.dead_letter_topic]
        try:
            self._sink.prepare(topics, self.config.prepare_timeout_s)
        except PublishError as exc:  # not fatal: the first flush connects and retries
            logger.warning("output_producer_not_ready", extra={"topics": topics, "error": str(exc)})

    def _close_quietly(self) -> None:
        try:
            if self._source is not None:
                self._source.close(1000)
            self._sink.close(1.0)
        except Exception as exc:  # best effort on the way out of a crash
            logger.warning("close_after_crash_failed", extra={"error": str(exc)})

    def run_once(self) -> int:
        """Poll and fully handle one batch (possibly empty); return its number of records."""
        self.health.tick()
        self._models.apply_update()
        self._finish_if_acknowledged(0.0)
        source = self._connected_source()
        records: list[RawRecord] = []
        if source is None:
            self._finish_in_flight()
        else:
            records = self._collect(source)
            if records:
                self._handle(source, records)
            elif self._finish_in_flight() or self._offsets.uncommitted:
                self._try_commit()
            elif self._poll_failed:
                pass  # a client that failed may have passed records it did not return: no position commits
            elif self._commit_past_control_records(source):
                pass
            elif self._clock() - self._status.last_ok > self.config.probe_interval_s:
                self._probe(source)
            broken = (
                self._consumer_health.needs_rebuild() or self._commit_health.needs_rebuild() or self._rebuild_requested
            )
            if broken and not self._stop.is_set():
                self._rebuild_source()
        self._update_lag()
        self._update_ready()
        return len(records)

    # ----------------------------------------------------------- consumer
    def _connected_source(self) -> Source | None:
        """The consumer, built now if needed; ``None`` while the broker cannot be reached."""
        if self._source is not None:
            return self._source
        if not (self._connect_backoff.ready() and self._rejoin_backoff.ready()):
            self._stop.wait(min(max(self._connect_backoff.wait_s(), self._rejoin_backoff.wait_s()), 0.25))
            return None
        self._source_generation += 1
        generation = self._source_generation
        try:
            self._source = self._source_factory(
                lambda partitions, lost=False: self._on_revoked(partitions, generation, lost),
                lambda partitions: self._on_assigned(partitions, generation),
            )
        except BrokerError as exc:
            delay = self._connect_backoff.failed()
            self._broker_failed("broker_unavailable", exc, retry_in_s=delay)
            return None
        self._connect_backoff.succeeded()
        self._rebalance.reset()
        return self._source

    def _rebuild_source(self) -> None:
        """Close the consumer; its successor joins the group afresh (uncommitted work is re-read)."""
        source, self._source = self._source, None
        self._source_generation += 1  # its callbacks (librdkafka: on a closing thread) change nothing now
        self._offsets.forget_all()
        if self._rebuild_requested:
            # The next consumer may meet the same coordinator: its join waits, doubling up to the cap.
            logger.info("consumer_rejoin_backoff", extra={"retry_in_s": self._rejoin_backoff.failed()})
        self._rebuild_requested = False
        self._forget_unreadable(self._unreadable)
        self._consumer_health.rebuilt()
        self._commit_health.succeeded()
        self.metrics.client_rebuilds.labels("consumer").inc()
        if source is not None:
            try:
                source.close(1000)
            except BrokerError as exc:
                logger.warning("consumer_close_failed", extra={"error": str(exc)})

    def _collect(self, source: Source) -> list[RawRecord]:
        cfg = self.config
        # Shared with _on_revoked while the polls run (a rebalance happens inside a poll).
        self._rebalance.collecting = records = []
        self._poll_failed = False
        try:
            records += self._rebalance.kept(source.poll(cfg.batch_size, cfg.idle_poll_ms))
            deadline = time.monotonic() + cfg.batch_wait_ms / 1000.0
            while records and len(records) < cfg.batch_size and not self._stop.is_set():
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    break
                records += self._rebalance.kept(source.poll(cfg.batch_size - len(records), left_ms))
            self._consumer_health.succeeded()
            if (
                not self._status.ok
                and source.coordinator_known()
                and not self._offsets.committed_in(self._owned(source))
            ):
                # Idle with nothing committed, the probe has no offsets to re-commit: a known
                # coordinator is the sign the broker is back (else readiness stays off for good).
                self._status.succeeded()
        except UnreadableBatchError as exc:
            # One partition set aside (paused at the record the client cannot read); records
            # already returned, of it and of the others, are processed as usual.
            if self._unreadable.get(exc.partition) != exc.offset:
                logger.error(
                    "partition_unreadable",
                    extra={"partition": exc.partition, "offset": exc.offset, "error": str(exc)},
                )
            self._unreadable[exc.partition] = exc.offset
            self.metrics.unreadable_partitions.set(len(self._unreadable))
        except BrokerError as exc:
            # Records already returned by an earlier poll are past the consumer's position:
            # they must be processed, or a later commit would skip them.
            self._poll_failed = True
            self._consumer_health.failed(exc.fatal)
            self._broker_failed("poll_failed", exc)
            if not records:
                self._stop.wait(self.config.backoff_initial_s)
        finally:
            self._rebalance.collecting = []  # the batch is handed on: a later revoke leaves it alone
        self._offsets.saw(records)
        return records

    # -------------------------------------------------------------- batch
    def _handle(self, source: Source, records: list[RawRecord]) -> None:
        start, read_at = time.perf_counter(), time.time()
        model = self._models.current
        result = score_batch(
            records,
            model.detector,
            max_value_bytes=self.config.max_value_bytes,
            now_s=read_at,
            decoder=model.decoder,
        )
        self.metrics.scoring_seconds.inc(time.perf_counter() - start)
        cfg = self.config
        send_outputs(result, self._sink, cfg.output_topic, cfg.dead_letter_topic, cfg.max_request_bytes)
        batch = InFlight(source, records, result, self._sink.mark(), model.detector.threshold, read_at, start)
        # The batch before had this one's poll and scoring time to be acknowledged.
        self._finish_in_flight()
        if self._abandoned:
            return  # nothing from here on is committed (see _finish)
        self._in_flight = batch
        if not cfg.overlap_batches:
            self._finish_in_flight()
        else:
            self._finish_if_acknowledged(0.0)  # no outputs, or acknowledged already
        if self._clock() - self._last_commit_sent >= cfg.commit_interval_s:
            self._try_commit()

    def _finish_in_flight(self) -> bool:
        """Wait for the batch in flight (retrying through outages); return whether one finished."""
        batch, self._in_flight = self._in_flight, None
        if batch is None:
            return False
        given_up = self._flusher.until_acked(batch.mark)
        if given_up is None:
            self._abandoned = True  # stopping with outputs unacknowledged: nothing of this batch is committed
            return False
        self._finish(batch, given_up)
        return True

    def _finish_if_acknowledged(self, timeout_s: float) -> None:
        """Finish the batch in flight if its outputs are acknowledged (``0``: without waiting),
        else leave it in flight."""
        batch = self._in_flight
        if batch is None or (timeout_s <= 0 and not self._sink.acknowledged(batch.mark)):
            return
        try:
            given_up = self._sink.flush(timeout_s, through=batch.mark)
        except PublishError:
            return  # still in flight: the next blocking finish retries and counts the failure
        self._in_flight = None
        self._finish(batch, given_up)

    def _finish(self, batch: InFlight, given_up: list[Undeliverable]) -> None:
        """Count a batch whose outputs are all acknowledged or given up and mark it processed."""
        if self._flusher.refuse(given_up) or self._abandoned:
            self._abandoned = True
            return
        acked_at = time.time()
        # A partition revoked while this batch was collected now belongs to another member:
        # its records were processed (at-least-once), but only its new owner commits it. A batch
        # read by a consumer since rebuilt is not committed at all: its successor reads it again.
        if batch.source is self._source:
            self._offsets.processed(batch.records, self._owned(batch.source))
            self._rebalance.batch_finished(batch.records)
        count_batch(self.metrics, batch.result, given_up, batch.threshold, batch.read_at, acked_at)
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)

    def _after_flush_failed(self) -> None:
        self._update_ready()
        self._update_lag()

    def _owned(self, source: Source) -> set[Partition]:
        """Assigned partitions not revoked since (kafka-python keeps revoked ones in its assignment
        until the rebalance completes; committing them could move the new owner's offset back)."""
        return source.assignment() - self._rebalance.excluded

    def _try_commit(self) -> bool:
        if self._source is None:
            return not self._offsets.uncommitted
        owned = self._owned(self._source)
        offsets = {p: o for p, o in self._offsets.uncommitted.items() if p in owned}
        for gone in set(self._offsets.uncommitted) - owned:
            self._offsets.revoke([gone])
        if not offsets:
            return True
        self._last_commit_sent = self._clock()
        try:
            self._source.commit(offsets, self._commit_timeout_ms())
        except CommitError as exc:
            self.metrics.commit_failures.inc()
            self._commit_health.failed(exc.fatal)
            self._broker_failed("commit_failed", exc)
            self._stop.wait(self.config.backoff_initial_s)
            return False
        self._offsets.committed(offsets)
        self._commit_health.succeeded()
        self.health.progressed()
        self._status.succeeded()
        return True

    def _commit_timeout_ms(self) -> int:
        """The commit timeout; while stopping, what is left of the drain time (at least a moment)."""
        if not self._stop.is_set():
            return self.config.commit_timeout_ms
        return min(self.config.commit_timeout_ms, max(500, int((self._stop.deadline() - time.monotonic()) * 1000)))

    def _commit_past_control_records(self, source: Source) -> bool:
        """Idle, nothing in flight or uncommitted, yet a partition lags behind its end: what lies
        between the committed offset and the consumer's position are control records (a
        transactional producer's commit markers take an offset and are never handed out). Commit
        the position, else the lag stays at 1 for good and liveness fails with nothing to do.
        Returns whether it committed."""
        if self._in_flight is not None or self._sink.pending or self._abandoned or self._stop.is_set():
            return False  # a batch given up under WORKER_UNDELIVERABLE_POLICY=stop is never committed past
        committed = self._offsets.committed_in(self._owned(source))
        ahead = {}
        for partition, lag in self._lag.items():
            if lag > 0 and partition in committed and partition not in self._unreadable:  # paused: no position news
                position = source.position(partition)
                if position is not None and position > committed[partition]:
                    ahead[partition] = position
        if not ahead:
            return False
        self._offsets.advanced(ahead)
        return self._try_commit()

    def _probe(self, source: Source) -> None:
        """Re-commit known offsets to learn whether the broker answers while idle."""
        offsets = self._offsets.committed_in(source.assignment())
        self._status.last_ok = self._clock()  # one probe per interval, whatever the outcome
        if not offsets:
            return
        try:
            source.commit(offsets, self._commit_timeout_ms())
            self._status.succeeded()
        except CommitError as exc:
            self._broker_failed("broker_probe_failed", exc)

    def _shutdown(self) -> bool:
        deadline = self._stop.deadline()
        if self._abandoned:
            self._in_flight = None
        elif self._finish_in_flight():
            self._try_commit()
        while self._offsets.uncommitted and time.monotonic() < deadline and not self._try_commit():
            time.sleep(self.config.backoff_initial_s)
        clean = not self._offsets.uncommitted and not self._abandoned
        # Closing gets what is left of the drain time, at least a moment to leave the group.
        if self._source is not None:
            self._source.close(int(max(0.5, deadline - time.monotonic()) * 1000))
        self._sink.close(max(0.5, deadline - time.monotonic()))
        logger.info("worker_drained", extra={"clean": clean, "reason": self.stop_reason})
        return clean

    # ------------------------------------------------------------ rebalance
    def _on_revoked(self, partitions: list[Partition], generation: int, lost: bool = False) -> None:
        """Take the revoked partitions' records out of the batch being collected, commit what was
        processed of them, then forget them. ``lost`` (the session expired): the group already gave
        them to others, so nothing is committed (the source drops the commit) and nothing rewound."""
        if generation != self._source_generation:
            logger.info("partitions_revoked_from_closed_consumer", extra={"partitions": sorted(partitions)})
            return
        stopping = self._stop.is_set()
        if not stopping and not self._abandoned and not lost:
            # The batch in flight may hold records of these partitions: a short wait lets it
            # finish (else their next owner reads them again: at-least-once, not lost).
            self._finish_if_acknowledged(self.config.revoke_flush_timeout_s)
        gone = set(partitions)
        batch = self._in_flight
        in_flight = batch.records if batch is not None and batch.source is self._source else None
        if lost and batch is not None and any((r.topic, r.partition) in gone for r in batch.records):
            # Never marked processed: given back, the partition starts at the group's offset,
            # which the member that had it may have moved past this batch.
            self._in_flight = replace(batch, records=[r for r in batch.records if (r.topic, r.partition) not in gone])
        self._rebalance.revoked_now(gone, lost, in_flight)
        offsets = self._offsets.revoke(partitions)
        if not lost:
            # Given back, a partition commits these again if the group's offset is below them:
            # this commit may fail (on kafka-python after this callback, where the loop cannot see it).
            self._rebalance.note_processed(offsets)
        if offsets and self._source is not None:
            try:
                self._source.commit(offsets, self._commit_timeout_ms())
            except CommitError as exc:
                self.metrics.commit_failures.inc()
                logger.warning("revoke_commit_failed", extra={"error": str(exc)})
        logger.info("partitions_revoked", extra={"partitions": sorted(partitions), "lost": lost})

    def _on_assigned(self, partitions: list[Partition], generation: int) -> None:
        if generation != self._source_generation:
            return
        # The new assignment is the whole of it: partitions not in it cannot be handed out any more
        # (kafka-python listed them until now). Kept empty, the per-poll filter costs nothing.
        rewind, done = self._rebalance.assigned()
        group = self._source.group_offsets() if self._source is not None and partitions else {}
        if group is None:
            # Unknown (the coordinator did not answer): where another member may have committed
            # meanwhile cannot be told, so neither a rewind nor a client's kept position is safe.
            # As for a refused rewind: the partitions stay out, nothing of them is committed, and a
            # rebuilt consumer reads them from the group's committed offsets.
            self._rebalance.unrewound.update(partitions)
            self._rebuild_requested = True
            logger.warning("assignment_without_group_offsets", extra={"partitions": sorted(partitions)})
            return
        self._offsets.floor(group)  # nothing at or below them is committed (see OffsetBook)
        # Partitions not given back: their new owner reads them, from the committed offset (and a
        # paused, unreadable one is read afresh); those given back keep their client state.
        self._forget_unreadable(set(self._unreadable) - set(partitions))
        for partition in partitions:
            if partition in done and partition not in rewind and done[partition] > group.get(partition, -1):
                # Processed before the revoke (its commit may have failed): start past it
                # (librdkafka would re-read it from the committed offset) and commit it, unless
                # the group has it already (the floor).
                rewind[partition] = done[partition]
            if partition in rewind and self._source is not None:
                try:
                    self._source.rewind(partition, rewind[partition])
                except BrokerError as exc:
                    # Not expected (the client refused its own assignment). Its position lies past
                    # records left out: they stay out, uncommitted, until the consumer is rebuilt
                    # and reads them again from the committed offset.
                    self._rebalance.unrewound.add(partition)
                    self._rebuild_requested = True
                    logger.error("rewind_failed", extra={"partition": partition, "offset": rewind[partition],
                                                         "error": str(exc)})  # fmt: skip
                else:
                    if partition in done and done[partition] <= rewind[partition]:
                        self._offsets.advanced({partition: done[partition]})
        if partitions and not self._rebuild_requested:
            self._rejoin_backoff.succeeded()  # taken whole: a later rebuild waits the first delay again
        logger.info("partitions_assigned", extra={"partitions": sorted(partitions)})

    # --------------------------------------------------------------- state
    def _broker_failed(self, event: str, exc: Exception, **fields: object) -> None:
        self._status.failed(event, exc, **fields)
        self._update_ready()

    def _update_ready(self) -> None:
        source = self._source
        ready = self._status.ok and source is not None and bool(source.assignment()) and source.coordinator_known()
        self.health.set_ready(ready)
        self.metrics.ready.set(1 if ready else 0)

    def _update_lag(self) -> None:
        """Lag per assigned partition, and liveness progress when no work is pending."""
        now = self._clock()
        if now - self._last_lag >= self.config.lag_interval_s:
            self._last_lag = now
            source = self._source
            lag = {} if source is None else self._offsets.lag(source.assignment(), source.highwater)
            self.metrics.set_lag(lag, set(self._lag) - set(lag))
            self._lag = lag
        # A partition set aside at a record the client cannot read shows its lag, but is not work a
        # restart could do: it would read the same record (liveness holds; alert on the lag).
        lag = {p: v for p, v in self._lag.items() if p not in self._unreadable} if self._unreadable else self._lag
        if not self._offsets.work_pending(lag) and not self._sink.pending and self._in_flight is None:
            self.health.progressed()

    def _forget_unreadable(self, partitions: Iterable[Partition]) -> None:
        """A new consumer (or owner) of these partitions reads them afresh."""
        for partition in list(partitions):
            self._unreadable.pop(partition, None)
        self.metrics.unreadable_partitions.set(len(self._unreadable))
