"""Offset bookkeeping of the loop: processed, committed, and lag per partition (no Kafka)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from worker.outcomes import RawRecord

Partition = tuple[str, int]


class OffsetBook:
    """What the loop knows of each partition's offsets (all offsets are *next* offsets to read).

    - processed: every output of the records before it is acknowledged, not yet committed;
    - committed: last offset this process committed;
    - first seen: the first offset polled since the partition was assigned (the start position
      when nothing was committed yet, so a worker stuck on its first batch still has a lag);
    - floor: the group's committed offset when the partition was assigned. Nothing at or below it
      is marked processed, so never committed: another member may have committed past work of
      this one still in flight (a partition that went away and came back, or a generation this
      member missed), and committing it would move the group's offset back.
    """

    def __init__(self) -> None:
        self._processed: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}
        self._first_seen: dict[Partition, int] = {}
        self._floor: dict[Partition, int] = {}

    def saw(self, records: Iterable[RawRecord]) -> None:
        """Note polled records (before they are processed)."""
        for record in records:
            self._first_seen.setdefault((record.topic, record.partition), record.offset)

    def processed(self, records: Iterable[RawRecord], assigned: set[Partition]) -> None:
        """Mark records whose outputs are acknowledged; partitions no longer assigned are skipped
        (their new owner commits them).

        A partition's records come in offset order, so its last record in ``records`` is the one
        to mark (one dict store per record instead of a lookup and a ``max``). Should a batch hold
        a partition read again from an earlier offset (re-assigned while the batch was collected),
        the last record marks less than the batch holds: those records are read again, none skipped.
        Records read again below an offset already committed (or the floor) mark nothing: a
        commit never moves back.
        """
        last = {(r.topic, r.partition): r.offset for r in records}
        floor, committed = self._floor, self._committed
        for key, offset in last.items():
            if key in assigned and offset + 1 > max(
                self._processed.get(key, 0), committed.get(key, 0), floor.get(key, 0)
            ):
                self._processed[key] = offset + 1

    def advanced(self, positions: Mapping[Partition, int]) -> None:
        """Mark partitions processed up to ``positions`` (the consumer skipped control records past
        the last record processed). The caller guarantees that nothing polled below them is still
        unprocessed: nothing in flight, nothing uncommitted, nothing given up."""
        for key, offset in positions.items():
            if offset > self._processed.get(key, self._committed.get(key, 0)) and offset > self._floor.get(key, 0):
                self._processed[key] = offset

    def floor(self, committed: Mapping[Partition, int]) -> None:
        """Note the group's committed offsets of partitions just assigned (see the class docstring)."""
        self._floor.update(committed)

    @property
    def uncommitted(self) -> dict[Partition, int]:
        """Processed offsets not yet committed."""
        return dict(self._processed)

    def committed(self, offsets: Mapping[Partition, int]) -> None:
        """Record a successful commit of ``offsets``."""
        self._committed.update(offsets)
        for key, offset in offsets.items():
            if self._processed.get(key) == offset:
                del self._processed[key]

    def committed_in(self, assigned: set[Partition]) -> dict[Partition, int]:
        """Known committed offsets of the assigned partitions (to probe the broker with)."""
        return {p: o for p, o in self._committed.items() if p in assigned}

    def revoke(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Forget ``partitions``; return their uncommitted offsets (to commit before they go)."""
        revoked = set(partitions)
        offsets = {p: o for p, o in self._processed.items() if p in revoked}
        for p in revoked:
            self._processed.pop(p, None)
            self._committed.pop(p, None)
            self._first_seen.pop(p, None)
            self._floor.pop(p, None)
        return offsets

    def forget_all(self) -> None:
        """Forget everything (the consumer was rebuilt: its successor re-reads what was uncommitted)."""
        self._processed.clear()
        self._committed.clear()
        self._first_seen.clear()
        self._floor.clear()

    def lag(self, assigned: Iterable[Partition], highwater: Callable[[Partition], int | None]) -> dict[Partition, int]:
        """High watermark minus committed offset (else the first offset seen) per assigned partition.

        A partition with a known high watermark but nothing seen or committed has read up to it
        (a fetch that returned no records): its lag is 0.
        """
        lag: dict[Partition, int] = {}
        for p in assigned:
            high = highwater(p)
            if high is None:
                continue
            base = self._committed.get(p, self._first_seen.get(p, high))
            lag[p] = max(0, high - base)
        return lag

    def work_pending(self, lag: Mapping[Partition, int]) -> bool:
        """Whether anything is left to do: uncommitted offsets or records not yet read."""
        return bool(self._processed) or any(v > 0 for v in lag.values())
