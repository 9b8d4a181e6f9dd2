"""Health of the two Kafka clients: failure counting, when to rebuild a client, backoff, and
whether the broker answers (no Kafka)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)
_loop_logger = logging.getLogger("worker.loop")


class Counting(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class ClientHealth:
    """Consecutive failures of one client and whether it should be closed and rebuilt.

    A client is rebuilt when it reports a fatal error, or after ``rebuild_after_failures``
    consecutive failures spanning at least ``rebuild_after_s`` (a long outage costs a rebuild now
    and then, which is harmless; a client wedged in a state it cannot leave is replaced). After a
    rebuild the next one waits twice as long, up to ``max_rebuild_after_s``.

    Args:
        clock: monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        name: str,
        rebuild_after_failures: int = 3,
        rebuild_after_s: float = 10.0,
        max_rebuild_after_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.rebuild_after_failures = rebuild_after_failures
        self._base_after_s = rebuild_after_s
        self.rebuild_after_s = rebuild_after_s
        self.max_rebuild_after_s = max_rebuild_after_s
        self._clock = clock
        self.failures = 0
        self._first_failure: float | None = None
        self._fatal = False
        self.rebuilds = 0

    def failed(self, fatal: bool = False) -> None:
        if self.failures == 0:
            self._first_failure = self._clock()
        self.failures += 1
        self._fatal = self._fatal or fatal

    def succeeded(self) -> None:
        self.failures = 0
        self._first_failure = None
        self._fatal = False
        self.rebuild_after_s = self._base_after_s

    def needs_rebuild(self) -> bool:
        if self._fatal:
            return True
        if self.failures < self.rebuild_after_failures or self._first_failure is None:
            return False
        return self._clock() - self._first_failure >= self.rebuild_after_s

    def rebuilt(self) -> None:
        """Note a rebuild: counting starts over, and the next rebuild waits longer."""
        logger.warning("kafka_client_rebuilt", extra={"client": self.name, "after_failures": self.failures})
        self.rebuilds += 1
        self.failures = 0
        self._first_failure = None
        self._fatal = False
        self.rebuild_after_s = min(self.rebuild_after_s * 2, self.max_rebuild_after_s)


class Backoff:
    """Exponential backoff between attempts (``initial_s`` doubling up to ``max_s``)."""

    def __init__(self, initial_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._clock = clock
        self._delay = initial_s
        self._next = 0.0

    def ready(self) -> bool:
        return self._clock() >= self._next

    def wait_s(self) -> float:
        return max(0.0, self._next - self._clock())

    def failed(self) -> float:
        """Schedule the next attempt; return the delay chosen."""
        delay = self._delay
        self._next = self._clock() + delay
        self._delay = min(self._delay * 2, self.max_s)
        return delay

    def succeeded(self) -> None:
        self._delay = self.initial_s
        self._next = 0.0


class BrokerStatus:
    """Whether the broker answered the worker's last request; each change is logged once (under
    ``worker.loop``, with the loop's other events), each failure counted.

    Args:
        errors: the counter of broker errors (``kestrel_broker_errors``).
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, errors: Counting, clock: Callable[[], float] = time.monotonic) -> None:
        self._errors = errors
        self._clock = clock
        self.ok = True
        #: When the broker last answered (the loop probes it when idle for long).
        self.last_ok = clock()

    def failed(self, event: str, exc: Exception, **fields: object) -> None:
        self._errors.inc()
        if self.ok:
            _loop_logger.warning(event, extra={"error": str(exc), **fields})
        self.ok = False

    def succeeded(self) -> None:
        if not self.ok:
            _loop_logger.info("broker_recovered")
        self.ok = True
        self.last_ok = self._clock()
