"""The kafka-python consumer source (its configuration: :mod:`worker.kafka_config`).

With :mod:`worker.kafka_config`, :mod:`worker.kafka_sink` and :mod:`worker.kafka_publisher` the
only worker modules that import ``kafka`` (and :mod:`worker.topic_tools` for the tools).
kafka-python errors are mapped to :mod:`worker.errors`: :class:`BrokerError` for polling and
connecting, :class:`CommitError` for failed commits (``fatal`` when the client itself is broken).
Partitions are plain ``(topic, partition)`` tuples outside these modules.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator, Mapping

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CorruptRecordError, IllegalStateError, KafkaError, UnsupportedCodecError
from kafka.structs import OffsetAndMetadata

from detector.kafka_python_quirks import failed_batch, raised_while_decoding
from worker.errors import BrokerError, CommitError, UnreadableBatchError
from worker.kafka_config import REQUEST_TIMEOUT_MS, consumer_request_timeout_ms, security_config
from worker.outcomes import RawRecord
from worker.rebalance import PartitionsCallback, RevokedCallback
from worker.settings import KafkaSettings

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
Header = tuple[str, bytes]

#: kafka-python's ``timestamp_type`` of a timestamp set by the broker (0 = CreateTime, by the producer).
LOG_APPEND_TIME = 1


def _fatal(exc: KafkaError) -> bool:
    """Only a closed or broken client is fatal: other errors (a commit refused after a rebalance,
    a broker away) clear by themselves, or by the loop's rebuild after repeated failures."""
    return isinstance(exc, IllegalStateError)


#: What kafka-python raises as its own when it cannot read a fetched batch: a bad checksum, a codec
#: that is not installed. The errors of records that do not parse or decompress are told by
#: :func:`detector.kafka_python_quirks.raised_while_decoding`; any other exception out of its poll
#: rebuilds the consumer: none leaves the loop.
_UNREADABLE = (CorruptRecordError, UnsupportedCodecError)


def _timestamp(value: int | None) -> int:
    """A record's timestamp; -1 for none (message format v0), which latency treats as implausible."""
    return -1 if value is None else int(value)


def _headers(headers: list[tuple[str, bytes | None]] | None) -> tuple[tuple[str, bytes], ...]:
    """Headers as ``(str, bytes)``: a null header value (legal in Kafka) becomes ``b""``, which
    every client can send back in a dead letter."""
    return tuple((name, b"" if value is None else value) for name, value in headers or ())


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """The loop's rebalance callbacks, run by kafka-python 3 on its I/O thread.

    The caller's ``poll`` waits meanwhile, so the callbacks see the loop's state undisturbed; but a
    blocking consumer call made there raises (``Cannot block on net.run() from the IO thread``). A
    commit the revoke callback asks for is therefore collected by the source and awaited here, on
    the I/O thread's own loop, before the partitions are given up.
    """

    def __init__(self, source: KafkaSource, on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> None:
        self._source = source
        self._on_revoked = on_revoked
        self._on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        with self._source.collecting_commits() as commits:
            self._on_revoked([(tp.topic, tp.partition) for tp in revoked])
        await self._source.commit_collected(commits)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        """Partitions taken away without a rebalance (the member was evicted): nothing is committed,
        the group has moved on (their next owner reads the uncommitted records again)."""
        with self._source.collecting_commits():  # and dropped
            self._on_revoked([(tp.topic, tp.partition) for tp in lost], lost=True)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        tps = list(assigned)
        partitions = [(tp.topic, tp.partition) for tp in tps]
        committed = await self._source.committed_async(tps)
        self._source.handed, self._source.starts, self._source.committed = set(partitions), {}, committed
        try:
            self._on_assigned(partitions)
            starts = self._source.starts
        finally:
            self._source.handed, self._source.starts, self._source.committed = set(), None, None
        try:
            self._source.start_at(tps, starts, committed or {})
        except BrokerError as exc:  # not expected: the next poll raises it as fatal (consumer rebuilt)
            self._source.start_failed = exc


class KafkaSource:
    """Group consumer of the input topic with manual commits.

    Args:
        settings: connection and group settings.
        on_revoked: called (inside :meth:`poll`) with partitions about to be taken away; it may
            call :meth:`commit` to commit what was processed (made before the partitions go;
            a failure is logged, as ``revoke_commit_failed``, not raised).
        on_assigned: called (inside :meth:`poll`) with newly assigned partitions.
    """

    def __init__(self, settings: KafkaSettings, on_revoked: RevokedCallback, on_assigned: PartitionsCallback) -> None:
        #: Commits asked for inside the revoke callback (see :class:`_Listener`), else ``None``.
        self._collected: dict[Partition, int] | None = None
        self._collected_timeout_ms = REQUEST_TIMEOUT_MS
        #: Inside the assign callback: the partitions it hands over (the only ones :meth:`rewind`
        #: takes) and the offsets the loop asked to start them from.
        self.handed: set[Partition] = set()
        self.starts: dict[Partition, int] | None = None
        #: Inside the assign callback: the group's committed offsets of the partitions it hands over
        #: (``None``: unknown).
        self.committed: dict[Partition, int] | None = None
        #: A seek the assign callback could not make: its partition's position is not trusted.
        self.start_failed: BrokerError | None = None
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=settings.bootstrap_servers.split(","),
                group_id=settings.group_id,
                client_id=f"kestrel-worker-{settings.group_id}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # As librdkafka by default: records of aborted or open transactions are never scored.
                isolation_level="read_committed",
                session_timeout_ms=settings.session_timeout_ms,
                max_poll_interval_ms=settings.max_poll_interval_ms,
                heartbeat_interval_ms=settings.heartbeat_interval_ms,
                # kafka-python refuses a request timeout not above the session timeout and the fetch
                # wait, and an idle-connection limit not above the request timeout.
                request_timeout_ms=consumer_request_timeout_ms(settings),
                connections_max_idle_ms=max(540_000, consumer_request_timeout_ms(settings) + 1000),
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                bootstrap_timeout_ms=settings.connect_timeout_ms,
                **security_config(settings),
            )
            self._consumer.subscribe([settings.input_topic], listener=_Listener(self, on_revoked, on_assigned))
        except KafkaError as exc:
            raise BrokerError(f"cannot create the consumer: {type(exc).__name__}: {exc}") from exc

    def poll(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Fetch up to ``max_records`` records, waiting at most about ``timeout_ms``.

        Raises:
            BrokerError: the client reported an error.
        """
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except _UNREADABLE as exc:
            raise self._set_aside(exc) from exc
        except KafkaError as exc:
            raise BrokerError(f"poll failed: {type(exc).__name__}: {exc}", fatal=_fatal(exc)) from exc
        except Exception as exc:  # see _UNREADABLE: never out of the loop
            if raised_while_decoding(exc):
                raise self._set_aside(exc) from exc
            raise BrokerError(f"poll failed: {type(exc).__name__}: {exc}", fatal=True) from exc
        if self.start_failed is not None:
            raise BrokerError(f"poll failed: {self.start_failed}", fatal=True)
        return [
            RawRecord(
                m.topic,
                m.partition,
                m.offset,
                _timestamp(m.timestamp),
                m.key,
                m.value,
                _headers(m.headers),
                m.timestamp_type == LOG_APPEND_TIME,
            )
            for messages in batches.values()
            for m in messages
        ]

    def _set_aside(self, exc: Exception) -> BrokerError:
        """Pause the partition whose fetched batch the client cannot read, and say where.

        kafka-python decodes a batch from its first record and keeps the failed iterator in its
        fetcher, after which it never fetches that partition again and hands out nothing: every
        partition of the consumer stalls, silently. A seek past the record does not help (the batch
        is decoded from its start again). So the partition is paused at the failed record, the
        dead iterator dropped, and the other partitions go on. Reads kafka-python's fetcher state
        (pinned ``<4``; ``tests/worker/test_worker_faults.py`` holds it to the real client); when
        that state is not there, the error is fatal and the loop rebuilds the consumer.
        """
        text = f"{type(exc).__name__}: {exc}"
        where = failed_batch(self._consumer)
        if where is None:
            return BrokerError(f"poll failed on a batch the client cannot read: {text}", fatal=True)
        topic, partition, offset = where
        self._consumer._fetcher._next_partition_records = None
        self._consumer.pause(TopicPartition(topic, partition))
        return UnreadableBatchError(
            f"partition {topic}[{partition}] paused at offset {offset}: the client cannot read it ({text})",
            partition=(topic, partition),
            offset=offset,
        )

    def commit(self, offsets: Mapping[Partition, int], timeout_ms: int) -> None:
        """Commit ``offsets`` (the next offset to read per partition), blocking.

        Raises:
            CommitError: the commit failed or timed out; nothing is known to be committed.
        """
        if not offsets:
            return
        if self._collected is not None:  # inside the revoke callback: committed when it returns
            self._collected.update(offsets)
            self._collected_timeout_ms = timeout_ms
            return
        try:
            self._consumer.commit(offsets=_payload(offsets), timeout_ms=timeout_ms)
        except KafkaError as exc:
            raise CommitError(f"commit failed: {type(exc).__name__}: {exc}", fatal=_fatal(exc)) from exc

    @contextlib.contextmanager
    def collecting_commits(self) -> Iterator[dict[Partition, int]]:
        """While open, :meth:`commit` collects offsets into the yielded dict instead of blocking."""
        collected: dict[Partition, int] = {}
        self._collected = collected
        try:
            yield collected
        finally:
            self._collected = None

    async def commit_collected(self, offsets: Mapping[Partition, int]) -> None:
        """Commit on the client's I/O thread (from the rebalance listener); failures are logged."""
        if not offsets:
            return
        try:
            # The coroutine behind KafkaConsumer.commit (its sync facade refuses the I/O thread).
            await self._consumer._coordinator._commit_offsets_sync_async(
                _payload(offsets), timeout_ms=self._collected_timeout_ms
            )
        except KafkaError as exc:
            logger.warning("revoke_commit_failed", extra={"error": f"{type(exc).__name__}: {exc}"})

    def assignment(self) -> set[Partition]:
        """Partitions currently assigned to this consumer."""
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def highwater(self, partition: Partition) -> int | None:
        """Last known high watermark (from fetch responses), or ``None`` when unknown.

        Used for lag because the embedded broker's ListOffsets (``end_offsets``) answer is wrong.
        """
        try:
            value = self._consumer.highwater(TopicPartition(*partition))
        except KafkaError:
            return None
        return None if value is None else int(value)

    def position(self, partition: Partition) -> int | None:
        """The next offset this consumer hands out (past control records), or ``None`` when unknown."""
        try:
            value = self._consumer.position(TopicPartition(*partition), timeout_ms=0)
        except (KafkaError, IllegalStateError):
            return None
        return None if value is None else int(value)

    def rewind(self, partition: Partition, offset: int) -> None:
        """Inside ``on_assigned``: start ``partition`` at ``offset``, or at the group's committed
        offset if that lies beyond (another member read past it meanwhile). kafka-python keeps the
        position of a partition that stays assigned through a rebalance (past records the loop
        dropped when it was revoked); the seek moves it back and drops what was fetched past it.

        Raises:
            BrokerError: called outside ``on_assigned``, or for a partition it does not hand over.
        """
        if self.starts is None or partition not in self.handed:
            raise BrokerError(f"cannot rewind {partition}: only a partition being assigned (inside on_assigned)")
        self.starts[partition] = offset

    def group_offsets(self) -> dict[Partition, int] | None:
        """Inside ``on_assigned``: the group's committed offsets of the partitions it hands over
        (read by the I/O thread before the callback, see :class:`_Listener`); ``None``: unknown."""
        return None if self.committed is None else dict(self.committed)

    async def committed_async(self, tps: list[TopicPartition]) -> dict[Partition, int] | None:
        """The group's committed offsets of ``tps``, asked on the I/O thread (inside the assign
        callback); ``None`` when the coordinator does not answer in time."""
        try:
            offsets = await self._consumer._coordinator.fetch_committed_offsets_async(
                set(tps), timeout_ms=self._collected_timeout_ms
            )
        except KafkaError as exc:
            logger.warning("committed_offsets_unknown", extra={"error": f"{type(exc).__name__}: {exc}"})
            return None
        return {(tp.topic, tp.partition): m.offset for tp, m in offsets.items() if m is not None and m.offset >= 0}

    def start_at(
        self, tps: list[TopicPartition], starts: Mapping[Partition, int], committed: Mapping[Partition, int]
    ) -> None:
        """Seek each partition the assignment hands over to where it must start: the loop's rewind,
        else the position kafka-python kept; and never below the group's committed offset. A
        partition kept while this member missed a generation (its join outlasted one, in which
        another member had it) would otherwise go on from a position the other member read past.
        A partition with neither (new here) starts where kafka-python starts it: the committed offset.

        Raises:
            BrokerError: the client refused a seek.
        """
        for tp in tps:
            key = (tp.topic, tp.partition)
            state = self._consumer._subscription.assignment.get(tp)
            kept = state.position.offset if state is not None and state.has_valid_position else None
            start = starts.get(key, kept)
            if start is None:
                continue
            start = max(start, committed.get(key, -1))
            if start != kept:
                try:
                    self._consumer.seek(tp, start)
                except (KafkaError, ValueError) as exc:
                    raise BrokerError(f"cannot start {key} at {start}: {type(exc).__name__}: {exc}") from exc

    def coordinator_known(self) -> bool:
        """Whether the client currently knows a live group coordinator (broker reachable)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None:
            return True
        return not bool(coordinator.coordinator_unknown())

    def close(self, timeout_ms: int) -> None:
        """Leave the group and close connections (no auto-commit)."""
        try:
            self._consumer.close(autocommit=False, timeout_ms=timeout_ms)
        except KafkaError as exc:
            logger.warning("consumer_close_failed", extra={"error": f"{type(exc).__name__}: {exc}"})


def _payload(offsets: Mapping[Partition, int]) -> dict[TopicPartition, OffsetAndMetadata]:
    return {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
