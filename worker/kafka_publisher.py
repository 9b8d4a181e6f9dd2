"""A plain kafka-python producer for the tools (the replayer, the demo), not the worker's loop:
it has no acknowledgement tracking; :meth:`KafkaPublisher.flush` raises if anything was not
acknowledged (the worker's outputs go through :mod:`worker.kafka_sink`)."""

from __future__ import annotations

import logging
from typing import Any

from kafka.errors import KafkaError

from detector.kafka_python_quirks import close_producer
from worker.errors import PublishError, RecordRefusedError
from worker.kafka_config import make_producer
from worker.kafka_sink import is_refusal
from worker.settings import KafkaSettings

logger = logging.getLogger(__name__)


class KafkaPublisher:
    """A plain producer for tools (the replayer): :meth:`flush` raises if anything was not acknowledged.

    Raises:
        BrokerError: the bootstrap servers did not answer (at construction).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = make_producer(settings)
        self._futures: list[Any] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        """Queue one record.

        Raises:
            RecordRefusedError: the client refused this record (neither key nor value, over the
                request limit).
            PublishError: it could not be sent (no metadata for the topic in time).
        """
        try:
            self._futures.append(self._producer.send(topic, value=value, key=key, headers=headers))
        except (KafkaError, ValueError, TypeError) as exc:  # kafka-python refuses some records with ValueError
            error = RecordRefusedError if is_refusal(exc) else PublishError
            raise error(f"send failed: {type(exc).__name__}: {exc}") from exc

    def flush(self, timeout_s: float) -> None:
        """Wait for every record sent so far.

        Raises:
            PublishError: some records were not acknowledged in ``timeout_s``.
        """
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise PublishError(f"flush failed: {type(exc).__name__}: {exc}") from exc
        failed = [f for f in self._futures if not f.is_done or f.failed()]
        self._futures = []
        if failed:
            raise PublishError(f"{len(failed)} records not acknowledged")

    def close(self, timeout_s: float) -> None:
        close_producer(self._producer, timeout_s)
