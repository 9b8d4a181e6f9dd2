"""The worker's Kafka settings in kafka-python's names (one settings model, two translations:
:mod:`worker.confluent_config` has librdkafka's), the output producer built from them, and what the
installed kafka-python can do (checksum implementation, codecs). Secrets go into the client
config only, never a log."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka import codec as kafka_codec
from kafka.errors import KafkaError
from kafka.record import util as record_util

from worker.errors import BrokerError
from worker.settings import KafkaSettings

#: Longest wait for a broker answer on a single request (fetch, metadata, commit).
REQUEST_TIMEOUT_MS = 7000
#: Longest a producer ``send`` blocks (waiting for topic metadata or buffer space).
MAX_BLOCK_MS = 2000


def crc32c_implementation() -> str:
    """``"c"`` when kafka-python verifies record checksums with the C ``crc32c`` package, else
    ``"python"`` (its pure-Python fallback, ~10x slower to consume)."""
    return "python" if record_util._crc32c is record_util.crc32c_py else "c"


def missing_codecs() -> list[str]:
    """Compression codecs kafka-python cannot decompress here (their packages are dependencies):
    a batch in one of them cannot be read and its partition is set aside (``KafkaSource._set_aside``)."""
    readable = {"lz4": kafka_codec.has_lz4(), "snappy": kafka_codec.has_snappy(), "zstd": kafka_codec.has_zstd()}
    return [name for name, ok in readable.items() if not ok]


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """kafka-python keyword arguments for the security settings (the worker's clients and the tools')."""
    config: dict[str, Any] = {"security_protocol": settings.security_protocol.value}
    if settings.sasl_mechanism is not None:
        config["sasl_mechanism"] = settings.sasl_mechanism.value
        config["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            config["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_cafile is not None:
        config["ssl_cafile"] = str(settings.ssl_cafile)
    return config


def consumer_request_timeout_ms(settings: KafkaSettings) -> int:
    """kafka-python refuses a consumer request timeout not above the session timeout and the fetch wait."""
    return max(REQUEST_TIMEOUT_MS, settings.session_timeout_ms + 1000, settings.fetch_max_wait_ms + 1000)


def make_producer(settings: KafkaSettings) -> KafkaProducer:
    """A producer for the worker's outputs (acks=all; idempotent as kafka-python 3 defaults).

    Raises:
        BrokerError: the bootstrap servers did not answer within ``connect_timeout_ms``.
    """
    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            client_id=f"kestrel-worker-{settings.group_id}",
            acks="all",
            linger_ms=2,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_block_ms=MAX_BLOCK_MS,
            max_request_size=settings.max_request_bytes,
            bootstrap_timeout_ms=settings.connect_timeout_ms,
            **security_config(settings),
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot create the producer: {type(exc).__name__}: {exc}") from exc
