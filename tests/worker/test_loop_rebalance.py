"""The loop through group rebalances, with the fake source (held to the real clients by the contract
suite): records of a partition revoked while a batch is collected are left out and read again by
whoever owns the partition next, this worker included; every offset is processed once."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest
from fakes import FakeSink, FakeSource
from prometheus_client import CollectorRegistry
from tiny_model import TinyModel

from worker.errors import BrokerError, UnreadableBatchError
from worker.loop import WorkerLoop
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.model_loading import LoadedModel, load_model
from worker.outcomes import RawRecord
from worker.rebalance import PartitionsCallback, RevokedCallback

Partition = tuple[str, int]
P0, P1 = ("in", 0), ("in", 1)
#: Batches of 25 records: a collect ends when it has them (deterministic poll numbers below).
CONFIG = LoopConfig(
    output_topic="out", dead_letter_topic="dlq", batch_size=25, batch_wait_ms=50, idle_poll_ms=1,
    backoff_initial_s=0.001, backoff_max_s=0.002, shutdown_timeout_s=0.2, flush_timeout_s=0.01, lag_interval_s=0.0,
)  # fmt: skip


@pytest.fixture(params=[True, False], ids=["kafka-python", "librdkafka"])
def keeps_position(request: pytest.FixtureRequest) -> bool:
    """The fake as either client: a partition kept through a rebalance goes on from its position
    (kafka-python) or starts at its committed offset (librdkafka)."""
    return bool(request.param)


@pytest.fixture(scope="module")
def model(tiny_model: TinyModel) -> LoadedModel:
    return load_model(tiny_model.path)


def _dead_letters(partition: int, start: int, n: int) -> list[RawRecord]:
    """Records that are not JSON: each one becomes a dead letter naming its source offset."""
    return [RawRecord("in", partition, start + i, 0, None, b"not json") for i in range(n)]


def _processed(sink: FakeSink) -> list[tuple[int, int]]:
    """(partition, offset) of every dead letter sent, in order."""
    out = []
    for _topic, _value, _key, headers in sink.sent:
        h = dict(headers)
        out.append((int(h["kestrel.source.partition"]), int(h["kestrel.source.offset"])))
    return out


def _loop(model: LoadedModel, sources: list[FakeSource], sink: FakeSink) -> WorkerLoop:
    """A loop whose consumer is ``sources[0]``, and ``sources[1]`` once rebuilt."""
    built = iter(sources)

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        source = next(built)
        source.on_revoked, source.on_assigned = on_revoked, on_assigned
        return source

    return WorkerLoop(factory, sink, model, WorkerMetrics(CollectorRegistry()), HealthState(), CONFIG)


def _worker(
    model: LoadedModel, batches: list[list[RawRecord]], keeps_position: bool
) -> tuple[FakeSource, FakeSink, WorkerLoop]:
    """A loop on one fake consumer (as ``keeps_position`` says) over ``batches``, and its sink."""
    journal: list[str] = []
    source = FakeSource(journal, batches, keeps_position=keeps_position)
    sink = FakeSink(journal)
    return source, sink, _loop(model, [source], sink)


def _run(loop: WorkerLoop, times: int) -> None:
    for _ in range(times):
        loop.run_once()


def test_records_of_partitions_revoked_while_collected_are_left_out_and_read_again_when_given_back(
    model: LoadedModel,
    keeps_position: bool,
) -> None:
    batches = [_dead_letters(0, 0, 10) + _dead_letters(1, 0, 10), _dead_letters(0, 10, 5)]
    source, sink, loop = _worker(model, batches, keeps_position)
    # Poll 2 (the same collect) revokes both partitions; poll 3 gives only P0 back.
    source.rebalance_on_poll = {2: ([P0, P1], None), 3: (None, [P0])}
    loop.run_once()
    assert sink.sent == [] and source.commits == []  # all 25 left out: nothing processed, nothing committed
    _run(loop, 3)
    # P0 read again from its first record left out, once; P1 is its new owner's, from offset 0.
    assert _processed(sink) == [(0, i) for i in range(15)]
    assert source.commits[-1] == {P0: 15} and all(P1 not in c for c in source.commits)
    assert loop.uncommitted == {}


def test_records_polled_between_a_revoke_and_the_assignment_are_left_out_too(
    model: LoadedModel, keeps_position: bool
) -> None:
    """Should a client hand out a revoked partition before the new assignment (neither kafka-python
    3 nor librdkafka is known to), those records are left out with the rest, and the rewind goes
    back to the first of them."""
    source, sink, loop = _worker(
        model, [_dead_letters(0, 0, 10), _dead_letters(0, 10, 10), _dead_letters(0, 20, 5)], keeps_position
    )
    source.rebalance_on_poll = {2: ([P0, P1], None), 4: (None, [P0, P1])}
    loop.run_once()  # P0's records taken out at the revoke: an empty batch
    assert sink.sent == []
    _run(loop, 4)
    assert _processed(sink) == [(0, i) for i in range(25)]
    assert source.commits[-1] == {P0: 25}


def test_a_partition_given_back_within_the_collect_is_read_again_from_its_first_record_left_out(
    model: LoadedModel,
    keeps_position: bool,
) -> None:
    """Revoked and assigned back before the batch is complete: its records were taken out at the
    revoke and come again after the rewind (librdkafka would otherwise restart the partition at its
    committed offset, below them: a repeat; kafka-python go on past them)."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10), _dead_letters(0, 10, 15)], keeps_position)
    source.rebalance_on_poll = {2: ([P0, P1], [P0, P1])}
    _run(loop, 3)
    assert source.rewinds == [(P0, 0)]
    assert _processed(sink) == [(0, i) for i in range(25)]
    assert source.commits[-1] == {P0: 25}


def test_a_partition_that_went_to_another_member_is_not_rewound_when_it_comes_back_later(
    model: LoadedModel,
    keeps_position: bool,
) -> None:
    """Revoked and given to another member within one collect: its records are left out and the
    rewind forgotten with that assignment. When a later rebalance gives it back, the partition
    starts where the other member committed: rewinding it to the records left out long ago would
    repeat all the other member did."""
    source, sink, loop = _worker(
        model, [_dead_letters(0, 0, 10) + _dead_letters(1, 0, 10), _dead_letters(1, 10, 5)], keeps_position
    )
    source.rebalance_on_poll = {2: ([P0, P1], [P1])}
    _run(loop, 2)
    assert _processed(sink) == [(1, i) for i in range(15)] and source.commits[-1] == {P1: 15}
    source.batches.append(_dead_letters(0, 50, 5))
    source.committed[P0] = 50  # what the other member processed and committed
    source.rebalance([P1], [P0, P1])
    _run(loop, 2)
    assert source.rewinds == [(P1, 0)]  # P1 at the first rebalance; P0 never
    assert _processed(sink)[15:] == [(0, i) for i in range(50, 55)]
    assert source.commits[-1] == {P0: 55}


class _RefusingSource(FakeSource):
    def rewind(self, partition: tuple[str, int], offset: int) -> None:
        raise BrokerError("the client refused the seek")


def test_a_refused_rewind_keeps_the_records_out_and_rebuilds_the_consumer(model: LoadedModel) -> None:
    """Its position lies past the records left out: nothing of the partition may be processed or
    committed from it; its successor reads them again from the committed offset."""
    journal: list[str] = []
    first = _RefusingSource(journal, [_dead_letters(0, 0, 10) + _dead_letters(1, 0, 10), _dead_letters(0, 10, 5)])
    first.rebalance_on_poll = {2: ([P0, P1], None), 3: (None, [P0])}
    first.batches.append(_dead_letters(0, 15, 5))  # what it would hand out past them: left out
    second = FakeSource(journal, [_dead_letters(0, 0, 20)])
    sink = FakeSink(journal)
    loop = _loop(model, [first, second], sink)
    loop.run_once()
    loop.run_once()  # the assignment: the rewind is refused, P0's records stay out
    assert sink.sent == [] and first.commits == [] and first.closed
    _run(loop, 3)
    assert _processed(sink) == [(0, i) for i in range(20)]
    assert second.commits[-1] == {P0: 20}
    assert loop.metrics.client_rebuilds.labels("consumer")._value.get() == 1


def test_a_revoke_in_the_collect_drops_no_record_of_a_partition_kept(model: LoadedModel, keeps_position: bool) -> None:
    """Only the revoked partitions' records are left out (a cooperative-style revoke of one)."""
    source, sink, loop = _worker(
        model, [_dead_letters(0, 0, 10) + _dead_letters(1, 0, 10), _dead_letters(1, 10, 5)], keeps_position
    )
    source.rebalance_on_poll = {2: ([P0], None)}
    _run(loop, 2)
    assert _processed(sink) == [(1, i) for i in range(15)]
    assert source.commits[-1] == {P1: 15}


class _UnreadableSource(FakeSource):
    """Its first poll finds P0's batch unreadable (kafka-python pauses the partition there)."""

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        if self.polls == 0:
            self.polls += 1
            raise UnreadableBatchError("cannot read", partition=P0, offset=7)
        return super().poll(max_records, timeout_ms)


def test_an_unreadable_partition_stays_reported_through_a_rebalance_that_gives_it_back(model: LoadedModel) -> None:
    """kafka-python keeps a partition it keeps paused through a rebalance: still unreadable, still
    reported (it used to be forgotten at the revoke, and then stalled with a lag of 0 and no signal).
    A partition that goes to another member is read afresh there: no longer reported here."""
    source = _UnreadableSource([], [])
    loop = _loop(model, [source], FakeSink([]))
    loop.run_once()
    unreadable = loop.metrics.unreadable_partitions
    assert unreadable._value.get() == 1
    source.rebalance([P0, P1], [P0, P1])
    assert unreadable._value.get() == 1
    source.rebalance([P0, P1], [P1])
    assert unreadable._value.get() == 0


def test_records_of_partitions_lost_mid_collect_are_left_out_and_not_rewound(
    model: LoadedModel, keeps_position: bool
) -> None:
    """A session expiry (partitions lost): the group already gave them to others, who may have read
    and committed past this member's records. Given back, a partition starts at the group's
    committed offset (both clients read it afresh): rewinding it to the records left out would
    repeat what the other member did."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10) + _dead_letters(1, 0, 10)], keeps_position)
    source.rebalance_on_poll = {2: ([P0, P1], None, True)}
    loop.run_once()
    assert sink.sent == [] and source.commits == []  # left out, and nothing committed for lost partitions
    source.committed[P0] = 30  # the other member read P0 up to 30 meanwhile
    source.batches.append(_dead_letters(0, 30, 5))
    source.rebalance(None, [P0])
    _run(loop, 2)
    assert source.rewinds == []
    assert _processed(sink) == [(0, i) for i in range(30, 35)]
    assert source.commits[-1] == {P0: 35}


def test_a_batch_still_in_flight_at_the_revoke_is_not_read_again_when_its_partition_comes_back(
    model: LoadedModel, keeps_position: bool
) -> None:
    """Its outputs are not acknowledged within the revoke's wait, so its offsets are not committed.
    Given back, the partition is rewound past the batch (librdkafka would start at the committed
    offset, below it, and read it again); the batch finishes and is committed here."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10)], keeps_position)
    loop.run_once()  # the batch is sent, in flight
    sink.fail_flushes = 1  # the revoke's wait for it fails
    source.batches.append(_dead_letters(0, 10, 5))
    source.rebalance([P0, P1], [P0, P1])
    assert source.rewinds == [(P0, 10)] and source.commits == []
    _run(loop, 3)
    assert _processed(sink) == [(0, i) for i in range(15)]
    assert source.commits[-1] == {P0: 15}


def test_a_batch_acknowledged_between_the_revoke_and_the_assignment_is_committed_when_given_back(
    model: LoadedModel, keeps_position: bool
) -> None:
    """The revoke's wait missed the acknowledgements; the batch finishes before the assignment
    (kafka-python's rejoin rarely completes within one poll), when its partition is not owned and
    nothing of it can be marked. Given back and rewound past the batch, the partition must still
    get the batch committed, or the group's offset stays below processed records for good."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 25)], keeps_position)
    loop.run_once()  # sent, in flight
    source.rebalance_on_poll = {2: ([P0, P1], None), 3: (None, [P0, P1])}
    sink.fail_flushes = 1  # the revoke's wait fails
    _run(loop, 6)
    assert source.rewinds == [(P0, 25)]
    assert _processed(sink) == [(0, i) for i in range(25)]
    assert source.committed[P0] == 25 and loop.uncommitted == {}


def test_a_batch_in_flight_when_its_partition_is_lost_commits_nothing_of_it(
    model: LoadedModel, keeps_position: bool
) -> None:
    """The partition went to another member, which read and committed past the batch; given back in
    the same poll, it must not have its group offset moved back when the old batch finishes."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10)], keeps_position)
    loop.run_once()  # 0-9 in flight
    source.rebalance([P0, P1], None, lost=True)
    source.committed[P0] = 30  # the other member's progress
    source.batches.append(_dead_letters(0, 30, 5))
    source.rebalance(None, [P0])
    _run(loop, 2)
    assert all(commit[P0] >= 30 for commit in source.commits if P0 in commit), source.commits
    assert source.committed[P0] == 35
    assert _processed(sink) == [(0, i) for i in range(10)] + [(0, i) for i in range(30, 35)]


@pytest.mark.parametrize("split", [True, False], ids=["assigned-in-a-later-poll", "assigned-in-the-same-poll"])
def test_a_rewound_partition_ending_in_control_records_is_committed_to_its_end(
    model: LoadedModel, keeps_position: bool, split: bool
) -> None:
    """A transaction's commit marker past the last record: once idle, the loop commits the
    consumer's position (past the marker), never past records taken out and read again."""
    journal: list[str] = []
    batches = [_dead_letters(0, 0, 10), _dead_letters(0, 10, 10)]
    source = FakeSource(journal, batches, keeps_position=keeps_position, ends={P0: 22})
    sink = FakeSink(journal)
    sink.auto_ack = True
    loop = _loop(model, [source], sink)
    source.rebalance_on_poll = {2: ([P0, P1], None), 3: (None, [P0, P1])} if split else {2: ([P0, P1], [P0, P1])}
    _run(loop, 8)
    assert _processed(sink) == [(0, i) for i in range(20)]
    assert source.committed[P0] == 22


def test_a_partition_another_member_read_past_meanwhile_starts_at_the_committed_offset(
    model: LoadedModel, keeps_position: bool
) -> None:
    """This member's join outlasted a generation in which another member had the partition and
    committed past this one's position (seen on the embedded broker, whose joins take seconds):
    kafka-python kept the old position, and would read again all the other member did."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10)], keeps_position)
    _run(loop, 2)
    assert source.committed[P0] == 10
    source.batches.append(_dead_letters(0, 10, 35))  # the log: 10-44
    source.rebalance([P0, P1], None)
    source.committed[P0] = 40  # the other member, in the generation this one missed
    source.rebalance(None, [P0, P1])
    _run(loop, 2)
    assert _processed(sink) == [(0, i) for i in range(10)] + [(0, i) for i in range(40, 45)]
    assert source.committed[P0] == 45


@pytest.mark.parametrize("finish_before_assign", [False, True], ids=["finished-after", "finished-before"])
def test_a_batch_in_flight_never_moves_back_an_offset_another_member_committed_in_a_missed_generation(
    model: LoadedModel, keeps_position: bool, finish_before_assign: bool
) -> None:
    """Found in review: the partition comes back after a generation this member missed, in which
    another member read it and committed 40; the batch of offsets 0-9, still in flight through
    the revoke, then committed 10 and moved the group's offset back (a crash there repeats 10-39)."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10)], keeps_position)
    loop.run_once()  # offsets 0-9 in flight
    sink.fail_flushes = 1  # the revoke's wait for them fails
    source.rebalance([P0, P1], None)
    source.committed[P0] = 40  # the other member, in the generation this one missed
    source.batches.append(_dead_letters(0, 10, 35))
    if finish_before_assign:
        loop.run_once()  # the batch finishes while P0 awaits the assignment
    source.rebalance(None, [P0, P1])
    _run(loop, 3)
    assert [c[P0] for c in source.commits if P0 in c] == [45]
    assert sorted(o for p, o in _processed(sink) if p == 0) == list(range(10)) + list(range(40, 45))


def test_a_batch_in_flight_never_moves_back_the_offset_of_a_partition_that_went_away_and_came_back(
    model: LoadedModel, keeps_position: bool
) -> None:
    """Found in review: the partition goes to another member (which commits 30) and comes back in
    a later rebalance while the batch of 0-9 is still unacknowledged."""
    source, sink, loop = _worker(model, [_dead_letters(0, 0, 10)], keeps_position)
    loop.run_once()
    sink.fail_flushes = 2  # both revokes' waits for the batch fail
    source.rebalance([P0, P1], [P1])  # P0 to the other member
    source.committed[P0] = 30
    source.batches.append(_dead_letters(0, 30, 5))
    source.rebalance([P1], [P0, P1])  # and back, the batch still in flight
    _run(loop, 3)
    assert [c[P0] for c in source.commits if P0 in c] == [35]


class _UnseenRevokeCommitFailures(FakeSource):
    """kafka-python's way: a commit asked for inside the revoke callback is sent after it, and its
    failure is only logged (the loop never sees it)."""

    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int) -> None:
        if self.fail_commits:
            self.fail_commits -= 1
            return
        super().commit(offsets, timeout_ms)


@pytest.mark.parametrize("failure", ["raised", "unseen"])
def test_work_whose_revoke_commit_failed_is_committed_when_the_partition_comes_back(
    model: LoadedModel, keeps_position: bool, failure: str
) -> None:
    """Found in review: the revoke's commit failed and the partition came back with nothing new to
    read; its processed offsets were forgotten, so the group's offset stayed behind for good (a
    restart repeated them) while the lag read 0. Given back, the partition starts past that work
    (librdkafka would read it again from the committed offset, and its commits then went back)."""
    kind = FakeSource if failure == "raised" else _UnseenRevokeCommitFailures
    source = kind([], [_dead_letters(0, 0, 10)], keeps_position=keeps_position)
    sink = FakeSink()
    loop = _loop(model, [source], sink)
    _run(loop, 2)
    assert source.committed[P0] == 10
    source.batches.append(_dead_letters(0, 10, 10))
    loop.run_once()  # 10-19 in flight
    source.fail_commits = 1
    source.rebalance([P0, P1], [P0, P1])  # acknowledged in the revoke's wait; its commit fails
    _run(loop, 5)
    assert [c[P0] for c in source.commits if P0 in c] == [10, 20]
    assert [o for p, o in _processed(sink) if p == 0] == list(range(20))  # each once, both clients


@pytest.mark.parametrize("in_flight", [True, False], ids=["batch-in-flight", "batch-committed"])
def test_with_the_groups_offsets_unknown_the_consumer_is_rebuilt_and_no_offset_goes_back(
    model: LoadedModel, keeps_position: bool, in_flight: bool
) -> None:
    """Found in review: the coordinator did not answer at the assignment, so another member's
    commit (40, in a generation this one missed) was unknown; rewinding past this member's batch
    and committing it (10), or committing its own earlier work (20), moved the group's offset back.
    The partitions now stay out until a rebuilt consumer reads them from the group's offsets."""
    first = FakeSource([], [_dead_letters(0, 0, 10)], keeps_position=keeps_position)
    second = FakeSource([], [], keeps_position=keeps_position)
    sink = FakeSink()
    loop = _loop(model, [first, second], sink)
    if in_flight:
        loop.run_once()  # 0-9 in flight
        sink.fail_flushes = 1  # the revoke's wait for them fails
    else:
        _run(loop, 2)
        first.batches.append(_dead_letters(0, 10, 10))
        loop.run_once()  # 10-19, acknowledged in the revoke's wait: its commit of 20 succeeds
    first.rebalance([P0, P1], None)
    first.committed[P0] = 40  # the other member
    first.batches.append(_dead_letters(0, 20, 25))
    first.group_offsets_unknown = True
    first.rebalance(None, [P0, P1])
    second.committed = first.committed  # one group
    second.batches.append(_dead_letters(0, 40, 5))  # from the group's offset
    _run(loop, 4)
    assert first.rewinds == [] and first.closed
    assert [c[P0] for c in first.commits if P0 in c] == ([] if in_flight else [10, 20])
    assert [c[P0] for c in second.commits if P0 in c] == [45]


def test_consumers_rebuilt_for_unknown_group_offsets_rejoin_after_a_growing_backoff(model: LoadedModel) -> None:
    """A coordinator that keeps not answering must not make the worker rebuild its consumer and
    rejoin the group as fast as it can (each join rebalances every member): the rebuilds wait
    ``backoff_initial_s``, doubling up to ``backoff_max_s``; an assignment with the group's
    offsets resets the wait."""
    now = [0.0]
    sources = [FakeSource([], [], keeps_position=True) for _ in range(5)]
    for source in sources[:3]:
        source.group_offsets_unknown = True
    built = iter(sources)

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        source = next(built)
        source.on_revoked, source.on_assigned = on_revoked, on_assigned
        source.rebalance_on_poll = {1: (None, [P0, P1])}  # each joins the group at its first poll
        return source

    config = LoopConfig(output_topic="out", dead_letter_topic="dlq", batch_size=25, batch_wait_ms=0,
                        idle_poll_ms=1, backoff_initial_s=1.0, backoff_max_s=3.0, lag_interval_s=0.0)  # fmt: skip
    loop = WorkerLoop(factory, FakeSink(), model, WorkerMetrics(CollectorRegistry()), HealthState(), config,
                      clock=lambda: now[0])  # fmt: skip

    def consumers_built_after(seconds: float) -> int:
        now[0] += seconds
        loop.run_once()
        return sum(source.polls > 0 for source in sources)

    assert consumers_built_after(0.0) == 1 and sources[0].closed  # joined without group offsets: rebuilt
    assert consumers_built_after(0.5) == 1  # within the first wait (1 s)
    assert consumers_built_after(0.6) == 2 and sources[1].closed
    assert consumers_built_after(1.9) == 2  # the wait doubled (2 s)
    assert consumers_built_after(0.2) == 3 and sources[2].closed
    assert consumers_built_after(2.9) == 3  # capped at 3 s
    assert consumers_built_after(0.2) == 4 and not sources[3].closed  # the group's offsets known: kept
    sources[3].group_offsets_unknown = True
    sources[3].rebalance(None, [P0, P1])
    assert consumers_built_after(0.0) == 4 and sources[3].closed
    assert consumers_built_after(1.1) == 5  # the wait was reset to 1 s


def test_consumers_rebuilt_for_refused_rewinds_rejoin_after_a_growing_backoff(
    model: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    """The same backoff after a refused rewind (found in review: it was reset as soon as the group's
    offsets were known, before the rewind, so every rebuild waited the first delay)."""

    class Refusing(FakeSource):
        def rewind(self, partition: Partition, offset: int) -> None:
            raise BrokerError("the client refused the seek")

    now = [0.0]
    sources = []
    for _ in range(8):  # each: P0 and P1 read, both revoked mid-collect, P0 given back: a rewind
        source = Refusing([], [_dead_letters(0, 0, 10) + _dead_letters(1, 0, 10), _dead_letters(0, 10, 5)])
        source.rebalance_on_poll = {2: ([P0, P1], None), 3: (None, [P0])}
        sources.append(source)
    built = iter(sources)

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        source = next(built)
        source.on_revoked, source.on_assigned = on_revoked, on_assigned
        return source

    config = LoopConfig(output_topic="out", dead_letter_topic="dlq", batch_size=25, batch_wait_ms=0,
                        idle_poll_ms=1, backoff_initial_s=1.0, backoff_max_s=8.0, lag_interval_s=0.0)  # fmt: skip
    loop = WorkerLoop(factory, FakeSink(), model, WorkerMetrics(CollectorRegistry()), HealthState(), config,
                      clock=lambda: now[0])  # fmt: skip
    with caplog.at_level(logging.INFO, logger="worker.loop"):
        for _ in range(80):
            now[0] += 0.5
            loop.run_once()
    waits = [r.retry_in_s for r in caplog.records if r.getMessage() == "consumer_rejoin_backoff"]  # type: ignore[attr-defined]
    assert waits[:4] == [1.0, 2.0, 4.0, 8.0]


def test_an_empty_assignment_needs_no_group_offsets(model: LoadedModel, keeps_position: bool) -> None:
    """A member left without partitions (more members than partitions) is not rebuilt: there are
    no offsets to ask the coordinator for (the fake answers none outside a hand-over)."""
    source, _, loop = _worker(model, [_dead_letters(0, 0, 10)], keeps_position)
    _run(loop, 2)
    source.rebalance([P0, P1], [])
    _run(loop, 2)
    assert not source.closed and source.assignment() == set()
