"""The worker's Kafka settings in librdkafka's names (one settings model, two translations:
:mod:`worker.kafka_config` has kafka-python's). Secrets go into the client config only, never a log."""

from __future__ import annotations

import logging
from typing import Any

from worker.settings import KafkaSettings

#: Longest wait for a broker answer on one request (as kafka-python's ``request_timeout_ms``):
#: bounds a commit or a flush during a broker freeze.
SOCKET_TIMEOUT_MS = 7000


def security_config(settings: KafkaSettings) -> dict[str, Any]:
    """The settings' security part in librdkafka's names (kafka_config has kafka-python's)."""
    config: dict[str, Any] = {"security.protocol": settings.security_protocol.value}
    if settings.sasl_mechanism is not None:
        config["sasl.mechanism"] = settings.sasl_mechanism.value
        config["sasl.username"] = settings.sasl_username
        if settings.sasl_password is not None:
            config["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_cafile is not None:
        config["ssl.ca.location"] = str(settings.ssl_cafile)
    return config


def common_config(settings: KafkaSettings) -> dict[str, Any]:
    """What the consumer and the producer share: bootstrap, client id, timeouts, logger, security."""
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": f"kestrel-worker-{settings.group_id}",
        # librdkafka's floor is 1000 ms (kafka-python takes the setting as it is).
        "socket.connection.setup.timeout.ms": max(1000, settings.connect_timeout_ms),
        "socket.timeout.ms": SOCKET_TIMEOUT_MS,
        "logger": logging.getLogger("confluent_kafka"),
        **security_config(settings),
    }
