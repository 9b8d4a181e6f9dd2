"""Metrics HTTP endpoints and the embedded broker launcher."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from worker.embedded_broker import EmbeddedBroker
from worker.errors import BrokerStartError
from worker.metrics import HealthState, MetricsServer, WorkerMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def test_endpoints_follow_health_state() -> None:
    registry = CollectorRegistry()
    metrics, health = WorkerMetrics(registry), HealthState()
    metrics.observe_scores(np.array([0.5, 2.0, 3.0]), threshold=1.0)
    server = MetricsServer(registry, health, "127.0.0.1", 0)
    server.start()
    try:
        assert _get(server.port, "/healthz")[0] == 200
        assert _get(server.port, "/readyz")[0] == 503
        health.set_ready(True)
        assert _get(server.port, "/readyz")[0] == 200
        status, body = _get(server.port, "/metrics")
        assert status == 200
        assert 'kestrel_events_total{outcome="normal"} 0.0' in body
        assert "kestrel_flag_rate 0.666" in body
        assert 'kestrel_score_quantile{quantile="0.5"} 2.0' in body
        health.set_stopped()
        assert _get(server.port, "/healthz")[0] == 503 and _get(server.port, "/readyz")[0] == 503
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.stop()


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
