"""The loop's fault handling with fakes: refused outputs, broken clients, outages, liveness, latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import replace

import orjson
import pytest
from fakes import FakeSink, FakeSource
from prometheus_client import CollectorRegistry
from tiny_model import TinyModel

from worker.errors import BrokerError, CommitError
from worker.loop import WorkerLoop
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.model_loading import LoadedModel, load_model
from worker.outcomes import RawRecord
from worker.rebalance import PartitionsCallback, RevokedCallback

CONFIG = LoopConfig(
    output_topic="out", dead_letter_topic="dlq", batch_wait_ms=0, idle_poll_ms=1, max_request_bytes=20_000,
    backoff_initial_s=0.001, backoff_max_s=0.002, shutdown_timeout_s=0.5, flush_timeout_s=0.01,
    rebuild_after_failures=3, rebuild_after_s=0.0, lag_interval_s=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def model(tiny_model: TinyModel) -> LoadedModel:
    return load_model(tiny_model.path)


def _loop(
    model: LoadedModel,
    source: FakeSource,
    sink: FakeSink,
    config: LoopConfig = CONFIG,
    health: HealthState | None = None,
) -> WorkerLoop:
    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        source.on_revoked = on_revoked
        return source

    return WorkerLoop(factory, sink, model, WorkerMetrics(CollectorRegistry()), health or HealthState(), config)


def _run_batch(loop: WorkerLoop) -> None:
    """Poll, score and send a batch; the empty poll after it waits for its outputs and commits it."""
    loop.run_once()
    loop.run_once()


def _poison(offset: int, key: bytes | None, value: bytes | None) -> RawRecord:
    return RawRecord("in", 0, offset, 0, key, value)


def test_a_refused_dead_letter_is_given_up_counted_and_committed_past_under_skip(model: LoadedModel) -> None:
    journal: list[str] = []
    # A fake broker with a smaller limit than the loop's: the fitted dead letter is still refused.
    sink = FakeSink(journal, max_request_bytes=1000)
    source = FakeSource(journal, [[_poison(0, b"k", b"x" * 5000), _poison(1, b"k", b"{bad")]])
    loop = _loop(model, source, sink)
    _run_batch(loop)
    assert source.commits == [{("in", 0): 2}]
    assert loop.metrics.dead_letters_undeliverable._value.get() == 1
    assert loop.metrics.dead_letters._value.get() == 1  # the other one was delivered
    assert [d[1] for d in sink.delivered] == [b"{bad"]


def test_a_refused_output_under_stop_stops_without_committing(model: LoadedModel) -> None:
    journal: list[str] = []
    sink = FakeSink(journal, max_request_bytes=1000)
    source = FakeSource(journal, [[_poison(0, b"k", b"x" * 5000)], [_poison(1, b"k", b"{bad")]])
    loop = _loop(model, source, sink, replace(CONFIG, undeliverable="stop"))
    assert loop.run() is False
    assert source.commits == [] and loop.stop_reason == "undeliverable_output"
    assert loop.metrics.dead_letters_undeliverable._value.get() == 1


def test_keyless_tombstone_and_oversized_keyless_value_go_out_with_coordinates(model: LoadedModel) -> None:
    journal: list[str] = []
    sink = FakeSink(journal, max_request_bytes=CONFIG.max_request_bytes)
    batch = [_poison(0, None, None), _poison(1, None, b"x" * CONFIG.max_request_bytes)]
    source = FakeSource(journal, [batch])
    loop = _loop(model, source, sink)
    _run_batch(loop)
    assert [d[2] for d in sink.delivered] == [b"in:0:0", b"in:0:1"]
    assert source.commits == [{("in", 0): 2}]
    assert loop.metrics.dead_letters_undeliverable._value.get() == 0


def test_a_fatal_producer_is_rebuilt_and_the_batch_resent_then_committed(model: LoadedModel) -> None:
    journal: list[str] = []
    sink = FakeSink(journal)
    sink.fatal_flushes = 1
    source = FakeSource(journal, [[_poison(0, b"k", b"{bad")]])
    loop = _loop(model, source, sink)
    _run_batch(loop)
    assert sink.resets == 1 and journal.index("sink-reset") < journal.index("flush") < journal.index("commit")
    assert len(sink.delivered) == 1 and source.commits == [{("in", 0): 1}]
    assert loop.metrics.client_rebuilds.labels("producer")._value.get() == 1


def test_a_producer_failing_again_and_again_is_rebuilt(model: LoadedModel) -> None:
    journal: list[str] = []
    sink = FakeSink(journal)
    sink.fail_flushes = 7
    source = FakeSource(journal, [[_poison(0, b"k", b"{bad")]])
    loop = _loop(model, source, sink)
    _run_batch(loop)
    assert sink.resets == 2  # after 3 failures, then after 3 more (rebuild_after_s = 0 here)
    assert source.commits == [{("in", 0): 1}]


def test_a_consumer_failing_again_and_again_is_rebuilt_and_rejoins(model: LoadedModel, tiny_model: TinyModel) -> None:
    journal: list[str] = []
    sources: list[FakeSource] = []
    event = orjson.dumps(tiny_model.normal_events[0])

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        source = FakeSource(journal, [[RawRecord("in", 0, 5, 0, None, event)]])
        source.fail_polls = 3 if not sources else 0
        sources.append(source)
        return source

    loop = WorkerLoop(factory, FakeSink(journal), model, WorkerMetrics(CollectorRegistry()), HealthState(), CONFIG)
    for _ in range(4):
        loop.run_once()
    assert len(sources) == 2 and sources[0].closed
    assert sources[1].commits == [{("in", 0): 6}]
    assert loop.metrics.client_rebuilds.labels("consumer")._value.get() == 1


def test_an_unreachable_broker_keeps_the_loop_alive_unready_and_stoppable(model: LoadedModel) -> None:
    attempts: list[float] = []

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        attempts.append(time.monotonic())
        raise BrokerError("no broker at 127.0.0.1:1")

    config = replace(CONFIG, backoff_initial_s=0.01, backoff_max_s=0.05)
    loop = WorkerLoop(factory, FakeSink(), model, WorkerMetrics(CollectorRegistry()), HealthState(), config)
    stopper = threading.Timer(0.5, loop.request_stop, args=("SIGTERM",))
    started = time.monotonic()
    stopper.start()
    assert loop.run() is True  # nothing was ever read, so nothing is left uncommitted
    assert time.monotonic() - started < 3.0
    assert loop.stop_reason == "SIGTERM"
    assert 3 <= len(attempts) < 60  # retried with backoff, not in a tight loop
    assert loop.metrics.ready._value.get() == 0


def test_a_stuck_worker_reports_lag_and_turns_not_alive(model: LoadedModel) -> None:
    journal: list[str] = []
    sink = FakeSink(journal)
    sink.fail_flushes = 10**9
    source = FakeSource(journal, [[_poison(40, b"k", b"{bad")]])
    source.set_highwater(("in", 0), 100)
    health = HealthState(no_progress_after_s=0.3)
    loop = _loop(model, source, sink, replace(CONFIG, rebuild_after_s=1e9), health)
    stopper = threading.Timer(1.0, loop.request_stop)
    stopper.start()
    observed: list[bool] = []
    watcher = threading.Timer(0.7, lambda: observed.append(health.alive))
    watcher.start()
    assert loop.run() is False
    assert loop.metrics.lag.labels("in", "0")._value.get() == 60  # 100 - first offset seen, nothing committed
    assert observed == [False]  # pending work and no commit for longer than no_progress_after_s


def test_an_idle_worker_stays_alive(model: LoadedModel) -> None:
    health = HealthState(no_progress_after_s=0.2)
    loop = _loop(model, FakeSource([], []), FakeSink(), health=health)
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        loop.run_once()
    assert health.alive


def test_producer_chosen_timestamps_do_not_reach_the_alerting_latency(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    now_ms = int(time.time() * 1000)
    events = [dict(e, ts=0) for e in tiny_model.normal_events[:6]]  # event time: 1970
    # (Kafka timestamp, set by the broker?): producer CreateTimes of an hour and 23 hours ago, 1970
    # and the far future; broker LogAppendTimes of 10 s ago and (clock trouble) 1970.
    stamps = [(now_ms - 3_600_000, False), (now_ms - 23 * 3_600_000, False), (5, False), (2**50, False),
              (now_ms - 10_000, True), (5, True)]  # fmt: skip
    batch = [RawRecord("in", 0, i, t, None, orjson.dumps(e), (), by_broker) for i, ((t, by_broker), e) in
             enumerate(zip(stamps, events, strict=True))]  # fmt: skip
    loop = _loop(model, FakeSource([], [batch]), FakeSink())
    loop.run_once()
    m = loop.metrics
    assert m.implausible_timestamps._value.get() == 1  # the broker's 1970: counted from read time
    assert 10.0 <= m.latency.sum < 15.0  # only the broker's own 10 s enter the alerting histogram
    assert m.event_time_lag.sum == pytest.approx(6 * 7 * 86400)  # clamped to a week each


def test_ready_again_after_an_outage_while_idle_with_nothing_committed(model: LoadedModel) -> None:
    attempts: list[int] = []

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        attempts.append(1)
        if len(attempts) == 1:
            raise BrokerError("broker away")
        return FakeSource([], [])

    loop = WorkerLoop(factory, FakeSink(), model, WorkerMetrics(CollectorRegistry()), HealthState(), CONFIG)
    loop.run_once()
    assert not loop.health.ready
    deadline = time.monotonic() + 2.0
    while not loop.health.ready and time.monotonic() < deadline:
        loop.run_once()
    assert loop.health.ready and len(attempts) == 2


def test_offsets_of_a_partition_revoked_mid_batch_are_not_committed(model: LoadedModel) -> None:
    journal: list[str] = []
    source = FakeSource(journal, [[], [_poison(0, b"k", b"{bad")]])
    loop = _loop(model, source, FakeSink(journal))
    loop.run_once()  # builds the consumer
    assert source.on_revoked is not None
    source.on_revoked([("in", 0)])  # the client still lists it as assigned until the rebalance ends
    loop.run_once()
    assert source.commits == [] and loop.uncommitted == {}


def test_a_consumer_whose_commits_keep_failing_is_rebuilt_although_polls_succeed(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    journal: list[str] = []
    sources: list[FakeSource] = []
    event = orjson.dumps(tiny_model.normal_events[0])

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        batches = [[RawRecord("in", 0, i, 0, None, event)] for i in range(5)]
        source = FakeSource(journal, batches)
        source.fail_commits = 10**9 if not sources else 0
        sources.append(source)
        return source

    loop = WorkerLoop(factory, FakeSink(journal), model, WorkerMetrics(CollectorRegistry()), HealthState(), CONFIG)
    for _ in range(5):
        loop.run_once()
    assert len(sources) == 2 and sources[0].closed and sources[0].commits == []
    assert sources[1].commits  # the new consumer commits what it re-read


def test_a_batch_in_flight_when_the_consumer_is_rebuilt_is_left_to_its_successor(model: LoadedModel) -> None:
    """Its outputs are delivered, but its offsets are not committed through the new consumer, and
    the old consumer's late rebalance callbacks (librdkafka runs them on a closing thread) change
    nothing."""
    journal: list[str] = []
    sources: list[FakeSource] = []

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        batches = [[_poison(i, b"k", b"{bad")] for i in range(4)] if not sources else []
        source = FakeSource(journal, batches)
        source.on_revoked = on_revoked
        source.fail_commits = 10**9 if not sources else 0
        sources.append(source)
        return source

    sink = FakeSink(journal)
    loop = WorkerLoop(factory, sink, model, WorkerMetrics(CollectorRegistry()), HealthState(), CONFIG)
    for _ in range(4):  # each run finishes the batch before and fails to commit it: rebuilt after 3
        loop.run_once()
    assert sources[0].closed and sink.pending == 1  # the fourth batch's dead letter, in flight
    assert sources[0].on_revoked is not None
    sources[0].on_revoked([("in", 0)])  # late, from the closed consumer: ignored
    loop.run_once()  # builds the successor; nothing to read: the batch in flight finishes
    assert len(sources) == 2 and sink.pending == 0 and len(sink.delivered) == 4
    assert sources[0].commits == sources[1].commits == [] and loop.uncommitted == {}


def test_a_stop_with_an_abandoned_batch_in_flight_commits_nothing_after_it(model: LoadedModel) -> None:
    journal: list[str] = []
    sink = FakeSink(journal, max_request_bytes=1000)
    batches = [[_poison(0, b"k", b"x" * 5000)], [_poison(1, b"k", b"{bad")], [_poison(2, b"k", b"{bad")]]
    source = FakeSource(journal, batches)
    loop = _loop(model, source, sink, replace(CONFIG, undeliverable="stop"))
    assert loop.run() is False
    assert source.commits == [] and source.closed
    assert loop.metrics.dead_letters_undeliverable._value.get() == 1


def test_an_abandoned_batch_is_not_committed_past_as_control_records(model: LoadedModel) -> None:
    """Found in review: once idle, the commit past transaction markers committed the consumer's
    position over a batch given up under WORKER_UNDELIVERABLE_POLICY=stop."""
    journal: list[str] = []
    sink = FakeSink(journal, max_request_bytes=1000, max_attempts=2)
    sink.auto_ack = True
    source = FakeSource(journal, [[_poison(0, b"k", b"{bad")], [], [_poison(1, b"k", b"x" * 5000)]])
    loop = _loop(model, source, sink, replace(CONFIG, undeliverable="stop", lag_interval_s=0.0))
    for _ in range(8):
        if loop.stop_reason != "not stopped":
            break
        loop.run_once()
    assert loop.stop_reason == "undeliverable_output"
    assert source.commits == [{("in", 0): 1}]


class _BlockingCommits(FakeSource):
    """kafka-python's synchronous commit against a frozen coordinator: waits its timeout, then fails."""

    def commit(self, offsets: Mapping[tuple[str, int], int], timeout_ms: int) -> None:
        time.sleep(timeout_ms / 1000)
        raise CommitError("timed out")


@pytest.mark.parametrize("stuck", ["commit", "flush"])
def test_a_stop_ends_near_its_drain_deadline_even_with_long_timeouts(model: LoadedModel, stuck: str) -> None:
    """Found in review: a commit waited its whole ``commit_timeout_ms`` and a flush retry its whole
    backoff after the drain deadline (up to ~10 s past it with the defaults)."""
    sink = FakeSink()
    if stuck == "commit":
        source: FakeSource = _BlockingCommits([], [[_poison(0, b"k", b"{bad")]])
        config = replace(CONFIG, shutdown_timeout_s=0.3, commit_timeout_ms=3000)
    else:
        source = FakeSource([], [[_poison(0, b"k", b"{bad")]])
        config = replace(CONFIG, shutdown_timeout_s=0.3, backoff_initial_s=3.0, backoff_max_s=3.0)
    loop = _loop(model, source, sink, config)
    loop.run_once()  # a batch in flight
    if stuck == "flush":
        sink.fail_flushes = 10**9
    loop.request_stop("SIGTERM")
    started = time.monotonic()
    assert loop.run() is False  # not committed: the commit failed, or the outputs never came
    assert time.monotonic() - started < 1.5  # the drain (0.3 s), a commit's floor of 0.5 s, a close


def test_a_failed_poll_never_commits_the_consumers_position(model: LoadedModel) -> None:
    """Found in review: librdkafka drops a whole polled batch when one message carries a fatal
    error, its position already past the rest; the idle path then committed that position (the
    control-record commit) and the dropped records were never read again. A fatal error rebuilds
    the consumer in the same turn (it reads from the committed offset), so that turn is the one
    that must not commit; the fake's error here is not fatal, so no rebuild hides the check."""
    source = FakeSource([], [[_poison(i, b"k", b"{bad") for i in range(5)]])
    loop = _loop(model, source, FakeSink())
    _run_batch(loop)
    loop.run_once()
    assert source.committed == {("in", 0): 5}
    source.set_highwater(("in", 0), 10)  # 5-9 produced, not fetched yet: a lag of 5
    loop.run_once()
    # The client consumes 5-9 and loses them with the error it raises.
    source.skip_to(("in", 0), 10)
    source.fail_polls = 1
    loop.run_once()
    assert source.committed == {("in", 0): 5}
