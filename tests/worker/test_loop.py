"""The loop with fake source/sink: commit only after flush, dead letters, retries, stop, swap."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest
from fakes import FakeSink, FakeSource
from prometheus_client import CollectorRegistry, generate_latest
from tiny_model import TinyModel

from worker import loop as loop_module
from worker.errors import BrokerError
from worker.loop import WorkerLoop
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.model_loading import LoadedModel, load_model
from worker.outcomes import RawRecord
from worker.output_guard import OutputRecord
from worker.rebalance import PartitionsCallback, RevokedCallback

CONFIG = LoopConfig(
    output_topic="out", dead_letter_topic="dlq", batch_wait_ms=0, idle_poll_ms=1,
    backoff_initial_s=0.001, backoff_max_s=0.002, shutdown_timeout_s=0.2, flush_timeout_s=0.01,
)  # fmt: skip


@pytest.fixture(scope="module")
def model(tiny_model: TinyModel) -> LoadedModel:
    return load_model(tiny_model.path)


def _records(tiny_model: TinyModel, partition: int, start: int, n: int, attack: bool = True) -> list[RawRecord]:
    events = tiny_model.attack_events if attack else tiny_model.normal_events
    return [RawRecord("in", partition, start + i, 0, None, orjson.dumps(events[start + i])) for i in range(n)]


def _loop(model: LoadedModel, batches: list[list[RawRecord]]) -> tuple[WorkerLoop, FakeSource, FakeSink, list[str]]:
    journal: list[str] = []
    source = FakeSource(journal, batches)
    sink = FakeSink(journal)

    def factory(on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> FakeSource:
        source.on_revoked = on_revoked
        return source

    loop = WorkerLoop(factory, sink, model, WorkerMetrics(CollectorRegistry()), HealthState(), CONFIG)
    return loop, source, sink, journal


def _run_batch(loop: WorkerLoop) -> None:
    """Poll, score and send a batch; the empty poll after it waits for its outputs and commits it."""
    loop.run_once()
    loop.run_once()


def test_commits_only_after_flush(model: LoadedModel, tiny_model: TinyModel) -> None:
    batch = _records(tiny_model, 0, 0, 200) + _records(tiny_model, 1, 0, 5, attack=False)
    loop, source, _sink, journal = _loop(model, [batch])
    loop.run_once()
    assert any(entry == "send:out" for entry in journal)
    assert "commit" not in journal and "flush" not in journal  # in flight: sent, not yet acknowledged
    loop.run_once()
    assert journal[-2:] == ["flush", "commit"]
    assert source.commits == [{("in", 0): 200, ("in", 1): 5}]
    assert loop.health.ready


def test_failed_flush_is_retried_and_nothing_committed_before(model: LoadedModel, tiny_model: TinyModel) -> None:
    loop, _source, sink, journal = _loop(model, [_records(tiny_model, 0, 0, 100)])
    sink.fail_flushes = 3
    _run_batch(loop)
    assert journal.count("flush-failed") == 3
    assert (
        journal.index("commit") > journal.index("flush") > max(i for i, e in enumerate(journal) if e == "flush-failed")
    )
    assert loop.metrics.publish_failures._value.get() == 3
    assert loop.metrics.broker_errors._value.get() == 3


def test_dead_letter_path(model: LoadedModel) -> None:
    bad = [RawRecord("in", 0, 7, 0, b"k", b"{nope"), RawRecord("in", 0, 8, 0, None, None)]
    loop, source, sink, _journal = _loop(model, [bad])
    _run_batch(loop)
    assert [s[0] for s in sink.sent] == ["dlq", "dlq"]
    _topic, value, key, headers = sink.sent[0]
    assert (value, key) == (b"{nope", b"k")
    assert dict(headers)["kestrel.error.reason"] == b"invalid_json"
    assert dict(headers)["kestrel.source.offset"] == b"7"
    assert sink.sent[1][1] is None and dict(sink.sent[1][3])["kestrel.error.reason"] == b"empty"
    assert source.commits == [{("in", 0): 9}]
    assert loop.metrics.dead_letters._value.get() == 2
    rejected = {
        r: loop.metrics.registry.get_sample_value("kestrel_rejected_total", {"reason": r})
        for r in ("invalid_json", "empty")
    }
    assert rejected == {"invalid_json": 1, "empty": 1}


def test_anomalies_are_counted_per_nearest_class(model: LoadedModel, tiny_model: TinyModel) -> None:
    bad = [RawRecord("in", 0, 100 + i, 0, None, b"{nope") for i in range(3)]
    loop, _source, sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 60) + bad])
    _run_batch(loop)
    published = Counter(
        orjson.loads(value)["nearest_class"] for topic, value, _key, _headers in sink.sent if topic == "out"
    )
    assert published and sum(published.values()) > 1  # several anomalies, so a per-batch count is tested
    counted = {
        c: loop.metrics.registry.get_sample_value("kestrel_anomalies_total", {"nearest_class": c}) for c in published
    }
    assert counted == dict(published)
    assert loop.metrics.registry.get_sample_value("kestrel_rejected_total", {"reason": "invalid_json"}) == 3


def test_scoring_time_counts_score_batch_and_nothing_else(
    model: LoadedModel, tiny_model: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that only moves inside score_batch (1 s a call) and inside the sink's sends and
    # flushes (10 s each): the metric must count exactly the scoring seconds.
    clock = [0.0]

    class Clock:
        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

        @staticmethod
        def perf_counter() -> float:
            return clock[0]

    def slow(advance: float, call: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            clock[0] += advance
            return call(*args, **kwargs)

        return timed

    monkeypatch.setattr(loop_module, "time", Clock())
    monkeypatch.setattr(loop_module, "score_batch", slow(1.0, loop_module.score_batch))
    loop, _source, sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 50), _records(tiny_model, 0, 50, 50)])
    monkeypatch.setattr(sink, "send", slow(10.0, sink.send))
    monkeypatch.setattr(sink, "flush", slow(10.0, sink.flush))
    for _ in range(3):
        loop.run_once()
    registry = loop.metrics.registry
    assert registry.get_sample_value("kestrel_batch_processing_seconds_count") == 2
    assert registry.get_sample_value("kestrel_scoring_seconds_total") == 2.0
    batches = registry.get_sample_value("kestrel_batch_processing_seconds_sum")
    assert batches is not None and batches > 2.0  # the batch time does include the sink's


def test_failed_commit_is_retried_with_the_next_batch(model: LoadedModel, tiny_model: TinyModel) -> None:
    dead_letters = [RawRecord("in", 0, 10 + i, 0, None, b"not json") for i in range(10)]  # outputs for sure
    loop, source, _sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 10), dead_letters])
    source.fail_commits = 1
    loop.run_once()  # batch 1 in flight
    loop.run_once()  # batch 2 in flight, batch 1 acknowledged: its commit fails
    assert source.commits == [] and loop.uncommitted == {("in", 0): 10}
    assert not loop.health.ready
    loop.run_once()  # batch 2 acknowledged: one commit covers both
    assert source.commits == [{("in", 0): 20}] and loop.uncommitted == {}
    assert loop.health.ready


def test_revoke_commits_processed_offsets(model: LoadedModel, tiny_model: TinyModel) -> None:
    loop, source, _sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 10)])
    source.fail_commits = 1
    _run_batch(loop)
    assert source.on_revoked is not None and source.commits == []
    source.on_revoked([("in", 0)])
    assert source.commits == [{("in", 0): 10}] and loop.uncommitted == {}


def test_revoke_finishes_the_batch_in_flight_and_commits_it(model: LoadedModel, tiny_model: TinyModel) -> None:
    loop, source, sink, journal = _loop(model, [_records(tiny_model, 0, 0, 10) + _records(tiny_model, 1, 0, 4)])
    loop.run_once()
    assert sink.pending and source.commits == []
    assert source.on_revoked is not None
    source.on_revoked([("in", 0)])
    assert journal[-2:] == ["flush", "commit"] and sink.pending == 0
    assert source.commits == [{("in", 0): 10}]  # the revoked partition, before its new owner reads it
    loop.run_once()
    assert source.commits[-1] == {("in", 1): 4} and loop.uncommitted == {}


def test_stop_finishes_and_closes(model: LoadedModel, tiny_model: TinyModel) -> None:
    batches = [_records(tiny_model, 0, i * 10, 10) for i in range(3)]
    loop, source, _sink, journal = _loop(model, batches)
    stopper = threading.Timer(0.5, loop.request_stop)
    stopper.start()
    assert loop.run() is True
    assert source.commits[-1] == {("in", 0): 30}
    assert source.closed and journal[-1] == "sink-closed"
    assert not loop.health.ready and not loop.health.alive


@pytest.mark.parametrize("broker_up", [True, False], ids=["producer-ready", "producer-not-ready"])
def test_run_prepares_the_producer_first_and_goes_on_when_it_cannot(
    model: LoadedModel, tiny_model: TinyModel, broker_up: bool, caplog: pytest.LogCaptureFixture
) -> None:
    loop, source, sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 10)])
    sink.fail_flushes = 0 if broker_up else 1  # prepare fails as this flush would; the flush retries
    stopper = threading.Timer(0.5, loop.request_stop)
    stopper.start()
    with caplog.at_level("WARNING", logger="worker.loop"):
        assert loop.run() is True
    assert sink.prepared == [("out", "dlq")]
    assert source.commits[-1] == {("in", 0): 10} and len(sink.delivered) == len(sink.sent) > 0
    warned = [r for r in caplog.records if r.getMessage() == "output_producer_not_ready"]
    assert len(warned) == (0 if broker_up else 1)


def test_stop_with_broker_down_gives_up_without_commit(model: LoadedModel, tiny_model: TinyModel) -> None:
    loop, source, sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 10)])
    sink.fail_flushes = 10**9
    loop.request_stop()
    loop.run_once()
    assert loop.run() is False  # a batch was given up: not a clean stop (it is replayed, not lost)
    assert source.commits == []


def test_model_swap_happens_between_batches(model: LoadedModel, tiny_model: TinyModel) -> None:
    loop, _source, _sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 5), _records(tiny_model, 0, 5, 5)])
    loop.run_once()
    swapped = replace(model, detector=replace(model.detector, version="v-next"))
    loop.swap_model(swapped)
    assert loop.model is model
    loop.run_once()
    assert loop.model is swapped
    assert loop.metrics.model_reloads._value.get() == 1
    assert 'kestrel_model_info{version="v-next"} 1.0' in _exposition(loop)


def test_a_swap_to_a_model_whose_events_need_more_is_logged_as_a_warning(
    model: LoadedModel, tiny_model: TinyModel, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: a reload that made a field required was silent, and then every event went
    to the dead-letter topic as ``missing_field`` with nothing saying why."""
    loop, _source, _sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 5)])
    loop.run_once()
    spec = model.detector.spec
    stricter = copy.copy(model.detector.featurizer)
    stricter.spec = spec.model_copy(update={"optional": [], "id_field": None})
    loop.swap_model(replace(model, detector=replace(model.detector, featurizer=stricter, version="v-next")))
    loop.run_once()
    warned = [r for r in caplog.records if r.getMessage() == "model_swapped_spec_changed"]
    expected = [f"newly required: {', '.join(sorted(spec.optional))}"] if spec.optional else []
    if spec.id_field is not None:
        expected.append(f"id_field: {spec.id_field!r} -> None")
    assert expected and [getattr(r, "changes", None) for r in warned] == [expected]


def test_control_records_after_the_last_record_are_committed_past_once_idle(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    """Found in review: a transactional producer's commit marker takes the offset after its
    records and is never handed out; the worker committed last record + 1, one short for good (lag
    1, liveness failing with nothing to do). Idle, it commits the consumer's position past it."""
    journal: list[str] = []
    batch = _records(tiny_model, 0, 0, 10, attack=False) + _records(tiny_model, 1, 0, 4, attack=False)
    source = FakeSource(journal, [batch], ends={("in", 0): 11})
    config = replace(CONFIG, lag_interval_s=0.0)
    loop = WorkerLoop(
        lambda r, a: source, FakeSink(journal), model, WorkerMetrics(CollectorRegistry()), HealthState(), config
    )
    for _ in range(5):
        loop.run_once()
    # the records first (last record + 1), then, idle with a lag of one, the position past the marker
    assert source.commits == [{("in", 0): 10, ("in", 1): 4}, {("in", 0): 11}]
    assert 'kestrel_consumer_lag{partition="0",topic="in"} 0.0' in _exposition(loop)


def _exposition(loop: WorkerLoop) -> str:
    return generate_latest(loop.metrics.registry).decode()


class FlakySource(FakeSource):
    """The second poll of a batch fails: records of the first poll are already past the position."""

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        if self.polls == 1:  # the fake counts its polls
            self.polls += 1
            raise BrokerError("connection lost mid-batch")
        return super().poll(max_records, timeout_ms)


def test_a_poll_error_mid_batch_keeps_the_records_already_polled(model: LoadedModel, tiny_model: TinyModel) -> None:
    journal: list[str] = []
    first = _records(tiny_model, 0, 0, 5)
    source = FlakySource(journal, [first, _records(tiny_model, 0, 5, 5)])
    config = replace(CONFIG, batch_wait_ms=1000, batch_size=100)
    loop = WorkerLoop(lambda revoked, assigned: source, FakeSink(journal), model,
                      WorkerMetrics(CollectorRegistry()), HealthState(), config)  # fmt: skip
    assert loop.run_once() == 5  # the five records of the first poll are processed, not dropped
    assert loop.run_once() == 5
    assert source.commits[-1] == {("in", 0): 5}
    loop.run_once()
    assert source.commits[-1] == {("in", 0): 10}


def test_a_dead_letter_too_big_to_deliver_goes_out_without_its_value(model: LoadedModel) -> None:
    huge = RawRecord("in", 0, 0, 0, b"k", b"x" * CONFIG.max_request_bytes)
    small = RawRecord("in", 0, 1, 0, b"k", b"y" * 70_000)  # too large for the worker, small enough to keep
    loop, source, sink, _ = _loop(model, [[huge, small]])
    _run_batch(loop)
    (topic, value, key, headers), (_, kept, _, kept_headers) = sink.delivered
    assert topic == "dlq" and value is None and key == b"k"
    assert dict(headers)["kestrel.error.value_dropped"] == str(CONFIG.max_request_bytes).encode()
    assert dict(headers)["kestrel.error.reason"] == b"too_large"
    assert kept == small.value and "kestrel.error.value_dropped" not in dict(kept_headers)
    assert source.commits[-1] == {("in", 0): 2}


def test_a_crash_closes_the_consumer_and_re_raises(model: LoadedModel, tiny_model: TinyModel) -> None:
    bad = RawRecord("in", 0, 5, 0, None, b"not json")  # always dead-lettered, so send is always called
    loop, source, sink, journal = _loop(model, [[*_records(tiny_model, 0, 0, 5), bad]])

    def broken_send(record: OutputRecord) -> None:
        raise RuntimeError("programming error")

    sink.send = broken_send  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="programming error"):
        loop.run()
    assert source.closed and "sink-closed" in journal
    assert source.commits == []


def test_without_overlap_each_batch_is_acknowledged_and_committed_before_the_next_poll(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    journal: list[str] = []
    source = FakeSource(journal, [_records(tiny_model, 0, 0, 10), _records(tiny_model, 0, 10, 10)])
    config = replace(CONFIG, overlap_batches=False)
    loop = WorkerLoop(lambda revoked, assigned: source, FakeSink(journal), model,
                      WorkerMetrics(CollectorRegistry()), HealthState(), config)  # fmt: skip
    loop.run_once()
    assert journal[-2:] == ["flush", "commit"] and source.commits == [{("in", 0): 10}]
    loop.run_once()
    assert source.commits == [{("in", 0): 10}, {("in", 0): 20}]


def test_a_batch_in_flight_is_acknowledged_before_the_next_is_committed(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    """Overlap never reorders: batch 2's offsets wait for batch 1's outputs, however long they take."""
    dead_letters = [RawRecord("in", 0, 10 + i, 0, None, b"not json") for i in range(10)]  # outputs for sure
    loop, source, sink, journal = _loop(model, [_records(tiny_model, 0, 0, 10), dead_letters])
    loop.run_once()  # batch 1 in flight
    sink.fail_flushes = 4
    loop.run_once()  # batch 2 scored and sent; batch 1's flush fails four times, then succeeds
    assert journal.count("flush-failed") == 4
    assert source.commits == [{("in", 0): 10}]
    loop.run_once()
    assert source.commits[-1] == {("in", 0): 20} and sink.pending == 0


def test_a_batch_acknowledged_by_the_time_it_is_sent_is_committed_at_once(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    loop, source, sink, journal = _loop(model, [_records(tiny_model, 0, 0, 10)])
    sink.auto_ack = True  # a producer whose acknowledgements arrive while the batch is scored
    loop.run_once()
    assert "flush" in journal and source.commits == [{("in", 0): 10}] and sink.pending == 0


def test_a_revoke_leaves_an_unacknowledged_batch_to_the_partitions_next_owner(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    loop, source, sink, _journal = _loop(model, [_records(tiny_model, 0, 0, 10) + _records(tiny_model, 1, 0, 4)])
    loop.run_once()
    sink.fail_flushes = 1  # not acknowledged within the rebalance's short wait
    assert source.on_revoked is not None
    source.on_revoked([("in", 0)])
    assert source.commits == [] and sink.pending
    loop.run_once()  # acknowledged now: only the partition still owned is committed
    assert source.commits == [{("in", 1): 4}] and loop.uncommitted == {}


def test_under_load_commits_are_spaced_by_the_interval_and_an_idle_poll_commits_at_once(
    model: LoadedModel, tiny_model: TinyModel
) -> None:
    journal: list[str] = []
    batches = [_records(tiny_model, 0, 10 * i, 10) for i in range(4)]
    source, sink, now = FakeSource(journal, batches), FakeSink(journal), [0.0]
    sink.auto_ack = True  # every batch is acknowledged by the time it is sent: only the interval holds commits
    loop = WorkerLoop(lambda revoked, assigned: source, sink, model, WorkerMetrics(CollectorRegistry()),
                      HealthState(), replace(CONFIG, commit_interval_s=10.0), clock=lambda: now[0])  # fmt: skip
    loop.run_once()
    assert source.commits == [{("in", 0): 10}]  # the first batch commits at once
    now[0] = 5.0
    loop.run_once()
    assert source.commits == [{("in", 0): 10}]  # within the interval: processed, not yet committed
    assert loop.uncommitted == {("in", 0): 20}
    now[0] = 10.0
    loop.run_once()
    assert source.commits == [{("in", 0): 10}, {("in", 0): 30}]  # one commit covers both batches
    now[0] = 11.0
    loop.run_once()
    assert source.commits[-1] == {("in", 0): 30}
    loop.run_once()  # nothing polled: what was processed is committed without waiting for the interval
    assert source.commits[-1] == {("in", 0): 40} and loop.uncommitted == {}
