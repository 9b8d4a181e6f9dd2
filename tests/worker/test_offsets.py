"""Offset bookkeeping: processed vs committed, revocation, lag with and without commits."""

from __future__ import annotations

from worker.offsets import OffsetBook
from worker.outcomes import RawRecord


def _records(partition: int, start: int, n: int) -> list[RawRecord]:
    return [RawRecord("in", partition, start + i, 0, None, b"{}") for i in range(n)]


def test_processed_then_committed() -> None:
    book = OffsetBook()
    book.processed(_records(0, 0, 5) + _records(1, 10, 2), {("in", 0), ("in", 1)})
    assert book.uncommitted == {("in", 0): 5, ("in", 1): 12}
    book.committed({("in", 0): 5})
    assert book.uncommitted == {("in", 1): 12}
    assert book.committed_in({("in", 0)}) == {("in", 0): 5}


def test_partitions_no_longer_assigned_are_not_marked() -> None:
    book = OffsetBook()
    book.processed(_records(0, 0, 5), {("in", 1)})
    assert book.uncommitted == {}


def test_a_commit_older_than_the_processed_offset_keeps_the_rest_pending() -> None:
    book = OffsetBook()
    book.processed(_records(0, 0, 5), {("in", 0)})
    book.processed(_records(0, 5, 5), {("in", 0)})
    book.committed({("in", 0): 5})
    assert book.uncommitted == {("in", 0): 10}


def test_revoke_returns_what_to_commit_and_forgets() -> None:
    book = OffsetBook()
    book.processed(_records(0, 0, 3) + _records(1, 0, 4), {("in", 0), ("in", 1)})
    assert book.revoke([("in", 0)]) == {("in", 0): 3}
    assert book.uncommitted == {("in", 1): 4}


def test_lag_from_committed_else_first_seen_else_zero() -> None:
    book = OffsetBook()
    high = {("in", 0): 100, ("in", 1): 50, ("in", 2): 7}
    book.saw(_records(1, 20, 5))  # stuck on its first batch: nothing committed yet
    book.committed({("in", 0): 60})
    lag = book.lag([("in", 0), ("in", 1), ("in", 2), ("in", 3)], high.get)
    assert lag == {("in", 0): 40, ("in", 1): 30, ("in", 2): 0}  # partition 3: no watermark known
    assert book.work_pending(lag)
    assert not book.work_pending({("in", 2): 0})


def test_forget_all() -> None:
    book = OffsetBook()
    book.saw(_records(0, 0, 1))
    book.processed(_records(0, 0, 1), {("in", 0)})
    book.forget_all()
    assert book.uncommitted == {} and book.lag([("in", 0)], lambda p: 9) == {("in", 0): 0}


def test_a_partition_read_again_within_a_batch_marks_its_last_record_and_never_moves_back() -> None:
    book = OffsetBook()
    book.processed(_records(0, 0, 3), {("in", 0)})
    # Offsets 10..14 then, re-assigned mid-batch, 5..6 again: the last record marks 7 (10..14 are
    # read again after a restart, nothing is skipped); an older batch never lowers the mark.
    book.processed(_records(0, 10, 5) + _records(0, 5, 2), {("in", 0)})
    assert book.uncommitted == {("in", 0): 7}
    book.processed(_records(0, 0, 2), {("in", 0)})
    assert book.uncommitted == {("in", 0): 7}


def test_nothing_at_or_below_the_groups_offset_at_assignment_is_marked_processed() -> None:
    p = ("in", 0)
    book = OffsetBook()
    book.floor({p: 40})
    book.processed(_records(0, 0, 10), {p})  # a batch read before another member committed 40
    book.advanced({p: 40})
    assert book.uncommitted == {}
    book.processed(_records(0, 40, 5), {p})
    assert book.uncommitted == {p: 45}
    book.revoke([p])
    book.processed(_records(0, 0, 10), {p})  # the floor went with the partition
    assert book.uncommitted == {p: 10}
