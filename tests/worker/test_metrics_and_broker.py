"""Worker metrics and the embedded broker launcher (the HTTP endpoint: test_http_endpoint.py)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from worker.embedded_broker import EmbeddedBroker
from worker.errors import BrokerStartError
from worker.metrics import WorkerMetrics


def test_rolling_window_keeps_the_last_10000() -> None:
    metrics = WorkerMetrics(CollectorRegistry())
    metrics.observe_scores(np.full(10_000, 5.0), threshold=1.0)
    metrics.observe_scores(np.zeros(10_000), threshold=1.0)
    assert metrics.flag_rate._value.get() == 0.0


@pytest.mark.kafka
def test_embedded_broker_starts_accepts_and_stops() -> None:
    broker = EmbeddedBroker().start()
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=1):
            pass
        with pytest.raises(BrokerStartError, match="already in use"):
            EmbeddedBroker(broker.port).start()
    finally:
        broker.stop()
    broker.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()
