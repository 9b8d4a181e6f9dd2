"""Errors kafka-python raises while it decodes a fetched record batch, told apart from the others.

kafka-python raises its own ``CorruptRecordError`` or ``UnsupportedCodecError`` for a bad checksum
or a codec that is not installed, but a record that does not parse or decompress raises the
parser's or the codec's own error out of ``poll`` (``UnicodeDecodeError``, ``zlib.error``, lz4's
``RuntimeError``, ...). Found in review: a gzip batch that does not decompress under a valid
checksum made the worker exit on every start, and the retrain job and ``worker.tail`` print a
traceback. Shared by the worker's source and the tools that read Kafka; imports nothing of kafka.
"""

from __future__ import annotations

import os

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
