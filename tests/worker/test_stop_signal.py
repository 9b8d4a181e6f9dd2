"""The stop request: its first reason, one drain deadline, and waits that end at the stop."""

from __future__ import annotations

import threading
import time

from worker.stop_signal import StopSignal


def test_the_first_reason_and_the_first_deadline_are_kept() -> None:
    stop = StopSignal(drain_s=20.0)
    assert not stop.is_set() and stop.reason == "not stopped"
    stop.request("SIGTERM")
    deadline = stop.deadline()
    stop.request("undeliverable_output")
    assert stop.is_set() and stop.reason == "SIGTERM"
    assert stop.deadline() == deadline and 19.0 < deadline - time.monotonic() <= 20.0


def test_the_deadline_is_fixed_when_first_asked_for_even_before_a_request() -> None:
    stop = StopSignal(drain_s=5.0)
    deadline = stop.deadline()
    time.sleep(0.01)
    stop.request("signal")
    assert stop.deadline() == deadline


def test_wait_ends_at_a_request_and_pause_sleeps_even_when_stopping() -> None:
    stop = StopSignal(drain_s=1.0)
    threading.Timer(0.05, stop.request, args=("signal",)).start()
    start = time.monotonic()
    stop.wait(10.0)
    assert time.monotonic() - start < 5.0
    start = time.monotonic()
    stop.wait(10.0)  # already set: returns at once
    stop.pause(0.05)  # a backoff during the drain still waits
    assert 0.05 <= time.monotonic() - start < 5.0
