"""Where kafka-python needs help: the errors it raises while it decodes a fetched record batch, told
apart from the others; and a producer's close during an outage.

kafka-python raises its own ``CorruptRecordError`` or ``UnsupportedCodecError`` for a bad checksum
or a codec that is not installed, but a record that does not parse or decompress raises the
parser's or the codec's own error out of ``poll`` (``UnicodeDecodeError``, ``zlib.error``, lz4's
``RuntimeError``, ...). Found in review: a gzip batch that does not decompress under a valid
checksum made the worker exit on every start, and the retrain job and ``worker.tail`` print a
traceback. Shared by the worker and the tools that read or write Kafka; imports nothing of kafka
(its state is read with ``getattr``: kafka-python ``<4``, held to the real client by tests).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

#: Where kafka-python decodes fetched batches: its record formats and its codecs.
_DECODING = (f"{os.sep}kafka{os.sep}record{os.sep}", f"{os.sep}kafka{os.sep}codec.py")


def raised_while_decoding(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while kafka-python decoded a batch (a frame of its record or codec
    modules in the traceback; an error its fetcher kept and raised again keeps those frames)."""
    tb = exc.__traceback__
    while tb is not None:
        if any(part in tb.tb_frame.f_code.co_filename for part in _DECODING):
            return True
        tb = tb.tb_next
    return False


def failed_batch(consumer: object) -> tuple[str, int, int] | None:
    """Topic, partition and offset of the batch a kafka-python consumer's fetcher failed on (its
    internal state, kafka-python ``<4``), or ``None`` when that state is not there."""
    stuck = getattr(getattr(consumer, "_fetcher", None), "_next_partition_records", None)
    tp, offset = getattr(stuck, "topic_partition", None), getattr(stuck, "next_fetch_offset", None)
    topic, partition = getattr(tp, "topic", None), getattr(tp, "partition", None)
    if isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int):
        return topic, partition, offset
    return None


def unreadable_batch_text(consumer: object, exc: BaseException) -> str:
    """``the record batch at partition P offset O cannot be read (zlib.error: text)``, where known."""
    where = failed_batch(consumer)
    at = "" if where is None else f" at partition {where[1]} offset {where[2]}"
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"the record batch{at} cannot be read ({name}: {exc})"


def close_producer(producer: Any, timeout_s: float) -> None:
    """Close a kafka-python producer, waiting at most about ``timeout_s`` for what it holds.

    kafka-python's ``close`` flushes first and, when that times out (a broker away), raises before
    it closes anything; its ``__del__`` then tries again at interpreter exit and prints a traceback
    (found in review: ``worker.replay`` with the broker killed). Its sender is then closed without
    sending, which fails the records still held (as its own close does after a timeout), and the
    close completes.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except Exception as exc:  # its KafkaTimeoutError, or any other: a close never raises
        logger.warning("producer_close_failed", extra={"error": f"{type(exc).__name__}: {exc}"})
    sender = getattr(producer, "_sender", None)  # kafka-python's own, pinned <4
    if sender is not None:
        sender.force_close()
        sender.join(1.0)
    with contextlib.suppress(Exception):
        producer.close(timeout=0)
