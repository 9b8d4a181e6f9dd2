"""The rebalance book alone: what a revoke takes out of the batch being collected and where a
partition given back is rewound (the loop's use of it: test_loop_rebalance.py)."""

from __future__ import annotations

from worker.outcomes import RawRecord
from worker.rebalance import RebalanceBook

P0, P1 = ("in", 0), ("in", 1)


def _records(partition: int, start: int, n: int) -> list[RawRecord]:
    return [RawRecord("in", partition, start + i, 0, None, b"x") for i in range(n)]


def test_a_revoke_takes_its_partitions_out_of_the_batch_being_collected_and_notes_the_rewind() -> None:
    book = RebalanceBook()
    book.collecting = batch = _records(0, 5, 3) + _records(1, 0, 2)
    book.revoked_now({P0}, lost=False, in_flight=None)
    assert [(r.partition, r.offset) for r in batch] == [(1, 0), (1, 1)]  # the loop's own list, changed in place
    assert book.excluded == {P0}
    assert book.kept(_records(0, 8, 2) + _records(1, 2, 1)) == _records(1, 2, 1)
    assert book.assigned() == ({P0: 5}, {}) and book.excluded == set()


def test_a_rewind_starts_past_a_batch_in_flight_and_a_finished_one_is_reported() -> None:
    book = RebalanceBook()
    book.revoked_now({P0, P1}, lost=False, in_flight=_records(0, 0, 10))
    book.batch_finished(_records(0, 0, 10))
    assert book.assigned() == ({P0: 10}, {P0: 10})


def test_lost_partitions_are_taken_out_but_never_rewound() -> None:
    book = RebalanceBook()
    book.collecting = _records(0, 0, 4)
    book.revoked_now({P0}, lost=False, in_flight=None)
    book.revoked_now({P0}, lost=True, in_flight=_records(0, 0, 2))
    assert book.collecting == [] and book.assigned() == ({}, {})


def test_a_new_consumer_starts_with_an_empty_book() -> None:
    book = RebalanceBook()
    book.revoked_now({P0}, lost=False, in_flight=_records(0, 0, 1))
    book.unrewound.add(P1)
    book.reset()
    assert book.excluded == set() and book.assigned() == ({}, {})


def test_work_processed_before_a_revoke_is_reported_unless_the_partition_is_lost_meanwhile() -> None:
    book = RebalanceBook()
    book.revoked_now({P0, P1}, lost=False, in_flight=None)
    book.note_processed({P0: 10, P1: 4})
    book.note_processed({P0: 7})  # never lower
    book.revoked_now({P1}, lost=True, in_flight=None)  # the session expired before the assignment
    assert book.assigned() == ({}, {P0: 10})
