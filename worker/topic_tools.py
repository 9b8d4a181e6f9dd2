"""Small Kafka helpers for the tools around the worker (demo, replayer, benchmarks).

Imports kafka-python like :mod:`worker.kafka_io`; the worker's own loop never uses this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from worker.errors import BrokerError


def create_topics(bootstrap_servers: str, topics: Iterable[tuple[str, int]]) -> None:
    """Create ``(name, partitions)`` topics (replication 1); existing ones are left alone.

    Raises:
        BrokerError: the broker refused or did not answer.
    """
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), request_timeout_ms=10_000)
    except KafkaError as exc:
        raise BrokerError(f"cannot reach {bootstrap_servers}: {type(exc).__name__}") from exc
    try:
        for name, partitions in topics:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
            except TopicAlreadyExistsError:
                continue
    except KafkaError as exc:
        raise BrokerError(f"cannot create topics: {type(exc).__name__}: {exc}") from exc
    finally:
        admin.close()


@dataclass(frozen=True)
class TailRecord:
    """One record read back from a topic."""

    partition: int
    offset: int
    timestamp_ms: int
    value: bytes | None


class TopicTail:
    """Reads every record of a topic from the beginning (no consumer group, no commits)."""

    def __init__(self, bootstrap_servers: str, topic: str, partitions: int = 1) -> None:
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=bootstrap_servers.split(","), enable_auto_commit=False, group_id=None
            )
            self._consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
            self._consumer.seek_to_beginning()
        except KafkaError as exc:
            raise BrokerError(f"cannot read {topic}: {type(exc).__name__}: {exc}") from exc

    def poll(self, timeout_ms: int = 200) -> list[TailRecord]:
        """Records that arrived since the last call."""
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=10_000)
        except KafkaError as exc:
            raise BrokerError(f"read failed: {type(exc).__name__}: {exc}") from exc
        return [TailRecord(m.partition, m.offset, m.timestamp, m.value) for msgs in batches.values() for m in msgs]

    def close(self) -> None:
        self._consumer.close()
