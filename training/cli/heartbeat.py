"""A progress line every few seconds while a long command runs with its output redirected.

The trainer's progress bar only makes sense on a terminal; in a log file (a CronJob, ``2> fit.log``)
``fit`` would otherwise say nothing for minutes. :class:`Heartbeat` writes
``progress: <stage> (<elapsed> s)`` to a stream every ``interval_s`` seconds from a daemon thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

INTERVAL_S = 5.0


class Heartbeat:
    """Context manager: while inside, one line per ``interval_s`` naming the current :attr:`stage`.

    Set :attr:`stage` as the work moves on; the first line comes after one interval (a command
    that finishes sooner prints nothing).
    """

    def __init__(
        self,
        stream: TextIO,
        stage: str,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stage = stage
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._start = clock()

    def __enter__(self) -> Heartbeat:
        self._start = self._clock()
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            elapsed = self._clock() - self._start
            self._stream.write(f"progress: {self.stage} ({elapsed:.0f} s)\n")
            self._stream.flush()
