"""Latency figures of a batch, computed so that no event's content can distort them (pure).

- **Processing latency** (the one alerts use): output acknowledged minus the record's *broker*
  timestamp (topics with ``message.timestamp.type=LogAppendTime``), else minus the moment the worker
  read it. A producer's ``CreateTime`` is chosen by whoever produces, so it never enters this
  figure (a backlog shows in consumer lag instead). A broker timestamp older than
  :data:`MAX_RECORD_AGE_S` or ahead by more than :data:`CLOCK_SKEW_S` (clock trouble) also counts
  from read time, and is counted as implausible.
- **Event-time lag**: acknowledged minus the event's own timestamp field, clamped to
  ``[0, MAX_EVENT_TIME_LAG_S]``: a separate metric for data freshness, never for alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter

import numpy as np
from numpy.typing import NDArray

from worker.outcomes import RawRecord

#: A Kafka timestamp older than this when read is taken as wrong (a real backlog shows in lag).
MAX_RECORD_AGE_S = 24 * 3600.0
#: A Kafka timestamp this far in the future is taken as wrong (producer clock skew allowance).
CLOCK_SKEW_S = 5.0
#: Event-time lags are clamped to one week.
MAX_EVENT_TIME_LAG_S = 7 * 24 * 3600.0

# Mapped over a batch without a Python frame per record (a generator resumes one per record).
_TIMESTAMP_MS = attrgetter("timestamp_ms")
_LOG_APPEND_TIME = attrgetter("log_append_time")


def processing_latencies(
    records: Sequence[RawRecord], read_at: float, acked_at: float
) -> tuple[NDArray[np.float64], int]:
    """Seconds from each record's broker timestamp (else ``read_at``) to ``acked_at``.

    Returns:
        ``(latencies, implausible)``: ``(n,)`` non-negative seconds, and how many broker
        timestamps were implausible (their latency counts from ``read_at``).
    """
    stamps = np.fromiter(map(_TIMESTAMP_MS, records), dtype=np.float64, count=len(records)) / 1000.0
    broker = np.fromiter(map(_LOG_APPEND_TIME, records), dtype=bool, count=len(records))
    plausible = (stamps >= read_at - MAX_RECORD_AGE_S) & (stamps <= read_at + CLOCK_SKEW_S)
    start = np.where(broker & plausible, stamps, read_at)
    return np.maximum(acked_at - start, 0.0), int((broker & ~plausible).sum())


def event_time_lags(event_times_s: NDArray[np.float64], acked_at: float) -> NDArray[np.float64]:
    """``acked_at`` minus each known event time (NaN ones left out), clamped to one week."""
    known = event_times_s[~np.isnan(event_times_s)]
    return np.clip(acked_at - known, 0.0, MAX_EVENT_TIME_LAG_S)
