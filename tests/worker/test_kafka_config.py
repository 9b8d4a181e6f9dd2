"""kafka-python's configuration: the installed checksum implementation, and the same security
settings in both clients' names."""

from __future__ import annotations

from worker import confluent_config, kafka_config
from worker.kafka_config import crc32c_implementation
from worker.settings import load_settings


def test_kafka_python_verifies_checksums_in_c() -> None:
    # The pure-Python fallback spent 64% of the worker's CPU in a profile; the project depends on crc32c.
    assert crc32c_implementation() == "c"


def test_both_clients_get_the_same_security_settings() -> None:
    settings = load_settings(
        {
            "model_dir": "m",
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "u",
                "sasl_password": "p",
            },
        }
    ).kafka
    assert confluent_config.security_config(settings) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p",
    }  # fmt: skip
    assert kafka_config.security_config(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u", "sasl_plain_password": "p",
    }  # fmt: skip
