"""Partitions the librdkafka consumer sets aside at a batch it cannot read.

librdkafka stops a partition at a batch whose records do not parse or decompress (a damaged log, a
faulty producer, a codec it lacks) and hands back the same error on every fetch: the partition
never moves on. Found in review: the source logged that error at most once a minute and went on,
so the partition stalled unseen, its lag counted as pending work, and liveness failed after
``WORKER_NO_PROGRESS_TIMEOUT_S``: a restarted worker read the same batch, a crash loop. As on
kafka-python (:meth:`worker.kafka_io.KafkaSource.poll`), the partition is now paused at that offset
and reported to the loop by an :class:`~worker.errors.UnreadableBatchError`: logged once, counted
in ``kestrel_unreadable_partitions``, not pending work, while the other partitions go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from worker.errors import BrokerError, UnreadableBatchError
from worker.outcomes import RawRecord

Partition = tuple[str, int]


class SetAside:
    """The partitions a consumer paused as unreadable, and the reports the loop has yet to see."""

    def __init__(self) -> None:
        #: Partition: the offset it is paused at.
        self.offsets: dict[Partition, int] = {}
        self._pending: list[UnreadableBatchError] = []

    def raise_pending(self) -> None:
        """Raise the next report not yet raised (one a poll)."""
        if self._pending:
            raise self._pending.pop(0)

    def take(
        self, consumer: Consumer, found: Mapping[Partition, tuple[int, str]], records: list[RawRecord]
    ) -> list[RawRecord]:
        """Pause each partition of ``found`` at its offset, and return ``records`` without any of a
        paused partition at or past that offset. With no records left, the first report is raised
        now; otherwise the next polls raise the reports (the records are processed first).

        Raises:
            UnreadableBatchError: a partition set aside, when no record is left to return.
            BrokerError: librdkafka refused the pause.
        """
        for partition, (offset, text) in found.items():
            if self.offsets.get(partition) == offset:
                continue  # paused already: an error fetched before the pause
            try:
                consumer.pause([TopicPartition(partition[0], partition[1], offset)])
            except (KafkaException, RuntimeError) as exc:
                raise BrokerError(f"cannot pause {partition[0]}[{partition[1]}] at an unreadable batch: {exc}") from exc
            self.offsets[partition] = offset
            self._pending.append(
                UnreadableBatchError(
                    f"partition {partition[0]}[{partition[1]}] paused at offset {offset}: the client cannot read it"
                    f" ({text})",
                    partition=partition,
                    offset=offset,
                )
            )
        if self.offsets:
            records = [r for r in records if r.offset < self.offsets.get((r.topic, r.partition), r.offset + 1)]
        if not records:
            self.raise_pending()
        return records

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked: their next assignment reads them afresh (and sets them aside again)."""
        gone = set(partitions)
        for partition in gone:
            self.offsets.pop(partition, None)
        self._pending = [e for e in self._pending if e.partition not in gone]
