"""Small Kafka helpers for the tools around the worker (demo, replayer, benchmarks).

Imports kafka-python like :mod:`worker.kafka_io`; the worker's own loop never uses this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    CorruptRecordError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnsupportedCodecError,
)

from detector.kafka_python_quirks import raised_while_decoding, unreadable_batch_text
from worker.errors import BrokerError
from worker.kafka_config import security_config
from worker.record_format import TailRecord
from worker.settings import KafkaSettings


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


def existing_topics(settings: KafkaSettings) -> set[str] | None:
    """The topics the broker lists (a metadata request for all topics creates none), or ``None``
    when it cannot list them (the caller goes on without the list).

    Raises:
        BrokerError: no broker answered within ``connect_timeout_ms``.
    """
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            enable_auto_commit=False,
            group_id=None,
            bootstrap_timeout_ms=settings.connect_timeout_ms,
            **security_config(settings),
        )
    except KafkaTimeoutError as exc:  # kafka-python 3: no broker answered the bootstrap
        raise BrokerError(
            f"cannot reach {settings.bootstrap_servers}: no broker answered within {settings.connect_timeout_ms} ms"
        ) from exc
    except KafkaError:
        return None
    try:
        return set(consumer.topics())
    except KafkaError:
        return None
    finally:
        consumer.close()


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
        except (CorruptRecordError, UnsupportedCodecError) as exc:  # kafka-python's own: a batch too
            raise BrokerError(f"read failed: {unreadable_batch_text(self._consumer, exc)}") from exc
        except KafkaError as exc:
            raise BrokerError(f"read failed: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:
            if not raised_while_decoding(exc):
                raise
            raise BrokerError(f"read failed: {unreadable_batch_text(self._consumer, exc)}") from exc
        return [_tail_record(m) for msgs in batches.values() for m in msgs]

    def close(self) -> None:
        self._consumer.close()


def _tail_record(message: Any) -> TailRecord:
    headers = tuple((name, value) for name, value in (message.headers or ()))
    return TailRecord(
        message.partition, message.offset, message.timestamp, message.value, message.key, headers, message.topic
    )


class TopicFollower(TopicTail):
    """Reads every partition of a topic, from the beginning or only new records (no group, no commits).

    Raises:
        BrokerError: the broker did not answer, or the topic does not exist.
    """

    def __init__(self, settings: KafkaSettings, topic: str, from_beginning: bool) -> None:
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=settings.bootstrap_servers.split(","),
                enable_auto_commit=False,
                group_id=None,
                bootstrap_timeout_ms=settings.connect_timeout_ms,
                **security_config(settings),
            )
        except KafkaError as exc:
            raise BrokerError(f"cannot reach {settings.bootstrap_servers}: {exc}") from exc
        try:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                raise BrokerError(f"no topic {topic!r} on {settings.bootstrap_servers}")
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            self._consumer.assign(assigned)
            if from_beginning:
                self._consumer.seek_to_beginning()
            else:
                self._consumer.seek_to_end()
        except KafkaError as exc:
            self._consumer.close()
            raise BrokerError(f"cannot read {topic}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            self._consumer.close()
            raise
