"""The :class:`worker.outputs.Sink` contract on librdkafka's producer (``confluent-kafka``, extra
``[fast]``; the kafka-python one is :mod:`worker.kafka_sink`). Delivery reports are sorted into
acknowledged, refused (given up after ``max_attempts``), fatal (the producer is rebuilt) and
transient (resent for ever); the loop commits an offset only once every output before it is settled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from worker.confluent_config import common_config
from worker.errors import BrokerError, PublishError
from worker.output_guard import OutputRecord
from worker.outputs import NumberedOutputs, Undeliverable
from worker.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: Delivery errors that say *this record* will never be accepted.
REFUSED_CODES = frozenset(
    getattr(KafkaError, name)
    for name in (
        "MSG_SIZE_TOO_LARGE",
        "INVALID_MSG",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_RECORD",
        "_INVALID_ARG",
        "TOPIC_EXCEPTION",
        "_MSG_SIZE_TOO_LARGE",
    )
    if hasattr(KafkaError, name)
)


@dataclass
class _Pending:
    record: OutputRecord
    number: int
    state: str = "unsent"  # unsent -> sent -> acked | failed
    refusals: int = 0
    error: KafkaError | Exception | None = None
    generation: int = 0


def make_confluent_producer(settings: KafkaSettings) -> Producer:
    """A producer for the worker's outputs (acks=all, idempotent, ``max_request_bytes`` per request)."""
    config = {
        **common_config(settings),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.max.bytes": settings.max_request_bytes,
    }
    try:
        return Producer(config)
    except (KafkaException, ValueError) as exc:
        raise BrokerError(f"cannot create the producer: {exc}") from exc


class ConfluentSink:
    """The :class:`worker.outputs.Sink` contract on a librdkafka producer (see the module docstring).

    Args:
        make_producer: builds the producer (lazily, again after :meth:`reset`).
        max_attempts: refusals of a record before it is given up.
    """

    def __init__(self, make_producer: Callable[[], Producer], max_attempts: int = 3) -> None:
        self._make_producer = make_producer
        self._producer: Producer | None = None
        self.max_attempts = max_attempts
        self._outputs: NumberedOutputs[_Pending] = NumberedOutputs()
        self._fatal: KafkaError | None = None
        self._generation = 0

    @property
    def pending(self) -> int:
        return len(self._outputs.entries)

    def send(self, record: OutputRecord) -> None:
        """Queue one record; delivery is confirmed (or given up) by :meth:`flush`. Never raises."""
        entry = _Pending(record, self._outputs.next_number())
        self._outputs.entries.append(entry)
        if self._producer is not None:
            self._dispatch(entry)

    def mark(self) -> int:
        """The number the next record sent will get."""
        return self._outputs.mark()

    def acknowledged(self, through: int) -> bool:
        """Whether every record numbered below ``through`` is acknowledged or given up (no wait)."""
        self._serve(0.0)  # runs the delivery reports that arrived
        self._settle()
        return self._outputs.settled_before(through)

    def _serve(self, timeout_s: float, flush: bool = False) -> None:
        """Run the producer's callbacks for up to ``timeout_s`` (``flush``: until it is empty).

        Without an ``error_cb``, librdkafka's fatal errors (e.g. an idempotent producer's sequence
        out of step with a broker that lost its state) are raised here: kept as fatal, so the
        next flush says the producer must be reset instead of the worker crashing (until then
        the broken producer is left alone: it would raise the same error again)."""
        if self._producer is None or self._fatal is not None:
            return
        try:
            if flush:
                self._producer.flush(timeout_s)
            else:
                self._producer.poll(timeout_s)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is None or error.fatal():
                self._fatal = error or KafkaError(KafkaError._FATAL, str(exc), fatal=True)
            logger.warning("producer_error", extra={"error": str(exc)})

    def _dispatch(self, entry: _Pending) -> None:
        assert self._producer is not None
        r = entry.record
        entry.state, entry.generation = "sent", self._generation
        try:
            headers: list[tuple[str, str | bytes | None]] = list(r.headers)
            self._producer.produce(r.topic, value=r.value, key=r.key, headers=headers, on_delivery=self._report(entry))
        except BufferError:  # the local queue is full: sent again by the next flush
            entry.state = "unsent"
        except (KafkaException, ValueError, TypeError) as exc:
            entry.state, entry.error = "failed", exc
            code = exc.args[0].code() if isinstance(exc, KafkaException) and exc.args else None
            if code is None or code in REFUSED_CODES:
                entry.refusals += 1

    def _report(self, entry: _Pending) -> Callable[[KafkaError | None, Message], None]:
        generation = self._generation

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                entry.state = "acked"  # delivered, even by a producer since reset
            elif generation == entry.generation:
                entry.state, entry.error = "failed", error
                if error.code() in REFUSED_CODES:
                    entry.refusals += 1
                elif error.fatal():
                    self._fatal = error

        return delivered

    def prepare(self, topics: Sequence[str], timeout_s: float) -> None:
        """Build the producer (its idempotence handshake starts at once, in librdkafka's threads)
        and fetch ``topics``' metadata, each within ``timeout_s`` (see :class:`worker.outputs.Sink`)."""
        producer = self._connected()
        for topic in topics:
            try:
                error = producer.list_topics(topic, timeout=timeout_s).topics[topic].error
            except (KafkaException, KeyError) as exc:
                raise PublishError(f"no metadata for topic {topic!r}: {exc}") from exc
            if error is not None:
                raise PublishError(f"no metadata for topic {topic!r}: {error.str()}")

    def _connected(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = self._make_producer()
            except BrokerError as exc:
                raise PublishError(f"{self.pending} records not sent: {exc}") from exc
        return self._producer

    def flush(self, timeout_s: float, through: int | None = None) -> list[Undeliverable]:
        """Wait until every record numbered below ``through`` (default: every record sent) is
        acknowledged or given up; return those of them given up (see :class:`worker.outputs.Sink`).

        Raises:
            PublishError: some of them are neither; ``fatal`` says the producer must be reset.
        """
        self._connected()
        assert self._producer is not None
        head = self._outputs.before(through)
        for entry in head:
            if entry.state in ("unsent", "failed") and entry.refusals < self.max_attempts:
                self._dispatch(entry)
        if through is None:
            self._serve(timeout_s, flush=True)
        else:  # delivery reports of these records only: later ones stay in flight
            deadline = time.monotonic() + timeout_s
            while (
                self._fatal is None
                and any(e.state == "sent" for e in head)
                and (left := deadline - time.monotonic()) > 0
            ):
                self._serve(min(left, 0.05))
        self._settle()
        return self._outputs.finish_flush(through, lambda e: e.error or self._fatal, self._fatal is not None)

    def _settle(self) -> None:
        """Drop acknowledged records; give up on those refused ``max_attempts`` times."""
        still: list[_Pending] = []
        for entry in self._outputs.entries:
            if entry.state == "acked":
                continue
            if entry.refusals >= self.max_attempts:
                self._outputs.given_up.add(entry.number, Undeliverable(entry.record, repr(entry.error)))
            else:
                still.append(entry)
        self._outputs.entries = still

    def reset(self) -> None:
        """Drop the producer; the next flush builds a new one and resends everything pending."""
        self._producer, self._fatal = None, None
        self._generation += 1
        for entry in self._outputs.entries:
            entry.state = "unsent"

    def close(self, timeout_s: float) -> None:
        self._serve(timeout_s, flush=True)
        self._producer = None
