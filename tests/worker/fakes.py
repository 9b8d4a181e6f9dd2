"""In-memory stand-ins for the Kafka source, sink and publisher, held to the real ones by the contract tests.

``tests/worker/test_kafka_contract.py`` runs one behaviour suite against these fakes *and* the
real adapters (the worker's source and sink, the replayer's publisher) on the embedded broker: a
fake may not accept what the real client refuses (a record with neither key nor value, a record
over the request limit), nor refuse what it accepts (tombstones, keyless records, headers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from worker.errors import BrokerError, CommitError, PublishError, RecordRefusedError
from worker.outcomes import RawRecord
from worker.output_guard import OutputRecord, record_size
from worker.outputs import GivenUpRecords, Undeliverable
from worker.rebalance import PartitionsCallback, RevokedCallback

Partition = tuple[str, int]
Delivered = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
#: ``(revoked, assigned)`` or ``(revoked, assigned, lost)`` for :meth:`FakeSource.rebalance`.
Rebalance = (
    tuple[list[Partition] | None, list[Partition] | None] | tuple[list[Partition] | None, list[Partition] | None, bool]
)


def refusal(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int) -> str | None:
    """Why kafka-python's producer refuses this record, or ``None`` when it accepts it."""
    if key is None and value is None:
        return "ValueError('Need at least one: key or value')"
    if not all(isinstance(name, str) and isinstance(value, bytes) for name, value in headers):
        return "TypeError('All headers items must be (str, bytes) tuples')"
    if record_size(key, value, headers) > limit:
        return "MessageSizeTooLargeError()"
    return None


class FakeSource:
    """A group consumer over a fixed list of batches; ``poll`` hands out one batch per call."""

    def __init__(
        self,
        journal: list[str],
        batches: list[list[RawRecord]],
        partitions: int = 2,
        ends: Mapping[Partition, int] | None = None,
        keeps_position: bool = True,
    ) -> None:
        """``ends``: a partition's end offset when control records (transaction markers) follow its
        last record: once every batch is handed out, the position and high watermark reach it.
        ``keeps_position``: a partition a rebalance leaves assigned goes on from its position, as
        kafka-python does; ``False``: it starts again at its committed offset, as librdkafka does
        (``test_kafka_contract.py`` holds each client to its mode)."""
        self.journal = journal
        self.batches = batches
        self.commits: list[dict[Partition, int]] = []
        self.fail_commits = 0
        self.fail_polls = 0
        self.closed = False
        self.on_revoked: RevokedCallback | None = None
        self.on_assigned: PartitionsCallback | None = None
        #: Rebalances run inside the poll of that number (1 = first): ``(revoked, assigned)``, either
        #: ``None`` for a rebalance whose other half comes in another poll.
        self.rebalance_on_poll: dict[int, Rebalance] = {}
        self.polls = 0
        #: ``(partition, offset)`` of every rewind, in order.
        self.rewinds: list[tuple[Partition, int]] = []
        #: The group's committed offsets (this consumer's commits; a test may play another member's).
        self.committed: dict[Partition, int] = {}
        self.group_offsets_unknown = False
        self.keeps_position = keeps_position
        self._lost: set[Partition] = set()
        self._handing: set[Partition] = set()
        self._handed_out: dict[Partition, list[RawRecord]] = {}
        self._assigned = {("in", p) for p in range(partitions)}
        self._high: dict[Partition, int] = {}
        self._position: dict[Partition, int] = {}
        self._ends = dict(ends or {})

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        self.polls += 1
        if self.polls in self.rebalance_on_poll:
            self.rebalance(*self.rebalance_on_poll[self.polls])
        if self.fail_polls:
            self.fail_polls -= 1
            raise BrokerError("broker away")
        batch = self.batches.pop(0) if self.batches else []
        for r in batch:
            key = (r.topic, r.partition)
            self._handed_out.setdefault(key, []).append(r)
            self._high[key] = max(self._high.get(key, 0), r.offset + 1)
            self._position[key] = r.offset + 1
        if not self.batches:
            for key, end in self._ends.items():
                self._high[key] = self._position[key] = end
        return batch

    def rebalance(self, revoked: list[Partition] | None, assigned: list[Partition] | None, lost: bool = False) -> None:
        """What an eager group rebalance does inside a poll: ``on_revoked`` for ``revoked`` (the
        client still lists them until the new assignment), then the new assignment, ``assigned``
        (the whole of it), and ``on_assigned``; the callbacks are those the factory was given.
        ``lost``: the member's session expired (the revoke says so; no commit should follow).
        A partition kept goes on from its position, as in kafka-python (librdkafka would start it
        at its committed offset; the loop rewinds every partition whose records it left out, and
        the contract suite holds both clients to the rewind)."""
        if revoked is not None and self.on_revoked is not None:
            self.on_revoked(revoked, lost=lost)
        if lost and revoked is not None:
            self._lost |= set(revoked)  # kafka-python drops their state: read afresh if assigned again
        if assigned is None:
            return
        self._assigned = set(assigned)
        self._handing = set(assigned)
        rewound = len(self.rewinds)
        try:
            if self.on_assigned is not None:
                self.on_assigned(assigned)
        finally:
            self._handing = set()
        rewound_now = dict(self.rewinds[rewound:])
        for partition in assigned:
            committed = self.committed.get(partition, 0)
            if partition in rewound_now:
                self._restart(partition, max(rewound_now[partition], committed))
            elif (
                not self.keeps_position
                or partition in self._lost
                or self._position.get(partition, committed) < committed
            ):
                self._restart(partition, committed)
        self._lost = set()

    def rewind(self, partition: Partition, offset: int) -> None:
        """As the real sources: only inside ``on_assigned``; the records of ``partition`` handed out
        from ``offset`` (or the committed offset, if beyond) on come again first in the next poll."""
        if partition not in self._handing:
            raise BrokerError(f"cannot rewind {partition}: only a partition being assigned (inside on_assigned)")
        self.rewinds.append((partition, offset))  # applied when the callback returns, as the clients do

    def group_offsets(self) -> dict[Partition, int] | None:
        """As the real sources: inside ``on_assigned``, the committed offsets of what it hands over
        (``None`` outside it, or while ``group_offsets_unknown``: a coordinator that did not answer)."""
        if not self._handing or self.group_offsets_unknown:
            return None
        return {p: o for p, o in self.committed.items() if p in self._handing}

    def _restart(self, partition: Partition, offset: int) -> None:
        """Hand out ``partition`` from ``offset``: what was handed out from there comes first in the
        next poll, records not handed out yet follow in their batches (those below it are skipped)."""
        handed = self._handed_out.get(partition, [])
        self._handed_out[partition] = [r for r in handed if r.offset < offset]
        again = [r for r in handed if r.offset >= offset]
        for later in self.batches:  # moved past records not handed out yet: skipped
            later[:] = [r for r in later if (r.topic, r.partition) != partition or r.offset >= offset]
        if partition in self._position:
            self._position[partition] = offset
        if again:
            self.batches.insert(0, again)

    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            raise CommitError("broker away")
        self.journal.append("commit")
        self.commits.append(dict(offsets))
        self.committed.update(offsets)

    def assignment(self) -> set[Partition]:
        return set(self._assigned)

    def highwater(self, partition: Partition) -> int | None:
        return self._high.get(partition)

    def position(self, partition: Partition) -> int | None:
        return self._position.get(partition)

    def skip_to(self, partition: Partition, offset: int) -> None:
        """Move the position to ``offset`` without handing records out (a client that consumed
        records and lost them with the error it raised)."""
        self._position[partition] = offset

    def set_highwater(self, partition: Partition, offset: int) -> None:
        self._high[partition] = offset

    def coordinator_known(self) -> bool:
        return True

    def close(self, timeout_ms: int) -> None:
        self.closed = True


class FakeSink:
    """The :class:`worker.outputs.Sink` contract in memory, refusing what kafka-python refuses.

    Args:
        max_request_bytes: records larger than this are refused (as the producer's ``max_request_size``).
        max_attempts: refusals of a record before it is given up (as :class:`worker.kafka_sink.KafkaSink`).
    """

    def __init__(self, journal: list[str] | None = None, max_request_bytes: int = 1_000_000, max_attempts: int = 3):
        self.journal = journal if journal is not None else []
        self.max_request_bytes = max_request_bytes
        self.max_attempts = max_attempts
        self.sent: list[Delivered] = []  # every send, in order (what the loop asked for)
        self.delivered: list[Delivered] = []  # what the "broker" acknowledged
        self.fail_flushes = 0
        self.fatal_flushes = 0
        self.resets = 0
        #: Acknowledge by itself (as a real producer's I/O thread does) when asked ``acknowledged``.
        self.auto_ack = False
        self.prepared: list[tuple[str, ...]] = []  # the topics of each prepare call
        self._pending: list[tuple[int, OutputRecord, int]] = []  # (number, record, refusals)
        self._given_up = GivenUpRecords()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(self, record: OutputRecord) -> None:
        self.journal.append(f"send:{record.topic}")
        self.sent.append((record.topic, record.value, record.key, record.headers))
        self._pending.append((len(self.sent) - 1, record, 0))

    def mark(self) -> int:
        return len(self.sent)

    def prepare(self, topics: Sequence[str], timeout_s: float) -> None:
        """Fails as a flush would (``fail_flushes``/``fatal_flushes``), without consuming a failure."""
        self.prepared.append(tuple(topics))
        if self.fail_flushes or self.fatal_flushes:
            raise PublishError("fake broker unavailable")

    def acknowledged(self, through: int) -> bool:
        """Without ``auto_ack`` nothing is acknowledged before a flush covers it (the slowest
        broker the contract allows); with it, what a flush would deliver is delivered now."""
        if self.auto_ack and not (self.fail_flushes or self.fatal_flushes):
            self._deliver(through)
        return not any(number < through for number, _, _ in self._pending)

    def flush(self, timeout_s: float, through: int | None = None) -> list[Undeliverable]:
        if self.fatal_flushes:
            self.fatal_flushes -= 1
            self.journal.append("flush-failed")
            raise PublishError("producer fenced", fatal=True)
        if self.fail_flushes:
            self.fail_flushes -= 1
            self.journal.append("flush-failed")
            raise PublishError("not acknowledged")
        self._deliver(through)
        if any(through is None or number < through for number, _, _ in self._pending):
            self.journal.append("flush-failed")
            raise PublishError(f"{len(self._pending)} records refused")
        self.journal.append("flush")
        return self._given_up.take(through)

    def _deliver(self, through: int | None) -> None:
        """One delivery attempt of every pending record numbered below ``through``."""
        still: list[tuple[int, OutputRecord, int]] = []
        for number, record, refusals in self._pending:
            error = self._refusal(record)
            if through is not None and number >= through:
                still.append((number, record, refusals))
            elif error is None:
                self.delivered.append((record.topic, record.value, record.key, record.headers))
            elif refusals + 1 >= self.max_attempts:
                self._given_up.add(number, Undeliverable(record, error))
            else:
                still.append((number, record, refusals + 1))
        self._pending = still

    def _refusal(self, record: OutputRecord) -> str | None:
        return refusal(record.key, record.value, record.headers, self.max_request_bytes)

    def reset(self) -> None:
        self.resets += 1
        self.journal.append("sink-reset")

    def close(self, timeout_s: float) -> None:
        self.journal.append("sink-closed")


class FakePublisher:
    """The replayer's :class:`worker.replay.Publisher` in memory, refusing at ``send`` what
    :class:`worker.kafka_publisher.KafkaPublisher` refuses there (its contract tests run on both)."""

    def __init__(self, max_request_bytes: int = 1_000_000) -> None:
        self.max_request_bytes = max_request_bytes
        self.sent: list[Delivered] = []  # (topic, value, key, headers), in order
        self.flushed_at: list[int] = []  # len(sent) at each flush

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        error = refusal(key, value, headers, self.max_request_bytes)
        if error is not None:
            raise RecordRefusedError(f"send failed: {error}")
        self.sent.append((topic, value, key, headers))

    def flush(self, timeout_s: float) -> None:
        self.flushed_at.append(len(self.sent))
