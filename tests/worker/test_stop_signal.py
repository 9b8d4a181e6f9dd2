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


def test_the_reason_kept_is_that_of_the_request_that_set_the_stop() -> None:
    """Found in review: the signal's helper thread and the loop (the undeliverable-output policy)
    can ask at once; one could pass the check, the other set the stop, and the first overwrite the
    second's reason. Here the loop asks while the signal thread sits between its check and its set."""
    stop = StopSignal(30.0)
    set_by: list[str] = []

    class Interleaved(threading.Event):
        started = False

        def is_set(self) -> bool:
            answer = super().is_set()
            if not Interleaved.started and threading.current_thread().name == "stop-request":
                Interleaved.started = True
                loop = threading.Thread(target=stop.request, args=("undeliverable_output",), name="loop")
                loop.start()
                time.sleep(0.2)  # the loop's request runs now, if nothing holds it back
                threads.append(loop)
            return answer

        def set(self) -> None:
            if not super().is_set():
                set_by.append(threading.current_thread().name)
            super().set()

    threads: list[threading.Thread] = []
    stop._event = Interleaved()
    signal_thread = threading.Thread(target=stop.request, args=("SIGTERM",), name="stop-request")
    signal_thread.start()
    signal_thread.join()
    for thread in threads:
        thread.join()
    assert set_by and {"stop-request": "SIGTERM", "loop": "undeliverable_output"}[set_by[0]] == stop.reason
