"""What the worker publishes for a batch: anomaly records and dead letters (shared contracts).

Every output is fitted to the producer's request limit first (:mod:`worker.output_guard`), so
no input record, however hostile, can make an output the client or broker refuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker.outcomes import BatchResult
from worker.output_guard import OutputRecord, fit_anomaly, fit_dead_letter


@dataclass(frozen=True, slots=True)
class Undeliverable:
    """An output given up after the broker or client refused it ``max_attempts`` times."""

    record: OutputRecord
    error: str


class Sink(Protocol):
    """Where outputs go (a Kafka producer in production, a list in tests).

    The contract (tests/worker/test_kafka_contract.py holds every implementation to it):
    ``send`` never raises and never blocks for long; ``flush`` returns once every record sent is
    acknowledged or given up (returning those given up) and raises
    :class:`worker.errors.PublishError` while some are neither; ``reset`` discards the client,
    keeping every pending record for the next ``flush``.

    Records are numbered in the order sent. ``mark()`` taken after a batch's sends, passed to
    ``flush(timeout_s, through=mark)``, waits for that batch and everything sent before it but
    not for records sent later (so the loop can score the next batch while one is in flight);
    ``acknowledged(mark)`` asks the same without waiting.
    """

    @property
    def pending(self) -> int:
        """Records sent but neither acknowledged nor given up."""
        ...

    def send(self, record: OutputRecord) -> None: ...

    def mark(self) -> int:
        """The number the next record sent will get (records sent so far)."""
        ...

    def flush(self, timeout_s: float, through: int | None = None) -> list[Undeliverable]:
        """Wait until every record numbered below ``through`` (default: every record) is
        acknowledged or given up; return those of them given up."""
        ...

    def acknowledged(self, through: int) -> bool:
        """Whether every record numbered below ``through`` is acknowledged or given up (no wait)."""
        ...

    def reset(self) -> None: ...

    def close(self, timeout_s: float) -> None: ...


def build_outputs(
    result: BatchResult, output_topic: str, dead_letter_topic: str, max_request_bytes: int
) -> list[OutputRecord]:
    """Anomaly records for the flagged events, then dead letters for the rejected records."""
    outputs = [fit_anomaly(output_topic, f, result.model_version, max_request_bytes) for f in result.flagged]
    outputs += [fit_dead_letter(dead_letter_topic, r, max_request_bytes) for r in result.rejected]
    return outputs


def send_outputs(
    result: BatchResult, sink: Sink, output_topic: str, dead_letter_topic: str, max_request_bytes: int
) -> tuple[int, int]:
    """Send every flagged event's anomaly record and every rejected record's dead letter.

    Returns ``(anomaly records sent, dead letters sent)``.
    """
    for record in build_outputs(result, output_topic, dead_letter_topic, max_request_bytes):
        sink.send(record)
    return len(result.flagged), len(result.rejected)


class GivenUpRecords:
    """Outputs a sink gave up on, kept by number until a flush that covers them returns them."""

    def __init__(self) -> None:
        self._items: list[tuple[int, Undeliverable]] = []

    def add(self, number: int, item: Undeliverable) -> None:
        self._items.append((number, item))

    def take(self, through: int | None) -> list[Undeliverable]:
        """Remove and return those numbered below ``through`` (all with ``None``), in order."""
        taken = [item for number, item in self._items if through is None or number < through]
        self._items = [(n, item) for n, item in self._items if through is not None and n >= through]
        return taken
