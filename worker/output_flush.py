"""A scored batch waiting for its outputs' acknowledgements (:class:`InFlight`), and the wait
itself through outages (:class:`OutputFlusher`): flushes retried with backoff, a broken producer
rebuilt, outputs given up counted, logged and judged by the operator's ``undeliverable`` policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.broker_health import Backoff, BrokerStatus, ClientHealth
from worker.errors import PublishError
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.outcomes import BatchResult, RawRecord
from worker.outputs import Sink, Undeliverable
from worker.source import Source
from worker.stop_signal import StopSignal

logger = logging.getLogger("worker.loop")  # the loop's events, as before this module was split off


@dataclass(frozen=True)
class InFlight:
    """A batch scored and sent, its outputs not yet all acknowledged: ``mark`` numbers its last."""

    source: Source
    records: list[RawRecord]
    result: BatchResult
    mark: int
    threshold: float
    read_at: float
    started: float


class OutputFlusher:
    """Flushes the sink until a batch's outputs are settled, for as long as the worker runs.

    Args:
        between_tries: called after each failed flush (the loop refreshes lag and readiness).
        clock: monotonic seconds for the producer's health (injected for tests).
    """

    def __init__(
        self,
        sink: Sink,
        config: LoopConfig,
        metrics: WorkerMetrics,
        health: HealthState,
        status: BrokerStatus,
        stop: StopSignal,
        between_tries: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self.config = config
        self.metrics = metrics
        self.health = health
        self._status = status
        self._stop = stop
        self._between_tries = between_tries
        after = (config.rebuild_after_failures, config.rebuild_after_s)
        self._producer_health = ClientHealth("producer", *after, clock=clock)

    def until_acked(self, through: int) -> list[Undeliverable] | None:
        """Flush until every output numbered below ``through`` is acknowledged or given up;
        ``None`` if the stop deadline passed first (the batch must not be committed)."""
        backoff = Backoff(self.config.backoff_initial_s, self.config.backoff_max_s)
        while True:
            self.health.tick()  # retrying through an outage is alive, only not ready
            timeout = self.config.flush_timeout_s
            if self._stop.is_set():  # the drain deadline bounds each attempt, not only the retries
                timeout = max(0.1, min(timeout, self._stop.deadline() - time.monotonic()))
            try:
                given_up = self._sink.flush(timeout, through=through)
            except PublishError as exc:
                self._failed(exc)
            else:
                self._producer_health.succeeded()
                self._status.succeeded()
                return given_up
            self._between_tries()
            if self._stop.is_set() and time.monotonic() > self._stop.deadline():
                logger.error("stop_with_unacknowledged_outputs", extra={"pending": self._sink.pending})
                return None
            delay = backoff.failed()
            if self._stop.is_set():  # the backoff ends at the drain deadline at the latest
                delay = min(delay, max(0.0, self._stop.deadline() - time.monotonic()))
            self._stop.pause(delay)

    def _failed(self, exc: PublishError) -> None:
        self.metrics.publish_failures.inc()
        self._producer_health.failed(exc.fatal)
        self._status.failed("publish_failed", exc)
        if self._producer_health.needs_rebuild():
            self._sink.reset()
            self._producer_health.rebuilt()
            self.metrics.client_rebuilds.labels("producer").inc()

    def refuse(self, given_up: list[Undeliverable]) -> bool:
        """Count and log outputs given up; return whether the policy says to stop (and ask for it)."""
        for item in given_up:
            record = item.record
            m = self.metrics
            (m.dead_letters_undeliverable if record.kind == "dead_letter" else m.anomalies_undeliverable).inc()
            logger.error(
                "output_undeliverable",
                extra={"kind": record.kind, "output_topic": record.topic, "size": record.size,
                       "error": item.error, "policy": self.config.undeliverable, **record.where()},
            )  # fmt: skip
        if given_up and self.config.undeliverable == "stop":
            self._stop.request("undeliverable_output")
            return True
        return False
