"""What the pipeline makes of a batch: one outcome per consumed record.

:class:`RawRecord` is a consumed Kafka record; each becomes :class:`Normal`, :class:`Flagged`
(with its anomaly record) or :class:`Rejected` (for the dead-letter topic). :class:`BatchResult`
keeps a batch's outcomes in the shape the worker consumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray


class RawRecord(NamedTuple):
    """One consumed Kafka record (immutable).

    ``timestamp_ms`` is the record's Kafka timestamp, ``log_append_time`` whether the broker set
    it (``LogAppendTime`` topics) rather than the producer; ``headers`` its Kafka headers, carried
    into its dead letter (``traceparent``, schema ids, ...). A named tuple, not a frozen
    dataclass: one is built per consumed record, and a frozen dataclass costs 1.6 µs to build
    against 0.56 µs (measured with timeit; ~5% of the librdkafka worker's main thread before).
    """

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    log_append_time: bool = False


@dataclass(frozen=True, slots=True)
class Normal:
    """A scored event below the threshold."""

    record: RawRecord
    score: float


@dataclass(frozen=True, slots=True)
class Flagged:
    """A scored event above the threshold, with its anomaly record (a JSON-able dict)."""

    record: RawRecord
    event_id: str
    score: float
    nearest_class: str
    anomaly: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that breaks the inbound contract; it goes to the dead-letter topic untouched."""

    record: RawRecord
    reason: str
    error_type: str
    message: str


Outcome = Normal | Flagged | Rejected


@dataclass(frozen=True)
class BatchResult:
    """Outcomes of one batch, kept in the shape the worker consumes them.

    Normal events get no per-event object (they are most of the stream and only counted);
    :meth:`outcomes` builds the full per-record list on demand.

    Attributes:
        records: the input records.
        scored: ``(m,)`` input positions of the scored (not rejected) records, ascending.
        scores: ``(m,)`` their scores, same order.
        flagged: the scored events above the threshold, in input order.
        flagged_at: ``(f,)`` their input positions.
        rejected: the records that break the inbound contract, in input order.
        event_times_s: ``(n,)`` unix seconds per input record: the event's own timestamp, NaN
            where it has none (rejected records, no timestamp field, unusable value). Chosen by
            the producer of the event, so only for the event-time lag metric, never for alerts.
        model_version: the detector version that scored the batch.
    """

    records: Sequence[RawRecord]
    scored: NDArray[np.intp]
    scores: NDArray[np.float64]
    flagged: list[Flagged]
    flagged_at: NDArray[np.intp]
    rejected: list[Rejected]
    event_times_s: NDArray[np.float64]
    model_version: str

    @property
    def n_normal(self) -> int:
        return len(self.scores) - len(self.flagged)

    def outcomes(self) -> list[Outcome]:
        """One outcome per input record, in input order."""
        out: list[Outcome | None] = [None] * len(self.records)
        for position, score in zip(self.scored.tolist(), self.scores.tolist(), strict=True):
            out[position] = Normal(self.records[position], score)
        for position, flagged in zip(self.flagged_at.tolist(), self.flagged, strict=True):
            out[position] = flagged
        rejected_at = np.setdiff1d(np.arange(len(self.records)), self.scored).tolist()
        for position, rejected in zip(rejected_at, self.rejected, strict=True):
            out[position] = rejected
        done = [o for o in out if o is not None]
        assert len(done) == len(self.records), "every record must get an outcome"
        return done
