"""What the worker publishes for a batch: anomaly records and dead letters (shared contracts).

Every output is fitted to the producer's request limit first (:mod:`worker.output_guard`), so
no input record, however hostile, can make an output the client or broker refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from worker.errors import PublishError
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

    def prepare(self, topics: Sequence[str], timeout_s: float) -> None:
        """Build the client and learn ``topics``' metadata now, before the first outputs need
        them (a fresh idempotent librdkafka producer waits ~0.5 s for its producer id, which the
        first batch would otherwise wait out). Bounded by about ``timeout_s`` per topic (kafka-python:
        its own metadata wait, ``max_block_ms``).

        Raises:
            PublishError: the broker did not answer; the first flush tries again.
        """
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


class _Numbered(Protocol):
    record: OutputRecord
    number: int


Entry = TypeVar("Entry", bound=_Numbered)


class NumberedOutputs(Generic[Entry]):
    """What both Kafka sinks keep: records numbered in send order, those neither acknowledged nor
    given up (oldest first), and those given up until the flush that covers them returns them."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.given_up = GivenUpRecords()
        self._sent = 0

    def next_number(self) -> int:
        number, self._sent = self._sent, self._sent + 1
        return number

    def mark(self) -> int:
        """The number the next record sent will get."""
        return self._sent

    def before(self, through: int | None) -> list[Entry]:
        """Entries numbered below ``through`` (all with ``None``)."""
        return [e for e in self.entries if through is None or e.number < through]

    def settled_before(self, through: int) -> bool:
        """Whether no entry numbered below ``through`` is still open."""
        return not self.entries or self.entries[0].number >= through

    def finish_flush(
        self, through: int | None, error_of: Callable[[Entry], object], fatal: bool
    ) -> list[Undeliverable]:
        """The records given up below ``through``, or :class:`PublishError` while some are open."""
        still = self.before(through)
        if still:
            first = next((error for e in still if (error := error_of(e)) is not None), None)
            raise PublishError(f"{len(still)} records not acknowledged: {first!r}", fatal=fatal)
        return self.given_up.take(through)
