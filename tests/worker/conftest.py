"""Worker test fixtures: the end-to-end tests run on both Kafka clients."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["kafka-python", "confluent"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """The worker's ``--kafka-client``: every end-to-end behaviour must hold on both."""
    return str(request.param)
