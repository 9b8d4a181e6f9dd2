"""A stop request and the one drain deadline of the whole stop (:class:`StopSignal`, no Kafka)."""

from __future__ import annotations

import threading
import time


class StopSignal:
    """Set once, from any thread; the drain deadline is ``drain_s`` after the stop
    was first seen, by a request or by the loop asking for it."""

    def __init__(self, drain_s: float) -> None:
        self._event = threading.Event()
        self._drain_s = drain_s
        self._deadline: float | None = None
        self.reason = "not stopped"
        # Never taken in a signal handler (the worker's handler starts a thread that asks).
        self._lock = threading.Lock()

    def request(self, reason: str) -> None:
        """Ask for a stop; the first reason given is kept (found in review: two threads asking at
        once could both pass the check, and a signal's reason overwrite the loop's)."""
        with self._lock:
            if not self._event.is_set():
                self.reason = reason
            self._fix_deadline()
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def deadline(self) -> float:
        """The drain deadline (``time.monotonic``), fixed the first time it is asked for."""
        with self._lock:
            return self._fix_deadline()

    def _fix_deadline(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + self._drain_s
        return self._deadline

    def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if a stop is requested meanwhile."""
        self._event.wait(seconds)

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` even when stopping (a retry's backoff during the drain: waiting on the
        stop, already set, would not wait at all)."""
        if self._event.is_set():
            time.sleep(seconds)
        else:
            self._event.wait(seconds)
