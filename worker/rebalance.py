"""What a rebalance changes for the loop: the callbacks a source gets, and the book of partitions
revoked, records taken out of the batch being collected, and where to rewind partitions given back.

A rebalance happens inside a poll. Records collected of a partition it takes away are taken out of
the batch: the revoke commits what was processed before them, so whoever owns the partition next
reads them once. Given back by the assignment that ends the rebalance, the partition is rewound to
the first of them, or just past a batch still in flight (kafka-python would go on past them,
librdkafka start at the committed offset, below them). Partitions lost (the session expired) are
taken out but never rewound: the group already gave them to others, who may have read past them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from worker.outcomes import RawRecord

logger = logging.getLogger("worker.loop")

Partition = tuple[str, int]
#: Called with the partitions a rebalance assigns (the whole new assignment).
PartitionsCallback = Callable[[list[Partition]], None]


class RevokedCallback(Protocol):
    """Called with the partitions a rebalance takes away: ``lost`` when the group already gave
    them to others (the member's session expired) and nothing of them may be committed."""

    def __call__(self, partitions: list[Partition], lost: bool = False) -> None: ...


def _key(record: RawRecord) -> Partition:
    return (record.topic, record.partition)


class RebalanceBook:
    """The loop's rebalance state for one consumer (:meth:`reset` for a new one)."""

    def __init__(self) -> None:
        #: Revoked by the rebalance under way: records left out, offsets not committed.
        self.revoked: set[Partition] = set()
        #: Revoked, not lost, since the last assignment: may come back, rewound.
        self.awaiting: set[Partition] = set()
        #: The records polled so far for the batch being collected (shared with the loop's list).
        self.collecting: list[RawRecord] = []
        #: Where to rewind each partition should the assignment give it back.
        self.rewind: dict[Partition, int] = {}
        #: Partitions whose rewind the client refused: out until the consumer is rebuilt.
        self.unrewound: set[Partition] = set()
        #: Offset past work processed of a revoked partition (before the revoke, whose commit may
        #: fail, or by a batch that finished while it awaited the assignment): committed if the
        #: partition is given back and the group's offset is below it.
        self.finished: dict[Partition, int] = {}

    def reset(self) -> None:
        """A new consumer: nothing is revoked, nothing to rewind."""
        self.revoked.clear()
        self.awaiting.clear()
        self.rewind.clear()
        self.finished.clear()
        self.unrewound.clear()

    @property
    def excluded(self) -> set[Partition]:
        """Partitions whose records are left out and whose offsets are not committed."""
        return self.revoked | self.unrewound if self.unrewound else self.revoked

    def kept(self, polled: list[RawRecord]) -> list[RawRecord]:
        """``polled`` without records of excluded partitions (no client is known to hand out a
        revoked one; should one, they are left out as a revoke takes them out of the batch)."""
        out = self.excluded
        if not out:
            return polled
        kept = [r for r in polled if _key(r) not in out]
        if len(kept) < len(polled):
            self._leave_out([r for r in polled if _key(r) in out])
        return kept

    def revoked_now(self, gone: set[Partition], lost: bool, in_flight: list[RawRecord] | None) -> None:
        """Partitions taken away inside a poll: their collected records leave the batch, and a
        batch of theirs still in flight (``in_flight``) is where a rewind must start at the latest."""
        self.revoked |= gone
        if lost:
            self.awaiting -= gone
            for partition in gone:
                self.rewind.pop(partition, None)
                self.finished.pop(partition, None)
        else:
            self.awaiting |= gone
            if in_flight:
                self._past_in_flight(in_flight, gone)
        if self.collecting:
            self._leave_out([r for r in self.collecting if _key(r) in gone])
            self.collecting[:] = [r for r in self.collecting if _key(r) not in gone]

    def batch_finished(self, records: Iterable[RawRecord]) -> None:
        """A batch finished while some of its partitions await the assignment (not owned: nothing
        of them marked processed): note the offset past it, committed if they come back."""
        if self.awaiting:
            self.note_processed({_key(r): r.offset + 1 for r in records if _key(r) in self.awaiting})

    def note_processed(self, offsets: dict[Partition, int]) -> None:
        """Offsets processed of revoked partitions (see ``finished``)."""
        for partition, offset in offsets.items():
            self.finished[partition] = max(self.finished.get(partition, 0), offset)

    def assigned(self) -> tuple[dict[Partition, int], dict[Partition, int]]:
        """The rebalance ended: forget what was revoked; return where to rewind partitions given
        back and the offsets past batches that finished meanwhile."""
        self.revoked.clear()
        self.awaiting.clear()
        rewind, self.rewind = self.rewind, {}
        finished, self.finished = self.finished, {}
        return rewind, finished

    def _past_in_flight(self, records: list[RawRecord], gone: set[Partition]) -> None:
        last = {_key(r): r.offset for r in records if _key(r) in gone}
        for partition, offset in last.items():
            self.rewind[partition] = min(self.rewind.get(partition, offset + 1), offset + 1)
        if last:
            logger.warning("revoke_with_batch_in_flight", extra={"partitions": sorted(last)})

    def _leave_out(self, records: list[RawRecord]) -> None:
        dropped: dict[Partition, list[int]] = {}
        for record in records:
            dropped.setdefault(_key(record), []).append(record.offset)
        for partition, offsets in dropped.items():
            first = min(offsets)
            if partition in self.awaiting:
                first = min(self.rewind.get(partition, first), first)
                self.rewind[partition] = first
            logger.info(
                "revoked_records_left_out",
                extra={"partition": partition, "from_offset": first, "count": len(offsets)},
            )
