"""Shared fixtures: a tiny real model artifact and a Kafka-protocol broker.

Broker choice: ``KAFKA_BOOTSTRAP_SERVERS`` if set; else a testcontainers Kafka when a Docker
engine answers; else the embedded Tansu broker (one per test session). Tests use unique topic
names and group ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny_model import TinyModel, build_tiny_model

from worker.embedded_broker import EmbeddedBroker


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A real, small detector artifact (built in ~1 s) with NSL-KDD normal and attack events."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@dataclass(frozen=True)
class KafkaBroker:
    """Where the test broker listens; ``embedded`` is set when it is the Tansu subprocess."""

    bootstrap_servers: str
    embedded: EmbeddedBroker | None


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]  # noqa: PLC0415 - optional, only to probe

        client = docker.from_env(timeout=2)
        return bool(client.ping())
    except Exception:  # any failure means "no usable engine"
        return False


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A Kafka-protocol broker for the whole session."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaBroker(external, None)
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer  # noqa: PLC0415

        with KafkaContainer() as container:
            yield KafkaBroker(container.get_bootstrap_server(), None)
        return
    with EmbeddedBroker() as broker:
        yield KafkaBroker(broker.bootstrap_servers, broker)


@pytest.fixture
def model_dir(tiny_model: TinyModel) -> Path:
    path: Path = tiny_model.path
    return path


@pytest.fixture
def inside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory is an empty ``tmp_path/here`` (restored after the test)."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    return here


@pytest.fixture(scope="session")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEM file holding one self-signed CA certificate (as ``WORKER_KAFKA__SSL_CAFILE`` takes)."""
    import datetime  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kestrel test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path
