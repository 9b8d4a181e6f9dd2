"""Record batches no Kafka client can read: a gzip payload with bytes flipped under a recomputed,
valid CRC32C, as a broker with a damaged log or a faulty producer serves it. The embedded broker
stores such a batch as sent."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any

from kafka import KafkaProducer
from kafka.record import default_records
from kafka.record.util import calc_crc32c

_HEADER = 61  # bytes of a v2 record batch before its (here compressed) records


def _corrupted(build: Callable[[Any], bytearray]) -> Callable[[Any], bytearray]:
    def corrupt(self: Any) -> bytearray:
        batch = bytearray(build(self))
        middle = _HEADER + (len(batch) - _HEADER) // 2
        for i in range(middle, min(middle + 8, len(batch))):
            batch[i] ^= 0xFF
        crc = calc_crc32c(memoryview(batch)[default_records.DefaultRecordBatch.ATTRIBUTES_OFFSET :])
        struct.pack_into(">I", batch, default_records.DefaultRecordBatch.CRC_OFFSET, crc)
        return batch

    return corrupt


def send(
    bootstrap: str, topic: str, values: Iterable[tuple[int, bytes]], *, corrupt: bool = False, codec: str = "gzip"
) -> None:
    """Produce ``(partition, value)`` pairs and wait for each; ``corrupt``: as one batch per
    partition, compressed with ``codec``, that cannot be read (gzip fails to decompress; zstd
    decompresses to records kafka-python finds corrupt)."""
    build = default_records.DefaultRecordBatchBuilder.build
    if corrupt:
        default_records.DefaultRecordBatchBuilder.build = _corrupted(build)  # type: ignore[method-assign]
    try:
        producer = KafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=50, **({"compression_type": codec} if corrupt else {})
        )
        for future in [producer.send(topic, value=value, partition=partition) for partition, value in values]:
            future.get(30)
        producer.close()
    finally:
        default_records.DefaultRecordBatchBuilder.build = build  # type: ignore[method-assign]
