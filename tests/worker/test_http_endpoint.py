"""The metrics/health endpoint: replies, request bounds, and staying answerable under a connection flood."""

from __future__ import annotations

import os
import resource
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from worker.errors import SettingsError
from worker.http_endpoint import EndpointLimits, HttpEndpoint
from worker.metrics import HealthState, MetricsServer, WorkerMetrics

PARTIAL_HEAD = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Slow: "  # never finished


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def _get(port: int, path: str, timeout_s: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as reply:
            return int(reply.status), reply.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def _exchange(port: int, raw: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``raw`` on a new connection; return everything read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(raw)
        return _read_to_end(sock)


def _read_to_end(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``timeout_s``."""
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _flood_size(fds_per_connection: int, extra: int = 0) -> int:
    """Connections the test can afford under its soft fd limit (at most 500), else skip."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = _open_fds() if os.path.isdir("/proc/self/fd") else 100
    size = min(500, (soft - in_use - extra - 100) // fds_per_connection)
    if size < 50:
        pytest.skip(f"fd limit {soft} too low for a meaningful flood")
    return size


@contextmanager
def _flood(port: int, size: int) -> Iterator[list[socket.socket]]:
    """Open ``size`` connections: 60 % send an unfinished request head and stall, 40 % send nothing."""
    with ExitStack() as stack:
        socks = []
        for i in range(size):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            if i % 5 < 3:
                with suppress(OSError):  # already evicted by the server: still a flood connection
                    sock.sendall(PARTIAL_HEAD)
            socks.append(sock)
        yield socks


def _assert_answers(port: int, rounds: int = 5) -> None:
    for _ in range(rounds):
        for path in ("/healthz", "/metrics"):
            started = time.monotonic()
            assert _get(port, path)[0] == 200
            assert time.monotonic() - started < 5.0, f"{path} took too long"


@pytest.fixture
def health() -> HealthState:
    return HealthState()


@contextmanager
def _serving(health: HealthState, limits: EndpointLimits | None = None) -> Iterator[HttpEndpoint]:
    server = MetricsServer(WorkerMetrics(CollectorRegistry()).registry, health, "127.0.0.1", 0, limits)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


def test_methods_and_malformed_requests(health: HealthState) -> None:
    with _serving(health) as server:
        head = _exchange(server.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n") and b"Content-Length: 3" in head
        post = _exchange(server.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        assert _status(post) == 405 and b"Allow: GET, HEAD" in post
        assert _status(_exchange(server.port, b"GET /nope HTTP/1.1\r\n\r\n")) == 404
        assert _status(_exchange(server.port, b"HELLO\r\n\r\n")) == 400
        assert _status(_exchange(server.port, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) == 400


def test_oversized_heads_get_431_and_a_closed_connection(health: HealthState) -> None:
    with _serving(health) as server:
        long_line = _exchange(server.port, b"GET /" + b"a" * 9000)  # no end of line at all
        assert _status(long_line) == 431  # and _exchange returned: the server closed
        long_header = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
        assert _status(_exchange(server.port, long_header)) == 431
        just_fits = b"GET /healthz HTTP/1.1\r\nX-Big: " + b"c" * 8000 + b"\r\n\r\n"
        assert _status(_exchange(server.port, just_fits)) == 200
        assert _get(server.port, "/healthz")[0] == 200


def test_a_stalled_connection_is_closed_after_the_timeout(health: HealthState) -> None:
    with _serving(health, EndpointLimits(timeout_s=0.5)) as server:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(PARTIAL_HEAD)
            assert _closed_by_server(sock, timeout_s=15)
        assert time.monotonic() - started >= 0.4
        wait_for(lambda: server.open_connections == 0, 10, "the server to forget the connection")


def test_a_held_flood_does_not_block_the_probes(health: HealthState) -> None:
    size = _flood_size(fds_per_connection=2)  # client and server end, both in this process
    limits = EndpointLimits(max_connections=size + 50, timeout_s=120)
    threads_before = threading.active_count()
    with _serving(health, limits) as server:
        with _flood(server.port, size):
            wait_for(lambda: server.open_connections >= size, 30, "the flood to be accepted and held")
            _assert_answers(server.port)
            assert server.open_connections >= size  # the flood is still held, and yet we got answers
            assert threading.active_count() <= threads_before + 1 + limits.workers
        wait_for(lambda: server.open_connections == 0, 30, "the server to close the flood")
        _assert_answers(server.port, rounds=2)


def test_a_flood_over_the_cap_evicts_the_oldest_and_bounds_fds(health: HealthState) -> None:
    cap = 32
    size = _flood_size(fds_per_connection=1, extra=cap)
    limits = EndpointLimits(max_connections=cap, timeout_s=120)
    threads_before = threading.active_count()
    with _serving(health, limits) as server:
        fds_before = _open_fds()
        with _flood(server.port, size) as socks:
            # Accepting connection k evicts k - cap: this one closes once the whole flood is in.
            assert _closed_by_server(socks[size - cap - 1], timeout_s=30)
            assert _closed_by_server(socks[0], timeout_s=1)
            assert server.open_connections <= cap
            assert _open_fds() <= fds_before + size + cap + 16  # the test's ends + at most `cap` of ours
            assert threading.active_count() <= threads_before + 1 + limits.workers
            _assert_answers(server.port)
            assert server.open_connections <= cap
        _assert_answers(server.port, rounds=2)


def test_a_stuck_metrics_render_gets_503_beyond_the_queue_and_never_blocks_probes(health: HealthState) -> None:
    release, rendering = threading.Event(), threading.Event()

    def render() -> tuple[bytes, str]:
        rendering.set()
        assert release.wait(30)
        return b"m 1\n", "text/plain"

    server = HttpEndpoint(render, health, "127.0.0.1", 0, EndpointLimits(workers=1, queue_size=1))
    server.start()
    socks: list[socket.socket] = []
    try:
        request = b"GET /metrics HTTP/1.1\r\n\r\n"
        socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
        socks[0].sendall(request)
        assert rendering.wait(30)
        for _ in range(3):  # one more fits the queue, two do not
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
            socks[-1].sendall(request)
        answered: list[int] = []
        deadline = time.monotonic() + 30
        while len(answered) < 2 and time.monotonic() < deadline:
            readable, _, _ = select.select(socks[1:], [], [], 1.0)
            for sock in readable:
                answered.append(_status(_read_to_end(sock)))
                socks.remove(sock)
                sock.close()
        assert answered == [503, 503]
        assert _get(server.port, "/healthz")[0] == 200  # while /metrics is stuck
        release.set()
        assert [_status(_read_to_end(sock)) for sock in socks] == [200, 200]
    finally:
        release.set()
        for sock in socks:
            sock.close()
        server.stop()


def test_a_failing_render_answers_500_and_the_worker_survives(health: HealthState) -> None:
    calls = []

    def render() -> tuple[bytes, str]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("registry exploded")
        return b"m 1\n", "text/plain"

    server = HttpEndpoint(render, health, "127.0.0.1", 0, EndpointLimits(workers=1))
    server.start()
    try:
        assert _get(server.port, "/metrics")[0] == 500
        assert _get(server.port, "/metrics") == (200, "m 1\n")
    finally:
        server.stop()


def test_stop_is_idempotent_and_releases_the_port(health: HealthState) -> None:
    never_started = MetricsServer(CollectorRegistry(), health, "127.0.0.1", 0)
    never_started.stop()
    with _serving(health) as server:
        port = server.port
    server.stop()
    again = MetricsServer(CollectorRegistry(), health, "127.0.0.1", port)
    again.stop()


def test_limits_are_checked() -> None:
    for bad in ({"workers": 0}, {"queue_size": -1}, {"max_connections": 0}, {"timeout_s": 0.0}):
        with pytest.raises(SettingsError, match="invalid HTTP endpoint limits"):
            EndpointLimits(**bad)
