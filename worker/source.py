"""Where the loop's records come from: the :class:`Source` contract (a Kafka group consumer in
production: :mod:`worker.kafka_io`, :mod:`worker.confluent_io`; the outputs' side is
:class:`worker.outputs.Sink`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from worker.outcomes import RawRecord
from worker.rebalance import PartitionsCallback, RevokedCallback

Partition = tuple[str, int]


class Source(Protocol):
    """Where records come from (a Kafka group consumer in production)."""

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]: ...
    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int) -> None: ...
    def assignment(self) -> set[Partition]: ...
    def highwater(self, partition: Partition) -> int | None: ...
    def position(self, partition: Partition) -> int | None: ...
    def rewind(self, partition: Partition, offset: int) -> None:
        """Inside ``on_assigned``, for a partition it hands over: the next record of it that
        :meth:`poll` returns is at ``offset`` (not where this consumer stopped reading it), or at
        the group's committed offset if that lies beyond (another member read past it meanwhile).
        A partition kept without a rewind never starts below the committed offset either."""

    def group_offsets(self) -> dict[Partition, int] | None:
        """Inside ``on_assigned``: the group's committed offsets of the partitions it hands over,
        as read when the assignment began (a partition with none is absent); ``None`` when the
        coordinator did not answer in time, or outside the callback."""
        ...

    def coordinator_known(self) -> bool: ...
    def close(self, timeout_ms: int) -> None: ...


#: Builds the source given the loop's (on_revoked, on_assigned) rebalance callbacks; raises
#: :class:`worker.errors.BrokerError` when the broker cannot be reached.
SourceFactory = Callable[[RevokedCallback, PartitionsCallback], Source]
