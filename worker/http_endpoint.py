"""The worker's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz``, with bounded cost.

A flood of slow or idle connections (slowloris) must not make the probes unanswerable, nor pile up
threads or file descriptors. So:

- one I/O thread owns every socket (:class:`~worker.http_transport.ConnectionLoop`): a stalled
  client costs one file descriptor, no thread; at most ``max_connections`` are open (a new one
  closes the oldest), each for at most ``timeout_s`` from accept to close;
- request line plus headers ≤ 8 KiB (else 431), GET and HEAD only (else 405), one request per
  connection (``Connection: close``);
- ``/healthz`` and ``/readyz`` are answered on the I/O thread (a lock read), so they never wait
  for ``/metrics``; ``/metrics`` renders on ``workers`` threads with at most ``queue_size``
  requests waiting for one, and is answered 503 at once beyond that.

Threads: ``1 + workers``. No third-party imports: ``/metrics`` is a callable handed in
(``worker.metrics`` wires ``prometheus_client`` to it).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

from worker.errors import SettingsError
from worker.http_message import Request, error_reply, render_reply
from worker.http_transport import ConnectionLoop, Exchange

logger = logging.getLogger(__name__)

#: Renders the ``/metrics`` body: returns ``(body, content_type)``. Called on a worker thread.
RenderMetrics = Callable[[], tuple[bytes, str]]

_JOIN_TIMEOUT_S = 5.0


class HealthProbe(Protocol):
    """What ``/healthz`` and ``/readyz`` read (``worker.metrics.HealthState``); must not block."""

    @property
    def alive(self) -> bool: ...

    @property
    def ready(self) -> bool: ...


@dataclass(frozen=True)
class EndpointLimits:
    """Bounds of one :class:`HttpEndpoint`.

    Attributes:
        workers: threads that render ``/metrics``.
        queue_size: ``/metrics`` requests that may wait for a free worker; more get 503.
        max_connections: open connections at most; when full, a new one closes the oldest.
        timeout_s: lifetime of a connection from accept to close, in seconds.
    """

    workers: int = 2
    queue_size: int = 8
    max_connections: int = 128
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue_size < 0 or self.max_connections < 1 or not self.timeout_s > 0:
            raise SettingsError(f"invalid HTTP endpoint limits: {self}")


class HttpEndpoint:
    """Serve ``/metrics``, ``/healthz`` (``health.alive``) and ``/readyz`` (``health.ready``).

    Probes answer 200 when true, else 503; ``/metrics`` 200 (500 if ``render_metrics`` raised);
    other paths 404. The socket is bound in the constructor (``OSError`` if the address is
    taken); nothing is served before :meth:`start`.

    Args:
        host, port: where to listen; an IPv6 literal listens on IPv6 (``"::"``: IPv4 too, where
            the system allows). Port 0 picks a free port (see :attr:`port`).
        limits: :class:`EndpointLimits` defaults when ``None``.
    """

    def __init__(
        self,
        render_metrics: RenderMetrics,
        health: HealthProbe,
        host: str,
        port: int,
        limits: EndpointLimits | None = None,
    ) -> None:
        self.limits = limits if limits is not None else EndpointLimits()
        self._render_metrics = render_metrics
        self._health = health
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        dualstack = family == socket.AF_INET6 and socket.has_dualstack_ipv6()  # "::" takes IPv4 too
        listener = socket.create_server((host, port), family=family, backlog=128, dualstack_ipv6=dualstack)
        self._port = int(listener.getsockname()[1])
        self._loop = ConnectionLoop(listener, self._dispatch, self.limits.max_connections, self.limits.timeout_s)
        self._slots = threading.Semaphore(self.limits.workers + self.limits.queue_size)
        self._jobs: queue.SimpleQueue[tuple[Exchange, Request] | None] = queue.SimpleQueue()
        self._io_thread = threading.Thread(target=self._loop.run, name="metrics-http", daemon=True)
        self._workers = [
            threading.Thread(target=self._work, name=f"metrics-http-worker-{i}", daemon=True)
            for i in range(self.limits.workers)
        ]

    @property
    def port(self) -> int:
        return self._port

    @property
    def open_connections(self) -> int:
        """Connections open right now (a snapshot, for tests and diagnostics)."""
        return self._loop.open_connections

    def start(self) -> None:
        """Start serving (once)."""
        for worker in self._workers:
            worker.start()
        self._io_thread.start()

    def stop(self) -> None:
        """Close the listener and every connection and end the threads; safe to call twice."""
        self._loop.stop()
        if self._io_thread.is_alive():
            self._io_thread.join(_JOIN_TIMEOUT_S)
        else:
            self._loop.close()  # never started
        running = [worker for worker in self._workers if worker.is_alive()]
        for _ in running:
            self._jobs.put(None)
        for worker in running:
            worker.join(_JOIN_TIMEOUT_S)

    def _dispatch(self, exchange: Exchange, request: Request) -> bytes | None:
        """Reply to ``request`` now, or queue it for a worker and return ``None`` (I/O thread)."""
        if request.path in ("/healthz", "/readyz"):
            live = request.path == "/healthz"
            ok = self._health.alive if live else self._health.ready
            text = ("ok" if live else "ready") if ok else ("loop not alive" if live else "not ready")
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            return render_reply(status, f"{text}\n".encode(), head_only=request.head_only)
        if request.path != "/metrics":
            return render_reply(HTTPStatus.NOT_FOUND, b"not found\n", head_only=request.head_only)
        if not self._slots.acquire(blocking=False):
            return error_reply(HTTPStatus.SERVICE_UNAVAILABLE, head_only=request.head_only)
        self._jobs.put((exchange, request))
        return None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            exchange, request = job
            try:
                body, content_type = self._render_metrics()
                reply = render_reply(HTTPStatus.OK, body, content_type, head_only=request.head_only)
            except Exception:  # a failing render must not cost a worker: answer 500, keep serving
                logger.exception("metrics_render_failed")
                reply = error_reply(HTTPStatus.INTERNAL_SERVER_ERROR, head_only=request.head_only)
            finally:
                self._slots.release()
            self._loop.reply_later(exchange, reply)
