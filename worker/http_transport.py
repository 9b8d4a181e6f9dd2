"""The connections of the HTTP endpoint: one thread, non-blocking sockets, bounded count and lifetime.

:class:`ConnectionLoop` owns every socket of one listener and runs on one thread (a :mod:`selectors`
loop). It accepts, reads each request head, hands complete valid heads to a dispatch callback,
writes the reply and closes. Reading never waits on one client, so a slow or idle client costs one
file descriptor, never a thread. The bounds:

- at most ``max_connections`` are open; accepting one more first closes the oldest;
- each is closed ``timeout_s`` after it was accepted, whatever it is doing: sending its head,
  waiting for its reply, reading the reply, or lingering after it;
- a head over :data:`~worker.http_message.MAX_HEAD_BYTES` is answered 431, a malformed one 400,
  a method other than GET/HEAD 405; one request per connection.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http import HTTPStatus

from worker.http_message import MAX_HEAD_BYTES, Request, error_reply, find_head_end, parse_head

logger = logging.getLogger(__name__)

_ACCEPTS_PER_WAKE = 64  # keeps a connection burst from starving reads and writes
_ACCEPT_PAUSE_S = 0.5  # out of file descriptors with none of ours to close: try again later
_LINGER_BYTES = 65_536  # read and dropped after the reply at most


class Exchange:
    """One accepted connection and its single request/reply (touched by the loop thread only)."""

    __slots__ = ("deadline", "events", "inbox", "key", "lingered", "outbox", "sock")

    def __init__(self, key: int, sock: socket.socket, deadline: float) -> None:
        self.key = key
        self.sock = sock
        self.deadline = deadline  # time.monotonic() seconds
        self.events = 0  # what the selector watches for; 0 = unregistered
        self.inbox = bytearray()
        self.outbox: memoryview | None = None  # set once the reply is known
        self.lingered = 0


#: Called on the loop thread for each valid request: the reply now, or ``None`` when it will come
#: through :meth:`ConnectionLoop.reply_later`. Must not block.
Dispatch = Callable[[Exchange, Request], bytes | None]


class ConnectionLoop:
    """Serve the connections of ``listener`` (bound and listening) on the thread that calls :meth:`run`.

    Args:
        dispatch: decides the reply to each valid request (see :data:`Dispatch`).
        max_connections: open connections at most.
        timeout_s: lifetime of a connection, from accept to close, in seconds.
    """

    def __init__(self, listener: socket.socket, dispatch: Dispatch, max_connections: int, timeout_s: float) -> None:
        self._listener = listener
        self._listener.setblocking(False)
        self._dispatch = dispatch
        self._max_connections = max_connections
        self._timeout_s = timeout_s
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._conns: OrderedDict[int, Exchange] = OrderedDict()  # accept order = deadline order
        self._next_key = 0
        self._later: queue.SimpleQueue[tuple[Exchange, bytes]] = queue.SimpleQueue()
        self._accept_paused_until: float | None = None
        self._stopping = threading.Event()
        self._closed = False

    @property
    def open_connections(self) -> int:
        """Connections open right now (a snapshot, for tests and diagnostics)."""
        return len(self._conns)

    def run(self) -> None:
        """Serve until :meth:`stop`; then close the listener and every connection."""
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                for key, events in self._selector.select(self._select_timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._send_later_replies()
                    else:
                        self._service(key.data, events)
                self._expire(time.monotonic())
        except Exception:  # top of the thread: say why the endpoint went away, then end it
            logger.exception("http_endpoint_crashed")
            raise
        finally:
            self.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread)."""
        self._stopping.set()
        self._wake()

    def reply_later(self, exchange: Exchange, reply: bytes) -> None:
        """Send ``reply`` on ``exchange`` (from any thread); dropped if it was closed meanwhile."""
        self._later.put((exchange, reply))
        self._wake()

    def close(self) -> None:
        """Close every socket (idempotent; :meth:`run` does it on return)."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self._conns.values()):
            self._close(conn)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    def _select_timeout(self) -> float | None:
        wake_at = [next(iter(self._conns.values())).deadline] if self._conns else []
        if self._accept_paused_until is not None:
            wake_at.append(self._accept_paused_until)
        return max(0.0, min(wake_at) - time.monotonic()) if wake_at else None

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError as exc:  # EMFILE/ENFILE: free one of ours, else pause accepting
                if self._conns:
                    self._close(next(iter(self._conns.values())))
                    continue
                logger.warning("http_endpoint_accept_paused", extra={"error": str(exc)})
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE_S
                return
            if len(self._conns) >= self._max_connections:
                self._close(next(iter(self._conns.values())))
            sock.setblocking(False)
            conn = Exchange(self._next_key, sock, time.monotonic() + self._timeout_s)
            self._next_key += 1
            self._conns[conn.key] = conn
            self._watch(conn, selectors.EVENT_READ)

    def _service(self, conn: Exchange, events: int) -> None:
        if conn.key not in self._conns:
            return  # closed (evicted) earlier in the same batch of events
        if events & selectors.EVENT_WRITE:
            self._write(conn)
        elif conn.outbox is None:
            self._read_head(conn)
        else:
            self._linger(conn)

    def _read_head(self, conn: Exchange) -> None:
        try:
            chunk = conn.sock.recv(MAX_HEAD_BYTES + 1 - len(conn.inbox))
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(conn)  # the client went away before finishing its request
            return
        start = len(conn.inbox)
        conn.inbox += chunk
        end = find_head_end(conn.inbox, start)
        if end is None and len(conn.inbox) <= MAX_HEAD_BYTES:
            return
        parsed = parse_head(conn.inbox if end is None else conn.inbox[:end])
        reply = error_reply(parsed) if isinstance(parsed, HTTPStatus) else self._dispatch(conn, parsed)
        if reply is None:
            self._watch(conn, 0)  # nothing to read or write until the reply comes
        else:
            self._reply(conn, reply)

    def _send_later_replies(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        while True:
            try:
                conn, reply = self._later.get_nowait()
            except queue.Empty:
                return
            if conn.key in self._conns:  # else it timed out or was evicted meanwhile
                self._reply(conn, reply)

    def _reply(self, conn: Exchange, reply: bytes) -> None:
        conn.outbox = memoryview(reply)
        self._write(conn)

    def _write(self, conn: Exchange) -> None:
        assert conn.outbox is not None
        try:
            sent = conn.sock.send(conn.outbox)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(conn)
            return
        conn.outbox = conn.outbox[sent:]
        if conn.outbox:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        # Half-close, then read until the client closes: closing with unread request bytes in
        # the kernel buffer would send a reset that can destroy the reply before it is read.
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        self._watch(conn, selectors.EVENT_READ)

    def _linger(self, conn: Exchange) -> None:
        try:
            chunk = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        conn.lingered += len(chunk)
        if not chunk or conn.lingered > _LINGER_BYTES:
            self._close(conn)

    def _expire(self, now: float) -> None:
        while self._conns:
            oldest = next(iter(self._conns.values()))
            if oldest.deadline > now:
                break
            self._close(oldest)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ)

    def _watch(self, conn: Exchange, events: int) -> None:
        if events == conn.events:
            return
        if not conn.events:
            self._selector.register(conn.sock, events, conn)
        elif not events:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.events = events

    def _close(self, conn: Exchange) -> None:
        self._watch(conn, 0)
        del self._conns[conn.key]
        conn.sock.close()

    def _wake(self) -> None:
        # OSError: the buffer is full (a wake-up is already pending) or the loop has closed.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
