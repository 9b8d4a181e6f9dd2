"""The kafka-python producer behind the :class:`worker.outputs.Sink` contract.

Every record sent is kept until the broker acknowledges it. :meth:`KafkaSink.flush` resends what
failed, and sorts failures into three kinds:

- **transient** (broker away, timeouts, leader changes): kept and retried for ever, so an
  outage never loses an output; ``flush`` raises :class:`PublishError`;
- **refused** (the client or broker will never take this record: too large, invalid): retried
  ``max_attempts`` times, then given up and returned by ``flush`` as :class:`Undeliverable`
  (the loop counts and logs them and applies the operator's policy);
- **fatal** (the producer itself is broken: closed, or a non-retriable producer-level error):
  ``flush`` raises :class:`PublishError` with ``fatal=True``; :meth:`reset`
  closes the producer and the next call builds a new one, resending every pending record.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.errors import KafkaError

from detector.kafka_python_quirks import close_producer
from worker.errors import BrokerError, PublishError
from worker.output_guard import OutputRecord
from worker.outputs import NumberedOutputs, Undeliverable

logger = logging.getLogger(__name__)

#: Errors that say *this record* will never be accepted (client-side refusals are ValueError/TypeError).
REFUSED = (
    ValueError,
    TypeError,
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.InvalidRecordError,
    kafka_errors.CorruptRecordError,
)


def is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, REFUSED)


def is_fatal(exc: BaseException) -> bool:
    """A producer-level error no retry of the same producer can clear."""
    if is_refusal(exc):
        return False
    if isinstance(exc, kafka_errors.IllegalStateError):
        return True
    return isinstance(exc, KafkaError) and not getattr(exc, "retriable", False)


@dataclass
class _Pending:
    record: OutputRecord
    number: int
    future: Any = None
    refusals: int = 0
    last_error: BaseException | None = field(default=None)


class KafkaSink:
    """Producer for anomaly records and dead letters that tracks acknowledgements.

    Args:
        make_producer: builds a connected ``KafkaProducer``; raises :class:`BrokerError` when the
            broker cannot be reached (called lazily, again after :meth:`reset`).
        max_attempts: sends of a record the broker or client refuses before it is given up.
    """

    def __init__(self, make_producer: Callable[[], KafkaProducer], max_attempts: int = 3) -> None:
        self._make_producer = make_producer
        self._producer: KafkaProducer | None = None
        self.max_attempts = max_attempts
        self._outputs: NumberedOutputs[_Pending] = NumberedOutputs()
        self._fatal: BaseException | None = None
        #: Topics whose metadata did not come within ``max_block_ms``: their records wait for the
        #: next flush instead of blocking once per record.
        self._stalled: set[str] = set()

    @property
    def pending(self) -> int:
        """Records sent but neither acknowledged nor given up."""
        return len(self._outputs.entries)

    def send(self, record: OutputRecord) -> None:
        """Queue one record; delivery is confirmed (or given up) by :meth:`flush`. Never raises."""
        entry = _Pending(record, self._outputs.next_number())
        self._outputs.entries.append(entry)
        if self._producer is not None and self._fatal is None:
            self._dispatch(entry)

    def mark(self) -> int:
        """The number the next record sent will get."""
        return self._outputs.mark()

    def acknowledged(self, through: int) -> bool:
        """Whether every record numbered below ``through`` is acknowledged or given up (no wait)."""
        self._settle()
        return self._outputs.settled_before(through)

    def _dispatch(self, entry: _Pending) -> None:
        if entry.record.topic in self._stalled or self._producer is None:
            return
        r = entry.record
        try:
            entry.future = self._producer.send(r.topic, value=r.value, key=r.key, headers=r.headers)
        except kafka_errors.KafkaTimeoutError as exc:  # no metadata for the topic (yet)
            entry.future, entry.last_error = None, exc
            self._stalled.add(r.topic)  # one wait per topic and flush, not one per record
        except (KafkaError, ValueError, TypeError) as exc:
            entry.future, entry.last_error = None, exc
            if is_refusal(exc):
                entry.refusals += 1
            elif is_fatal(exc):
                self._fatal = exc

    def flush(self, timeout_s: float, through: int | None = None) -> list[Undeliverable]:
        """Wait until every record numbered below ``through`` (default: every record sent) is
        acknowledged or given up; records sent later are not waited for.

        Returns:
            those of them given up (refused ``max_attempts`` times).

        Raises:
            PublishError: some of them are neither acknowledged nor given up; they stay pending
                and are resent by the next call. ``fatal`` says the producer must be :meth:`reset`.
        """
        self._connect()
        self._stalled.clear()
        head = self._outputs.before(through)
        for entry in head:
            if entry.future is None or (entry.future.is_done and entry.future.failed()):
                self._dispatch(entry)
        try:
            if self._producer is not None and self._fatal is None:
                if through is None:
                    self._producer.flush(timeout=timeout_s)
                else:
                    _wait_for(head, timeout_s)
        except KafkaError as exc:
            self._fatal = self._fatal or (exc if is_fatal(exc) else None)
        self._settle()
        return self._outputs.finish_flush(through, lambda e: e.last_error, self._fatal is not None)

    def prepare(self, topics: Sequence[str], timeout_s: float) -> None:
        """Connect the producer and fetch ``topics``' metadata (see :class:`worker.outputs.Sink`);
        each topic waits at most the producer's ``max_block_ms`` (``timeout_s`` is not used)."""
        self._connect()
        assert self._producer is not None
        for topic in topics:
            try:
                self._producer.partitions_for(topic)
            except KafkaError as exc:
                raise PublishError(f"no metadata for topic {topic!r}: {type(exc).__name__}: {exc}") from exc

    def _connect(self) -> None:
        if self._producer is not None:
            return
        try:
            self._producer = self._make_producer()
        except BrokerError as exc:
            raise PublishError(f"{self.pending} records not sent: {exc}") from exc

    def _settle(self) -> None:
        """Drop acknowledged entries, count refusals, give up on records refused too often."""
        still: list[_Pending] = []
        for entry in self._outputs.entries:
            future = entry.future
            if future is not None and future.is_done:
                if future.succeeded():
                    continue
                entry.last_error, entry.future = future.exception, None
                if is_refusal(future.exception):
                    entry.refusals += 1
                elif is_fatal(future.exception):
                    self._fatal = future.exception
            if entry.refusals >= self.max_attempts:
                self._outputs.given_up.add(entry.number, Undeliverable(entry.record, repr(entry.last_error)))
            else:
                still.append(entry)
        self._outputs.entries = still

    def reset(self) -> None:
        """Close the producer; the next :meth:`flush` builds a new one and resends everything pending."""
        producer, self._producer, self._fatal = self._producer, None, None
        for entry in self._outputs.entries:
            entry.future = None
        if producer is not None:
            close_producer(producer, 0.5)

    def close(self, timeout_s: float) -> None:
        """Close the producer (pending records are abandoned; they were never committed)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            close_producer(producer, timeout_s)


def _wait_for(entries: list[_Pending], timeout_s: float) -> None:
    """Wait (at most ``timeout_s`` in all) until each entry's send has an outcome.

    The outcome itself is read from the future by ``_settle``: ``get`` raises the record's own
    error (any exception type the client hands back) or a timeout, neither of which is an error here.
    """
    deadline = time.monotonic() + timeout_s
    for entry in entries:
        future = entry.future
        left = deadline - time.monotonic()
        if future is None or future.is_done:
            continue
        if left <= 0:
            return
        with contextlib.suppress(Exception):  # classified by _settle, from the future itself
            future.get(timeout=left)
