"""Waiting for a batch's outputs through an outage: retries, a producer rebuilt, the stop deadline,
and the undeliverable policy (the loop's end-to-end cases are in test_loop_faults.py)."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from tests.worker.fakes import FakeSink
from worker.broker_health import BrokerStatus
from worker.loop_config import LoopConfig
from worker.metrics import HealthState, WorkerMetrics
from worker.outcomes import RawRecord
from worker.output_flush import OutputFlusher
from worker.output_guard import OutputRecord
from worker.outputs import Undeliverable
from worker.stop_signal import StopSignal

CONFIG = LoopConfig(
    "out", "dlq", backoff_initial_s=0.001, backoff_max_s=0.002, rebuild_after_failures=2, rebuild_after_s=0.0
)
SOURCE = RawRecord("in", 0, 7, 0, None, b"{}")


def _flusher(sink: FakeSink, config: LoopConfig = CONFIG) -> tuple[OutputFlusher, WorkerMetrics, StopSignal, list[str]]:
    metrics = WorkerMetrics(CollectorRegistry())
    stop = StopSignal(config.shutdown_timeout_s)
    calls: list[str] = []
    status = BrokerStatus(metrics.broker_errors)
    flusher = OutputFlusher(sink, config, metrics, HealthState(), status, stop, lambda: calls.append("between"))
    return flusher, metrics, stop, calls


def _value(counter: object) -> float:
    return counter._value.get()  # type: ignore[attr-defined, no-any-return]


def test_failed_flushes_are_retried_and_a_producer_that_keeps_failing_is_rebuilt() -> None:
    sink = FakeSink()
    sink.send(OutputRecord("anomaly", "out", b"k", b"v", [], SOURCE))
    sink.fail_flushes = 3
    flusher, metrics, _, calls = _flusher(sink)
    assert flusher.until_acked(sink.mark()) == []
    assert sink.delivered == [("out", b"v", b"k", [])]
    assert _value(metrics.publish_failures) == 3 and calls == ["between"] * 3
    assert sink.resets == 1  # two failures in a row (rebuild_after_failures=2), counting then starts over
    assert _value(metrics.broker_errors) == 3


def test_a_fatal_flush_rebuilds_the_producer_at_once() -> None:
    sink = FakeSink()
    sink.fatal_flushes = 1
    flusher, _, _, _ = _flusher(sink)
    assert flusher.until_acked(sink.mark()) == []
    assert sink.resets == 1


def test_past_the_stop_deadline_the_batch_is_given_up(caplog: pytest.LogCaptureFixture) -> None:
    sink = FakeSink()
    sink.send(OutputRecord("anomaly", "out", b"k", b"v", [], SOURCE))
    sink.fail_flushes = 10**6
    flusher, _, stop, _ = _flusher(sink, LoopConfig("out", "dlq", backoff_initial_s=0.01, shutdown_timeout_s=0.2))
    stop.request("SIGTERM")
    start = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="worker.loop"):
        assert flusher.until_acked(sink.mark()) is None
    assert time.monotonic() - start < 5.0
    assert [r.getMessage() for r in caplog.records] == ["stop_with_unacknowledged_outputs"]


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_outputs_given_up_are_counted_and_the_policy_applied(policy: str) -> None:
    flusher, metrics, stop, _ = _flusher(FakeSink(), LoopConfig("out", "dlq", undeliverable=policy))
    given_up = [
        Undeliverable(OutputRecord("dead_letter", "dlq", None, b"x" * 10, [], SOURCE), "too large"),
        Undeliverable(OutputRecord("anomaly", "out", None, b"y", [], SOURCE), "invalid"),
    ]
    assert flusher.refuse([]) is False and not stop.is_set()
    assert flusher.refuse(given_up) is (policy == "stop")
    assert _value(metrics.dead_letters_undeliverable) == 1 and _value(metrics.anomalies_undeliverable) == 1
    assert stop.is_set() is (policy == "stop")
    assert stop.reason == ("undeliverable_output" if policy == "stop" else "not stopped")
