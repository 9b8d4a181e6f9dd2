"""The librdkafka consumer (``confluent-kafka``, extra ``[fast]``) behind the Source contract.

With :mod:`worker.confluent_sink` (the producer), :mod:`worker.confluent_records` (messages to
records) and :mod:`worker.confluent_unreadable` (partitions set aside at a batch it cannot read),
the only modules that import ``confluent_kafka``; :mod:`worker.confluent_config` turns the
settings into librdkafka's names. Same semantics as :mod:`worker.kafka_io` and :mod:`worker.kafka_sink`
(held to them by one contract suite, tests/worker/test_kafka_contract.py): manual commits only
(``enable.auto.commit=false``, ``enable.auto.offset.store=false``), offsets committed by the loop
after every output before them is acknowledged. Fetching, decompression and checksums run on
librdkafka's own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.confluent_config import SOCKET_TIMEOUT_MS, common_config
from worker.confluent_records import raw_records
from worker.confluent_unreadable import SetAside
from worker.errors import BrokerError, CommitError
from worker.outcomes import RawRecord
from worker.rebalance import PartitionsCallback, RevokedCallback
from worker.settings import KafkaSettings

logger = logging.getLogger(__name__)

Partition = tuple[str, int]

#: Errors meaning no broker answers (the loop then reports not ready).
DOWN_CODES = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT})


#: Longest a cached assignment is trusted without asking librdkafka again (it changes only in a
#: rebalance callback, which drops the cache; this bounds the harm of a change it did not report).
ASSIGNMENT_REFRESH_S = 1.0

#: How long librdkafka postpones a partition's next fetch once the consumer's prefetch queue is
#: full (``queued.max.messages.kbytes``, 64 MB over all partitions, or ``queued.min.messages``,
#: 100,000 messages: the first limit reached). librdkafka's default, 1000 ms, outlasts the time a
#: busy worker takes to drain that queue (about 1 s at 75,000 events/s of 900 bytes, less when
#: faster): under a backlog it then found the queue empty and waited for the rest of the second,
#: 15% of its time in a profile (docs/benchmarks.md, "The librdkafka fetch-queue backoff"). A tenth
#: keeps the queue fed at up to ten times that rate. While the queue stays full no fetch is sent;
#: the cost is a timer wake-up per partition every 100 ms on librdkafka's broker thread.
FETCH_QUEUE_BACKOFF_MS = 100
#: librdkafka's topic metadata refresh interval (its default: 300,000 ms).
METADATA_REFRESH_MS = 5000


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
        #: The last assignment librdkafka answered, inside a rebalance callback or not.
        self._last_assignment: set[Partition] = set()
        self._in_rebalance = False
        #: Inside ``on_assign``: the partitions handed over, and the offsets the loop asked to start
        #: them from (see :meth:`rewind`).
        self._handed: set[Partition] = set()
        self._starts: dict[Partition, int] | None = None
        #: Inside ``on_assign``: the group's committed offsets of those partitions (:meth:`group_offsets`).
        self._committed: dict[Partition, int] | None = None
        self._no_broker_up = 0
        self._set_aside = SetAside()
        config = {
            **common_config(settings),
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            "heartbeat.interval.ms": settings.heartbeat_interval_ms,
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            # A subscribed topic that does not exist yet is looked for at this interval (found in
            # review: librdkafka's 300 s default left a worker started before its topic idle for
            # five minutes after the topic appeared; kafka-python asks at once). New partitions are
            # seen as soon. One small metadata request per interval.
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
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
            self._set_aside.forget(_partitions(parts))

    def _assigning(self, on_assigned: PartitionsCallback, parts: list[TopicPartition]) -> None:
        """Run the loop's assign callback; partitions it rewound are assigned from those offsets
        (the rest from their committed offsets, as librdkafka does by itself when the callback
        does not assign)."""
        committed = self._group_committed(parts)
        self._handed, self._starts, self._committed = set(_partitions(parts)), {}, committed
        try:
            self._rebalancing(on_assigned, parts)
            starts = self._starts
        finally:
            self._handed, self._starts, self._committed = set(), None, None
        if not starts:
            return
        # Never below the group's committed offset: another member may have read past the
        # rewind while this one's join outlasted a generation.
        starts = {key: max(offset, (committed or {}).get(key, -1)) for key, offset in starts.items()}
        try:
            self._consumer.assign([_starting(tp, starts) for tp in parts])
        except (KafkaException, RuntimeError) as exc:
            # No assignment took effect: a rebuilt consumer joins afresh (from the committed offsets).
            raise BrokerError(f"cannot assign from the rewound offsets {starts}: {exc}", fatal=True) from exc

    def _group_committed(self, parts: list[TopicPartition]) -> dict[Partition, int] | None:
        """The group's committed offsets of ``parts`` (``None`` when the coordinator does not answer)."""
        if not parts:
            return {}
        try:
            committed = self._consumer.committed(
                [TopicPartition(tp.topic, tp.partition) for tp in parts], timeout=SOCKET_TIMEOUT_MS / 1000
            )
        except (KafkaException, RuntimeError) as exc:
            logger.warning("committed_offsets_unknown", extra={"error": str(exc)})
            return None
        failed = [tp for tp in committed if tp.error is not None]
        if failed:
            # A partition whose offset the coordinator could not read is unknown, not uncommitted
            # (read as "no commit", a batch in flight could move its offset back).
            errors = {f"{tp.topic}[{tp.partition}]": str(tp.error) for tp in failed}
            logger.warning("committed_offsets_unknown", extra={"error": errors})
            return None
        return {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}

    def group_offsets(self) -> dict[Partition, int] | None:
        """Inside ``on_assigned``: the group's committed offsets of the partitions it hands over
        (read before the callback); ``None``: unknown."""
        return None if self._committed is None else dict(self._committed)

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
        self._set_aside.raise_pending()
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
        unreadable: dict[Partition, tuple[int, str]] = {}
        records = raw_records(messages, unreadable)
        if unreadable or self._set_aside.offsets:
            records = self._set_aside.take(self._consumer, unreadable, records)
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
            # Not "none": the loop would drop the uncommitted offsets of every partition it owns.
            return set(self._last_assignment)
        self._last_assignment = current
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
