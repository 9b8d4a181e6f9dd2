"""The installed client's checksum, and settings that would crash or stall the worker later."""

from __future__ import annotations

import pytest

from worker.errors import SettingsError
from worker.kafka_io import crc32c_implementation
from worker.settings import load_settings


def test_kafka_python_verifies_checksums_in_c() -> None:
    # The pure-Python fallback spent 64% of the worker's CPU in a profile; the project depends on crc32c.
    assert crc32c_implementation() == "c"


@pytest.mark.parametrize("topic", ["bad topic", "events/x", "..", ".", "t" * 250, "événements"])
def test_illegal_topic_names_are_refused_at_start_up(topic: str) -> None:
    with pytest.raises(SettingsError, match="legal Kafka topic name"):
        load_settings({"model_dir": "m", "kafka": {"output_topic": topic}})


def test_input_limit_is_bounded_by_what_the_producer_can_send() -> None:
    with pytest.raises(SettingsError, match="a third of max_request_bytes"):
        load_settings({"model_dir": "m", "kafka": {"max_message_bytes": 400_000}})
    settings = load_settings(
        {"model_dir": "m", "kafka": {"max_message_bytes": 400_000, "max_request_bytes": 1_200_000}}
    )
    assert settings.kafka.max_request_bytes == 1_200_000
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "m", "kafka": {"max_request_bytes": 1000}})


def test_undeliverable_policy_values() -> None:
    assert load_settings({"model_dir": "m"}).undeliverable_policy == "skip"
    assert load_settings({"model_dir": "m", "undeliverable_policy": "stop"}).undeliverable_policy == "stop"
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "m", "undeliverable_policy": "retry-forever"})


def test_kafka_client_choice() -> None:
    assert load_settings({"model_dir": "m"}).kafka_client == "kafka-python"
    assert load_settings({"model_dir": "m", "kafka_client": "confluent"}).kafka_client == "confluent"
    with pytest.raises(SettingsError):
        load_settings({"model_dir": "m", "kafka_client": "librdkafka"})


def test_both_clients_get_the_same_security_settings() -> None:
    from worker.confluent_io import security_config  # noqa: PLC0415
    from worker.kafka_io import _security  # noqa: PLC0415

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
    assert security_config(settings) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p",
    }  # fmt: skip
    assert _security(settings) == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u", "sasl_plain_password": "p",
    }  # fmt: skip
