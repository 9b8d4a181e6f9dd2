"""The librdkafka client (``confluent-kafka``, extra ``[fast]``) behind the same Source/Sink contracts.

The only module that imports ``confluent_kafka``. Same semantics as :mod:`worker.kafka_io` and
:mod:`worker.kafka_sink` (held to them by one contract suite, tests/worker/test_kafka_contract.py):
manual commits only (``enable.auto.commit=false``, ``enable.auto.offset.store=false``), offsets
committed by the loop after every output before them is acknowledged; delivery reports sorted into
acknowledged, refused (given up after ``max_attempts``), fatal (the producer is rebuilt) and
transient (resent for ever). Fetching, decompression and checksums run on librdkafka's own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import eq
from typing import Any

import orjson
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from worker.errors import BrokerError, CommitError, PublishError
from worker.outcomes import RawRecord
from worker.output_guard import OutputRecord
from worker.outputs import NumberedOutputs, Undeliverable
from worker.rebalance import PartitionsCallback, RevokedCallback
from worker.settings import KafkaSettings

logger = logging.getLogger(__name__)

Partition = tuple[str, int]

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
#: Errors meaning no broker answers (the loop then reports not ready).
DOWN_CODES = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """The settings' security part in librdkafka's names (kafka_io has kafka-python's)."""
    config: dict[str, Any] = {"security.protocol": settings.security_protocol.value}
    if settings.sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.sasl_mechanism.value
        config["sasl.username"] = settings.sasl_username
        if settings.sasl_password is not None:
            config["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_cafile is not None:
        config["ssl.ca.location"] = str(settings.ssl_cafile)
    return config


#: Longest a cached assignment is trusted without asking librdkafka again (it changes only in a
#: rebalance callback, which drops the cache; this bounds the harm of a change it did not report).
ASSIGNMENT_REFRESH_S = 1.0

#: Longest wait for a broker answer on one request (as kafka-python's ``request_timeout_ms``):
#: bounds a commit or a flush during a broker freeze.
SOCKET_TIMEOUT_MS = 7000

#: How long librdkafka postpones a partition's next fetch once the consumer's prefetch queue is
#: full (``queued.max.messages.kbytes``, 64 MB over all partitions, or ``queued.min.messages``,
#: 100,000 messages: the first limit reached). librdkafka's default, 1000 ms, outlasts the time a
#: busy worker takes to drain that queue (about 1 s at 75,000 events/s of 900 bytes, less when
#: faster): under a backlog it then found the queue empty and waited for the rest of the second,
#: 15% of its time in a profile (docs/benchmarks.md, "The librdkafka fetch-queue backoff"). A tenth
#: keeps the queue fed at up to ten times that rate. While the queue stays full no fetch is sent;
#: the cost is a timer wake-up per partition every 100 ms on librdkafka's broker thread.
FETCH_QUEUE_BACKOFF_MS = 100


def _common(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"kestrel-worker-{settings.group_id}",
        # librdkafka's floor is 1000 ms (kafka-python takes the setting as it is).
        "socket.connection.setup.timeout.ms": max(1000, settings.connect_timeout_ms),
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        "logger": logging.getLogger("confluent_kafka"),
        **security_config(settings),
    }


class ConfluentSource:
    """Group consumer of the input topic with manual commits (librdkafka)."""

    def __init__(self, settings: KafkaSettings, on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> None:
        self._down = threading.Event()
        self._commit_error: KafkaError | None = None
        self._broker_error: KafkaError | None = None
        #: The offsets of the commits sent, committed again synchronously on close.
        self._last_commit: dict[Partition, int] = {}
        #: Inside a rebalance callback: ``revoke`` (commits wait, bounded) or ``lost`` (no commits).
        self._revoke_mode: str | None = None
        #: The assignment read after the last rebalance callback, and when (see :meth:`assignment`).
        self._assignment: set[Partition] | None = None
        self._assignment_read_at = 0.0
        self._in_rebalance = False
        #: Inside ``on_assign``: the partitions handed over, and the offsets the loop asked to start
        #: them from (see :meth:`rewind`).
        self._handed: set[Partition] = set()
        self._starts: dict[Partition, int] | None = None
        self._no_broker_up = 0
        config = {
            **_common(settings),
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
            # Broker states once a second: the only way librdkafka tells that brokers are back.
            "statistics.interval.ms": 1000,
            "stats_cb": self._on_stats,
        }
        try:
            self._consumer = Consumer(config)
            self._consumer.subscribe(
                [settings.input_topic],
                on_assign=lambda c, parts: self._assigning(on_assigned, parts),
                on_revoke=lambda c, parts: self._revoking(on_revoked, parts, "revoke"),
                on_lost=lambda c, parts: self._revoking(on_revoked, parts, "lost"),
            )
        except (KafkaException, ValueError) as exc:
            raise BrokerError(f"cannot create the consumer: {exc}") from exc

    def _revoking(self, on_revoked: RevokedCallback, parts: list[TopicPartition], how: str) -> None:
        """Run the loop's revoke callback. In a rebalance (``revoke``) its commit waits for the
        broker: an asynchronous one may land after the group re-read the committed offsets, and
        the partitions' next owner (often this consumer again) would repeat the batch. Partitions
        already ``lost`` (session expired, e.g. a frozen broker) are not committed at all: the
        group has moved on and the commit could only fail."""
        self._revoke_mode = how
        try:
            self._rebalancing(lambda partitions: on_revoked(partitions, lost=how == "lost"), parts)
        finally:
            self._revoke_mode = None
            # Their next owner commits them: close must not commit this member's last offsets of
            # them again (a partition given back and left unread would move back).
            for partition in _partitions(parts):
                self._last_commit.pop(partition, None)

    def _assigning(self, on_assigned: PartitionsCallback, parts: list[TopicPartition]) -> None:
        """Run the loop's assign callback; partitions it rewound are assigned from those offsets
        (the rest from their committed offsets, as librdkafka does by itself when the callback
        does not assign)."""
        self._handed, self._starts = set(_partitions(parts)), {}
        try:
            self._rebalancing(on_assigned, parts)
            starts = self._starts
        finally:
            self._handed, self._starts = set(), None
        if not starts:
            return
        try:
            committed = self._consumer.committed(
                [TopicPartition(t, p) for t, p in starts], timeout=SOCKET_TIMEOUT_MS / 1000
            )
            # Never below the group's committed offset: another member may have read past the
            # rewind while this one's join outlasted a generation.
            for tp in committed:
                if tp.error is None and tp.offset >= 0:
                    key = (tp.topic, tp.partition)
                    starts[key] = max(starts[key], tp.offset)
        except (KafkaException, RuntimeError) as exc:
            logger.warning("committed_offsets_unknown", extra={"error": str(exc)})
        try:
            self._consumer.assign([_starting(tp, starts) for tp in parts])
        except (KafkaException, RuntimeError) as exc:
            # No assignment took effect: a rebuilt consumer joins afresh (from the committed offsets).
            raise BrokerError(f"cannot assign from the rewound offsets {starts}: {exc}", fatal=True) from exc

    def _rebalancing(self, callback: PartitionsCallback, parts: list[TopicPartition]) -> None:
        """Run a rebalance callback; the cached assignment is read afresh afterwards (librdkafka
        applies an assignment after ``on_assign`` returns, so nothing read inside one is kept)."""
        self._assignment, self._in_rebalance = None, True
        try:
            callback(_partitions(parts))
        finally:
            self._assignment, self._in_rebalance = None, False

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in DOWN_CODES:
            self._down.set()
        if error.code() in DOWN_CODES or error.code() == KafkaError._TIMED_OUT:
            self._broker_error = error  # raised by the next poll that returns nothing

    def _on_stats(self, raw: str) -> None:
        """Down when no broker learnt from metadata is UP in two reports running (bootstrap entries
        have nodeid -1)."""
        brokers = [b for b in orjson.loads(raw).get("brokers", {}).values() if b.get("nodeid", -1) >= 0]
        if not brokers:
            return
        if any(b.get("state") == "UP" for b in brokers):
            self._no_broker_up = 0
            self._down.clear()
            return
        self._no_broker_up += 1
        if self._no_broker_up >= 2:  # two reports in a row: not a connection still being set up
            self._down.set()

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Fetch up to ``max_records`` records, waiting at most about ``timeout_ms``.

        Raises:
            BrokerError: the client reported an error (``fatal`` when the consumer is unusable).
        """
        try:
            # consume(n, t) waits until n messages or t: return as soon as any are there instead
            # (as kafka-python's poll does), else every idle poll adds its whole timeout to latency.
            messages = self._consumer.consume(num_messages=max_records, timeout=0)
            if not messages:
                first = self._consumer.poll(timeout_ms / 1000.0)
                if first is not None:
                    rest = self._consumer.consume(num_messages=max_records - 1, timeout=0) if max_records > 1 else []
                    messages = [first, *rest]
        except (KafkaException, RuntimeError) as exc:
            raise BrokerError(f"poll failed: {exc}", fatal=isinstance(exc, RuntimeError)) from exc
        records = _records(messages)
        error, self._broker_error = self._broker_error, None
        if records:
            self._down.clear()
        elif self._down.is_set():
            raise BrokerError("no broker answers (librdkafka: all brokers down)")
        elif error is not None:
            raise BrokerError(f"broker connection trouble: {error.str()}")
        return records

    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int) -> None:
        """Send a commit of ``offsets`` (the next offset to read per partition) without waiting.

        librdkafka's synchronous commit has no timeout: it waits out a frozen broker, and while
        it waits ``consume`` blocks too, so a stop would hang. The commit is therefore sent
        asynchronously; its result comes back through ``on_commit`` during later polls, and a
        failure is raised by the next call (whose offsets, the same or newer, are retried by the
        loop). :meth:`close` commits the last offsets synchronously, bounded by its timeout.
        Committing later than acknowledged outputs keeps at-least-once: a lost commit repeats work.
        The exception is a rebalance's revoke callback (see ``_revoking``), where it waits (the
        broker just answered the rebalance; the request is bounded by ``socket.timeout.ms``); for
        partitions lost it does nothing.

        Raises:
            CommitError: this commit could not be sent, or an earlier one failed.
        """
        if not offsets or self._revoke_mode == "lost":
            return
        payload = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if self._revoke_mode == "revoke" and not self._down.is_set():
            # On the consuming thread, inside the callback: the only place librdkafka answers a
            # synchronous commit during a rebalance (from a helper thread it went unanswered). The
            # coordinator just ran the rebalance; a request to it is bounded by socket.timeout.ms.
            try:
                self._consumer.commit(offsets=payload, asynchronous=False)
            except (KafkaException, RuntimeError) as exc:
                raise CommitError(f"commit failed: {exc}", fatal=isinstance(exc, RuntimeError)) from exc
            self._last_commit.update(offsets)
            return
        failed, self._commit_error = self._commit_error, None
        try:
            self._consumer.commit(offsets=payload, asynchronous=True)
        except (KafkaException, RuntimeError) as exc:
            raise CommitError(f"commit failed: {exc}", fatal=isinstance(exc, RuntimeError)) from exc
        self._last_commit.update(offsets)
        if failed is not None:
            raise CommitError(f"an earlier commit failed: {failed.str()}", fatal=failed.fatal())

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = error or next((tp.error for tp in partitions if tp.error is not None), None)
        if failed is not None and failed.code() != KafkaError._NO_OFFSET:
            self._commit_error = failed
        elif failed is None:
            self._down.clear()

    def assignment(self) -> set[Partition]:
        """Partitions currently assigned to this consumer.

        librdkafka's ``assignment()`` is a round trip to its main thread (7.5% of the loop's time
        at ~70k events/s, asked three times a batch), and the assignment only changes in a
        rebalance callback on this thread: the answer is kept until the next callback, and read
        again at least every :data:`ASSIGNMENT_REFRESH_S` all the same.
        """
        now = time.monotonic()
        if self._assignment is not None and now - self._assignment_read_at < ASSIGNMENT_REFRESH_S:
            return set(self._assignment)
        try:
            current = set(_partitions(self._consumer.assignment()))
        except (KafkaException, RuntimeError):
            return set()
        if not self._in_rebalance:
            self._assignment, self._assignment_read_at = current, now
        return set(current)

    def highwater(self, partition: Partition) -> int | None:
        """High watermark from the last fetch (librdkafka's cache), or ``None`` when unknown."""
        try:
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(*partition), cached=True)
        except (KafkaException, RuntimeError):
            return None
        return None if high is None or high < 0 else int(high)

    def position(self, partition: Partition) -> int | None:
        """The next offset this consumer hands out (past control records), or ``None`` when unknown."""
        try:
            (answer,) = self._consumer.position([TopicPartition(*partition)])
        except (KafkaException, RuntimeError, ValueError):
            return None
        return None if answer.offset < 0 else int(answer.offset)

    def rewind(self, partition: Partition, offset: int) -> None:
        """Inside ``on_assigned``: start ``partition`` at ``offset``, or at the group's committed
        offset if that lies beyond (librdkafka would start it at its committed offset, which may
        lie below records this consumer still processes).

        Raises:
            BrokerError: called outside ``on_assigned``, or for a partition it does not hand over.
        """
        if self._starts is None or partition not in self._handed:
            raise BrokerError(f"cannot rewind {partition}: only a partition being assigned (inside on_assigned)")
        self._starts[partition] = offset

    def coordinator_known(self) -> bool:
        """False after librdkafka reported every broker down, until records or a commit come through."""
        return not self._down.is_set()

    def close(self, timeout_ms: int) -> None:
        """Leave the group (rebalance callbacks run) and close connections, waiting at most
        ``timeout_ms`` (librdkafka's close has no timeout: a frozen broker would hold it)."""

        def close() -> None:
            try:
                owned = set(_partitions(self._consumer.assignment()))
                last = [TopicPartition(t, p, o) for (t, p), o in self._last_commit.items() if (t, p) in owned]
                if last:
                    self._consumer.commit(offsets=last, asynchronous=False)
                self._consumer.close()
            except (KafkaException, RuntimeError) as exc:
                logger.warning("consumer_close_failed", extra={"error": str(exc)})

        closer = threading.Thread(target=close, name="consumer-close", daemon=True)
        closer.start()
        closer.join(timeout_ms / 1000.0)
        if closer.is_alive():
            logger.warning("consumer_close_timed_out", extra={"timeout_ms": timeout_ms})


def _starting(tp: TopicPartition, starts: Mapping[Partition, int]) -> TopicPartition:
    """``tp`` to assign from its offset in ``starts``, else from where librdkafka would start it."""
    return TopicPartition(tp.topic, tp.partition, starts.get((tp.topic, tp.partition), tp.offset))


def _partitions(parts: list[TopicPartition]) -> list[Partition]:
    return [(tp.topic, tp.partition) for tp in parts]


#: Unbound ``Message`` getters: ``map``-ed over a batch they run without a Python frame per record.
_TOPIC, _PARTITION, _OFFSET, _TIMESTAMP = Message.topic, Message.partition, Message.offset, Message.timestamp
_KEY, _VALUE, _HEADERS, _ERROR = Message.key, Message.value, Message.headers, Message.error


def _records(messages: list[Message]) -> list[RawRecord]:
    """The batch's records, built column by column.

    One ``map`` per field and ``tuple.__new__`` over their ``zip`` make each record without a
    Python frame: 350 ns a record against 806 ns for a per-message function (timeit, 500 messages),
    which saves ~3% of the loop thread at 70k events/s. Messages that carry an error are left out
    (informational: partition EOF, transient fetch errors, which librdkafka retries) or raise (fatal).

    Raises:
        BrokerError: a message carries a fatal error.
    """
    if any(map(_ERROR, messages)):
        for m in messages:
            error = m.error()
            if error is not None and error.fatal():
                raise BrokerError(f"poll failed: {error.str()}", fatal=True)
        messages = [m for m in messages if m.error() is None]
    n = len(messages)
    if not n:
        return []
    kinds, stamps = zip(*map(_TIMESTAMP, messages), strict=True)
    if None in stamps:
        stamps = tuple(-1 if s is None else s for s in stamps)
    raw_headers = _raw_headers(messages)
    headers: Iterable[tuple[tuple[str, bytes], ...]] = repeat((), n)
    if any(raw_headers):  # most records have none: no per-record tuple building then
        headers = [_headers(raw) for raw in raw_headers]
    appended = map(eq, kinds, repeat(TIMESTAMP_LOG_APPEND_TIME, n))
    # A plain Consumer (no deserializer) gives keys and values as bytes or None: taken as they are.
    columns = zip(
        map(_TOPIC, messages), map(_PARTITION, messages), map(_OFFSET, messages), stamps,
        map(_KEY, messages), map(_VALUE, messages), headers, appended, strict=True,
    )  # fmt: skip
    return list(map(tuple.__new__, repeat(RawRecord, n), columns))


#: The only header of a record whose headers librdkafka's client cannot read (a header name that
#: is not UTF-8: names are raw bytes on the wire, the client decodes them): the record is scored
#: all the same (its value is intact), and its dead letter, if any, says its headers were lost.
UNREADABLE_HEADERS = "kestrel.headers_unreadable"
#: What ``Message.headers()`` raises for such a name: a ``SystemError`` (caused by a
#: ``UnicodeDecodeError``), as confluent-kafka 2.x builds the list before it checks the decode.
_UNDECODABLE = (SystemError, UnicodeDecodeError, ValueError)


def _raw_headers(messages: list[Message]) -> list[Any]:
    """Each message's ``headers()``, or :data:`UNREADABLE_HEADERS` with the reason for those whose
    headers cannot be read (one warning per batch). Every message's ``headers()`` is called once
    only: after a failure, confluent-kafka keeps the half-built list (a tuple with a NULL name)
    and returns it without an error the next time, which would crash the interpreter if read."""
    raw: list[Any] = []
    unreadable: list[int] = []
    while len(raw) < len(messages):
        try:
            raw.extend(map(_HEADERS, islice(messages, len(raw), None)))  # keeps what came before a failure
        except _UNDECODABLE as exc:
            reason = str(exc.__cause__ or exc)[:200]
            raw.append([(UNREADABLE_HEADERS, reason.encode("utf-8", "replace"))])
            unreadable.append(len(raw) - 1)
    if unreadable:
        first = messages[unreadable[0]]
        logger.warning(
            "input_headers_unreadable",
            extra={"records": len(unreadable), "topic": first.topic(), "partition": first.partition(),
                   "offset": first.offset(), "error": raw[unreadable[0]][0][1].decode()},
        )  # fmt: skip
    return raw


def _headers(raw: list[tuple[str, Any]] | dict[str, Any] | None) -> tuple[tuple[str, bytes], ...]:
    """A record's headers as ``(name, bytes)`` pairs (a null value becomes ``b""``)."""
    if not raw:
        return ()
    pairs = raw.items() if isinstance(raw, dict) else raw
    return tuple((name, _bytes_or_none(value) or b"") for name, value in pairs)


def _bytes_or_none(value: str | bytes | None) -> bytes | None:
    """Bytes as given (a null header value becomes ``b""`` at the caller)."""
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)


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
        **_common(settings),
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
