"""The librdkafka source's partitions set aside at a batch it cannot read (end to end on both
clients: tests/worker/test_unreadable_batch.py)."""

from __future__ import annotations

from typing import Any

import pytest

from worker.confluent_unreadable import SetAside
from worker.errors import UnreadableBatchError
from worker.outcomes import RawRecord


class _Consumer:
    def __init__(self) -> None:
        self.paused: list[tuple[str, int, int]] = []

    def pause(self, parts: list[Any]) -> None:
        self.paused += [(p.topic, p.partition, p.offset) for p in parts]


def _records(partition: int, offsets: range) -> list[RawRecord]:
    return [RawRecord("t", partition, o, 0, None, b"{}") for o in offsets]


def test_records_are_returned_first_and_each_partition_is_reported_once_a_poll() -> None:
    consumer, aside = _Consumer(), SetAside()
    records = _records(0, range(3, 6)) + _records(1, range(0, 2)) + _records(2, range(7, 9))
    found = {("t", 0): (5, "Local: Invalid compressed data"), ("t", 2): (7, "Local: Bad message format")}
    kept = aside.take(consumer, found, records)  # type: ignore[arg-type]
    assert [(r.partition, r.offset) for r in kept] == [(0, 3), (0, 4), (1, 0), (1, 1)]
    assert consumer.paused == [("t", 0, 5), ("t", 2, 7)]
    with pytest.raises(UnreadableBatchError) as first:
        aside.raise_pending()
    assert first.value.partition == ("t", 0) and first.value.offset == 5 and "Invalid compressed" in str(first.value)
    # The error fetched again before the pause took: no second pause, no second report.
    assert aside.take(consumer, {("t", 0): (5, "again")}, _records(1, range(2, 3))) != []  # type: ignore[arg-type]
    assert consumer.paused == [("t", 0, 5), ("t", 2, 7)]
    with pytest.raises(UnreadableBatchError) as second:
        aside.raise_pending()
    assert second.value.partition == ("t", 2)
    aside.raise_pending()  # nothing left


def test_with_no_record_left_the_report_is_raised_at_once_and_a_revoke_forgets_it() -> None:
    consumer, aside = _Consumer(), SetAside()
    with pytest.raises(UnreadableBatchError):
        aside.take(consumer, {("t", 0): (10, "bad")}, [])  # type: ignore[arg-type]
    aside.forget([("t", 0)])
    assert aside.offsets == {}
    with pytest.raises(UnreadableBatchError):  # assigned again: set aside again, reported again
        aside.take(consumer, {("t", 0): (10, "bad")}, [])  # type: ignore[arg-type]
    assert consumer.paused == [("t", 0, 10), ("t", 0, 10)]
