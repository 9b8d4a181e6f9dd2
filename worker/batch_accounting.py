"""What a finished batch adds to the worker's metrics (:func:`count_batch`)."""

from __future__ import annotations

from collections import Counter

from worker.latency import event_time_lags, processing_latencies
from worker.metrics import WorkerMetrics
from worker.outcomes import BatchResult
from worker.outputs import Undeliverable


def count_batch(
    m: WorkerMetrics,
    result: BatchResult,
    given_up: list[Undeliverable],
    threshold: float,
    read_at: float,
    acked_at: float,
) -> None:
    """Count a finished batch (every output acknowledged or given up): events by outcome, anomalies
    by class, rejections by reason, dead letters sent, scores, and latencies from ``read_at``
    (polled) and ``acked_at`` (acknowledged)."""
    # One labelled increment per class and per reason, not per record (each takes a lock).
    for nearest_class, n in Counter(f.nearest_class for f in result.flagged).items():
        m.anomalies.labels(nearest_class).inc(n)
    for reason, n in Counter(r.reason for r in result.rejected).items():
        m.rejected.labels(reason).inc(n)
    m.events.labels("normal").inc(result.n_normal)
    m.events.labels("anomaly").inc(len(result.flagged))
    m.events.labels("rejected").inc(len(result.rejected))
    m.dead_letters.inc(len(result.rejected) - sum(g.record.kind == "dead_letter" for g in given_up))
    m.batch_size.observe(len(result.records))
    m.observe_scores(result.scores, threshold, result.model_version)
    latencies, implausible = processing_latencies(result.records, read_at, acked_at)
    m.observe_processing_latencies(latencies, implausible)
    m.observe_event_time_lags(event_time_lags(result.event_times_s, acked_at))
