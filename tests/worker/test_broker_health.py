"""When a Kafka client is rebuilt, backoff, and whether the broker answers, with an injected clock."""

from __future__ import annotations

import logging

import pytest

from worker.broker_health import Backoff, BrokerStatus, ClientHealth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fatal_error_asks_for_a_rebuild_at_once() -> None:
    health = ClientHealth("producer", clock=Clock())
    health.failed(fatal=True)
    assert health.needs_rebuild()
    health.rebuilt()
    assert not health.needs_rebuild() and health.rebuilds == 1


def test_repeated_failures_ask_for_a_rebuild_only_after_enough_time() -> None:
    clock = Clock()
    health = ClientHealth("consumer", rebuild_after_failures=3, rebuild_after_s=10.0, clock=clock)
    for _ in range(5):
        health.failed()
    assert not health.needs_rebuild()  # many failures, but within 10 s: an outage's first moments
    clock.now += 10.0
    assert health.needs_rebuild()
    health.rebuilt()
    assert health.rebuild_after_s == 20.0  # the next rebuild waits longer
    for _ in range(3):
        health.failed()
    clock.now += 15.0
    assert not health.needs_rebuild()
    clock.now += 5.0
    assert health.needs_rebuild()


def test_success_resets_the_count_and_the_delay() -> None:
    clock = Clock()
    health = ClientHealth("consumer", rebuild_after_failures=2, rebuild_after_s=1.0, clock=clock)
    health.failed()
    health.rebuilt()
    health.succeeded()
    health.failed()
    clock.now += 5
    assert not health.needs_rebuild() and health.rebuild_after_s == 1.0


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    clock = Clock()
    backoff = Backoff(0.5, 2.0, clock)
    assert backoff.ready()
    assert [backoff.failed() for _ in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert not backoff.ready() and backoff.wait_s() == 2.0
    clock.now += 2.0
    assert backoff.ready()
    backoff.succeeded()
    assert backoff.failed() == 0.5


class Errors:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, amount: float = 1) -> None:
        self.count += int(amount)


def test_broker_status_counts_every_failure_and_logs_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    clock, errors = Clock(), Errors()
    status = BrokerStatus(errors, clock)
    assert status.ok and status.last_ok == 1000.0
    with caplog.at_level(logging.INFO, logger="worker.loop"):
        status.failed("poll_failed", RuntimeError("down"), retry_in_s=0.2)
        status.failed("commit_failed", RuntimeError("still down"))
        clock.now += 3.0
        status.succeeded()
        status.succeeded()
    assert errors.count == 2 and status.ok and status.last_ok == 1003.0
    assert [(r.getMessage(), getattr(r, "error", None)) for r in caplog.records] == [
        ("poll_failed", "down"),
        ("broker_recovered", None),
    ]
    assert caplog.records[0].retry_in_s == 0.2  # type: ignore[attr-defined]
