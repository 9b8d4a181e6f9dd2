"""The only module that imports ``prometheus_client``: worker metrics, health state, exposition.

Every metric lives on the :class:`CollectorRegistry` passed in (tests pass a fresh one).
:class:`MetricsServer` serves ``/metrics``, ``/healthz`` (the loop is alive) and ``/readyz``
(partitions assigned, model loaded, broker reachable); the serving itself, with its limits on
threads, connections and time, is :class:`worker.http_endpoint.HttpEndpoint`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from worker.batch_histogram import BatchHistogram
from worker.http_endpoint import EndpointLimits, HttpEndpoint

QUANTILES = (0.5, 0.9, 0.99)
ROLLING_WINDOW = 10_000
#: The rolling score quantiles are recomputed at most this often (a quantile of the 10,000-score
#: window per batch was 2.3% of the loop at ~70k events/s; a scrape every 15 s sees no difference).
QUANTILE_REFRESH_S = 0.5
#: A typical normal scores about 2 (two terms of about 1 each, detector/scorer.py); tails are long:
#: NSL-KDD's 1% threshold is about 20 (90th percentile of normals 7.4). Models trained before the
#: input-space term score about half that.
SCORE_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, float("inf"))
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, float("inf"))
EVENT_LAG_BUCKETS = (
    0.1,
    0.5,
    1.0,
    5.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    6 * 3600.0,
    86400.0,
    7 * 86400.0,
    float("inf"),
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))


class WorkerMetrics:
    """All ``kestrel_*`` metrics of one worker (names and labels fixed by the shared contracts)."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        """Register every metric on ``registry`` (a new, private one when ``None``); ``clock``
        paces the rolling score quantiles."""
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter("kestrel_events", "Events by outcome.", ["outcome"], registry=r)
        self.rejected = Counter("kestrel_rejected", "Rejected events by reason.", ["reason"], registry=r)
        self.dead_letters = Counter("kestrel_dead_letter", "Dead-letter publishes acknowledged.", registry=r)
        self.anomalies = Counter("kestrel_anomalies", "Anomalies by nearest class.", ["nearest_class"], registry=r)
        self.score = BatchHistogram(
            "kestrel_anomaly_score", "Score of every scored event.", buckets=SCORE_BUCKETS, registry=r
        )
        self.batch_size = Histogram("kestrel_batch_size", "Records per batch.", buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "kestrel_batch_processing_seconds", "Pipeline + publish + commit time per batch.", registry=r
        )
        self.scoring_seconds = Counter(
            "kestrel_scoring_seconds",
            "Wall-clock seconds the loop spent decoding, validating and scoring batches (score_batch).",
            registry=r,
        )
        self.latency = BatchHistogram(
            "kestrel_processing_latency_seconds",
            "Broker (LogAppendTime) record timestamp, else the moment the worker read it, to outputs acknowledged.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.implausible_timestamps = Counter(
            "kestrel_record_timestamp_implausible",
            "Records whose broker timestamp was over a day old or in the future (latency counted from read time).",
            registry=r,
        )
        self.event_time_lag = BatchHistogram(
            "kestrel_event_time_lag_seconds",
            "Outputs acknowledged minus the event's own timestamp, clamped to [0, 7 days] (freshness, not alerts).",
            buckets=EVENT_LAG_BUCKETS,
            registry=r,
        )
        self.dead_letters_undeliverable = Counter(
            "kestrel_dead_letters_undeliverable", "Dead letters the broker refused for good (given up).", registry=r
        )
        self.anomalies_undeliverable = Counter(
            "kestrel_anomaly_records_undeliverable", "Anomaly records the broker refused for good.", registry=r
        )
        self.client_rebuilds = Counter(
            "kestrel_kafka_client_rebuilds", "Kafka clients closed and rebuilt after failures.", ["client"], registry=r
        )
        # The worker's registry is its own (no process collector): when this process started, for the
        # alert that counts a restarted worker's anomaly counter whole.
        self.start_time = Gauge("kestrel_start_time_seconds", "Unix time the worker process started.", registry=r)
        self.start_time.set(time.time())
        self.build_info = Gauge(
            "kestrel_build_info", "1, labelled with the Kafka client and its checksum implementation.",
            ["kafka_client", "crc32c"], registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "kestrel_consumer_lag", "High watermark - committed offset.", ["topic", "partition"], registry=r
        )
        self.model_info = Gauge("kestrel_model_info", "1 for the live model version.", ["version"], registry=r)
        self.model_load_seconds = Gauge("kestrel_model_load_seconds", "Time to load the live model.", registry=r)
        self.model_created = Gauge(
            "kestrel_model_created_timestamp_seconds", "Unix time the live model was trained.", registry=r
        )
        self.model_reloads = Counter("kestrel_model_reloads", "Successful model reloads.", registry=r)
        self.model_reload_failures = Counter("kestrel_model_reload_failures", "Failed model reloads.", registry=r)
        self.model_reload_failing = Gauge(
            "kestrel_model_reload_failing",
            "1 while the registry's LIVE pointer names a model this worker failed to load (it serves the last one).",
            registry=r,
        )
        self.publish_failures = Counter(
            "kestrel_publish_failures", "Flushes that left outputs unacknowledged.", registry=r
        )
        self.commit_failures = Counter("kestrel_commit_failures", "Failed offset commits.", registry=r)
        self.broker_errors = Counter("kestrel_broker_errors", "Broker connection errors and retries.", registry=r)
        self.ready = Gauge("kestrel_ready", "1 when ready to process.", registry=r)
        self.unreadable_partitions = Gauge(
            "kestrel_unreadable_partitions",
            "Input partitions paused at a record the Kafka client cannot read (kafka-python).",
            registry=r,
        )
        self.threshold = Gauge("kestrel_threshold", "Live model threshold.", registry=r)
        self.target_flag_rate = Gauge("kestrel_target_flag_rate", "Live model calibrated target FPR.", registry=r)
        self.flag_rate = Gauge("kestrel_flag_rate", "Share of the last 10,000 scored events flagged.", registry=r)
        self.flag_rate_window = Gauge(
            "kestrel_flag_rate_window_events",
            "Scored events behind kestrel_flag_rate and the score quantiles (up to 10,000; 0 after a model swap).",
            registry=r,
        )
        self.score_quantile = Gauge("kestrel_score_quantile", "Rolling score quantiles.", ["quantile"], registry=r)
        self.calibration_quantile = Gauge(
            "kestrel_calibration_score_quantile", "Calibration score quantiles.", ["quantile"], registry=r
        )
        for outcome in ("normal", "anomaly", "rejected"):
            self.events.labels(outcome)
        for client in ("consumer", "producer"):
            self.client_rebuilds.labels(client)
        self._window = np.zeros(ROLLING_WINDOW, dtype=np.float64)
        self._window_flags = np.zeros(ROLLING_WINDOW, dtype=bool)
        self._window_fill = 0
        self._window_pos = 0
        self._clock = clock
        self._quantiles_at: float | None = None  # None: recompute at the next batch
        self._versions: set[str] = set()

    def observe_scores(self, scores: NDArray[np.float64], threshold: float, model_version: str | None = None) -> None:
        """Record scored events: histogram, rolling flag rate, and rolling score quantiles (the
        quantiles recomputed at most every ``QUANTILE_REFRESH_S``, and at once after a model swap).

        ``model_version``: the model that scored them; scores of a model no longer live (a batch
        that finished after the swap) stay out of the new model's rolling window.
        """
        self.score.observe_many(scores)
        if model_version is not None and self._versions and model_version not in self._versions:
            return
        take = scores[-ROLLING_WINDOW:]
        idx = (self._window_pos + np.arange(len(take))) % ROLLING_WINDOW
        self._window[idx] = take
        self._window_flags[idx] = take > threshold
        self._window_pos = int((self._window_pos + len(take)) % ROLLING_WINDOW)
        self._window_fill = min(ROLLING_WINDOW, self._window_fill + len(take))
        if not self._window_fill:
            return
        # The rate before its window: a scrape between the two sees a finite rate beside the old
        # window, never a window beside the NaN a model swap leaves (found in review: the dashboard
        # weights each worker's rate by its window).
        self.flag_rate.set(float(self._window_flags[: self._window_fill].mean()))
        self.flag_rate_window.set(self._window_fill)
        now = self._clock()
        if self._quantiles_at is None or now - self._quantiles_at >= QUANTILE_REFRESH_S:
            self._quantiles_at = now
            window = self._window[: self._window_fill]
            for q, value in zip(QUANTILES, np.quantile(window, QUANTILES), strict=True):
                self.score_quantile.labels(str(q)).set(float(value))

    def observe_processing_latencies(self, seconds: NDArray[np.float64], implausible: int) -> None:
        self.latency.observe_many(seconds)
        self.implausible_timestamps.inc(implausible)

    def observe_event_time_lags(self, seconds: NDArray[np.float64]) -> None:
        self.event_time_lag.observe_many(seconds)

    def set_model(
        self,
        version: str,
        load_seconds: float,
        created_unix_s: float | None,
        threshold: float,
        target_fpr: float | None,
        calibration_scores: NDArray[np.float64],
    ) -> None:
        """Describe the live model (previous versions' info series are removed).

        A new version also empties the rolling drift window: scores of two models are on
        different scales, so the flag rate and score quantiles start over with the new model, and
        until it has scored an event there are none (found in review: the old model's p99 stayed
        exported next to the new threshold and could fire ``KestrelSevereAnomalyScores``).
        """
        if self._versions and version not in self._versions:
            self._window_fill = 0
            self._window_pos = 0
            self._quantiles_at = None
            self.flag_rate_window.set(0)
            self.flag_rate.set(math.nan)
            for q in QUANTILES:
                with contextlib.suppress(KeyError):
                    self.score_quantile.remove(str(q))
        # What describes the model first, then its version, then the old version's series gone: a
        # scrape in between sees the new figures under the old version (or both versions, for one
        # write) at worst, never no version or the new version beside the old threshold (found in
        # review). A figure the model does not have is NaN, not the previous model's.
        self.model_load_seconds.set(load_seconds)
        self.model_created.set(math.nan if created_unix_s is None else created_unix_s)
        self.threshold.set(threshold)
        self.target_flag_rate.set(math.nan if target_fpr is None else target_fpr)
        if len(calibration_scores):
            for q, value in zip(QUANTILES, np.quantile(calibration_scores, QUANTILES), strict=True):
                self.calibration_quantile.labels(str(q)).set(float(value))
        else:
            for q in QUANTILES:
                with contextlib.suppress(KeyError):
                    self.calibration_quantile.remove(str(q))
        self.model_info.labels(version).set(1)
        for old in self._versions - {version}:
            self.model_info.remove(old)
        self._versions = {version}

    def set_lag(self, lag: Mapping[tuple[str, int], int], dropped: Iterable[tuple[str, int]]) -> None:
        for topic, partition in dropped:
            with contextlib.suppress(KeyError):
                self.lag.remove(topic, str(partition))
        for (topic, partition), value in lag.items():
            self.lag.labels(topic, str(partition)).set(value)


class HealthState:
    """Liveness and readiness shared between the loop (writer) and the HTTP server (reader).

    Liveness (``/healthz``) says a restart would help: the loop has not turned for
    ``stall_after_s`` (stuck in a call), or it has made no progress (no commit) for
    ``no_progress_after_s`` while work is pending (see :meth:`progressed`). Readiness
    (``/readyz``) says whether it is processing now: a broker outage makes it unready, not dead.

    Args:
        stall_after_s: the loop counts as dead when it has not ticked for this long.
        no_progress_after_s: ... or when it has not progressed for this long.
    """

    def __init__(self, stall_after_s: float = 60.0, no_progress_after_s: float = 300.0) -> None:
        self.stall_after_s = stall_after_s
        self.no_progress_after_s = no_progress_after_s
        self._lock = threading.Lock()
        self._last_tick = time.monotonic()
        self._last_progress = self._last_tick
        self._running = True
        self._ready = False

    def tick(self) -> None:
        """The loop is turning (called at least once per batch and per retry)."""
        with self._lock:
            self._last_tick = time.monotonic()

    def progressed(self) -> None:
        """The loop committed something, or has nothing left to do."""
        with self._lock:
            self._last_progress = time.monotonic()

    def set_ready(self, ready: bool) -> None:
        with self._lock:
            self._ready = ready

    def set_stopped(self) -> None:
        with self._lock:
            self._running = False
            self._ready = False

    @property
    def alive(self) -> bool:
        """Running, turning, and not without progress for ``no_progress_after_s`` while work is pending."""
        with self._lock:
            now = time.monotonic()
            turning = now - self._last_tick < self.stall_after_s
            return self._running and turning and now - self._last_progress < self.no_progress_after_s

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready and self._running


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """Return ``(body, content_type)`` of the Prometheus text exposition of ``registry``."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


class MetricsServer(HttpEndpoint):
    """:class:`HttpEndpoint` serving ``registry`` on ``/metrics`` and ``health`` on the probes.

    Bound on construction (``OSError`` when the address is taken), served after :meth:`start`.

    Args:
        host, port: where to listen (port 0 picks a free port; see :attr:`port`).
        limits: threads, connections and timeouts (:class:`EndpointLimits` defaults when ``None``).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        health: HealthState,
        host: str,
        port: int,
        limits: EndpointLimits | None = None,
    ) -> None:
        super().__init__(functools.partial(render_metrics, registry), health, host, port, limits)
