"""Worker test fixtures: the end-to-end tests run on both Kafka clients."""

from __future__ import annotations

from collections.abc import Iterator

import kafka_harness
import pytest


@pytest.fixture(params=["kafka-python", "confluent"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """The worker's ``--kafka-client``: every end-to-end behaviour must hold on both."""
    return str(request.param)


@pytest.fixture(scope="session", autouse=True)
def worker_logs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Worker subprocess logs go to pytest's temporary directory (``worker-logs`` under the run's
    base directory, which pytest keeps for its last few runs), not into ``/tmp`` for good."""
    kafka_harness.WorkerLogs.directory = tmp_path_factory.mktemp("worker-logs")
    yield
    kafka_harness.WorkerLogs.directory = None
