"""The small slice of HTTP/1.x the metrics endpoint speaks: request heads in, whole replies out.

Pure functions, no sockets. Only what Prometheus and Kubernetes probes send is understood:
``GET``/``HEAD`` with an origin-form target, HTTP/1.0 or 1.1, no body. Every reply carries
``Content-Length`` and ``Connection: close``: one request per connection, never keep-alive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

#: Upper bound on the request line plus headers, blank line included (the common 8 KiB of servers).
MAX_HEAD_BYTES = 8192
TEXT_PLAIN = "text/plain; charset=utf-8"
ALLOWED_METHODS = ("GET", "HEAD")

# End of the head: a blank line; bare LF accepted like http.server does.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_VERSION = re.compile(r"HTTP/1\.[01]")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Request:
    """A request head that passed every check.

    Attributes:
        method: ``"GET"`` or ``"HEAD"``.
        path: the target without its query string (``"/metrics?x=1"`` → ``"/metrics"``).
    """

    method: str
    path: str

    @property
    def head_only(self) -> bool:
        return self.method == "HEAD"


def find_head_end(buffer: bytes | bytearray, start: int = 0) -> int | None:
    """Return the index just past the blank line that ends the head, or ``None`` while incomplete.

    Args:
        start: where new bytes begin; the search backs up 3 bytes so a terminator split across
            two reads is still found, and earlier bytes are not scanned again.
    """
    match = _HEAD_END.search(buffer, max(0, start - 3))
    return match.end() if match else None


def parse_head(head: bytes | bytearray) -> Request | HTTPStatus:
    """Check a complete request head; return the request or the error status to answer with.

    Returns:
        :class:`Request`, else ``BAD_REQUEST`` (malformed request line, not HTTP/1.0 or 1.1, a
        target that is not a path), ``METHOD_NOT_ALLOWED`` (a method other than GET/HEAD) or
        ``REQUEST_HEADER_FIELDS_TOO_LARGE`` (the head is over :data:`MAX_HEAD_BYTES`).
        Header fields are not interpreted.
    """
    if len(head) > MAX_HEAD_BYTES:
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    line = bytes(head).split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3:
        return HTTPStatus.BAD_REQUEST
    method, target, version = parts
    if not _TOKEN.fullmatch(method) or not _VERSION.fullmatch(version) or not target.startswith("/"):
        return HTTPStatus.BAD_REQUEST
    if method not in ALLOWED_METHODS:
        return HTTPStatus.METHOD_NOT_ALLOWED
    return Request(method, target.split("?", 1)[0])


def render_reply(
    status: HTTPStatus,
    body: bytes,
    content_type: str = TEXT_PLAIN,
    *,
    head_only: bool = False,
) -> bytes:
    """Return the whole reply as bytes: status line, headers, blank line, then ``body``.

    Args:
        head_only: the reply to a HEAD request: same headers (``Content-Length`` of ``body``
            included), no body.
    """
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        lines.append(f"Allow: {', '.join(ALLOWED_METHODS)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


def error_reply(status: HTTPStatus, *, head_only: bool = False) -> bytes:
    """Return a short plain-text reply for an error ``status`` (its reason phrase as the body)."""
    return render_reply(status, f"{status.phrase.lower()}\n".encode(), head_only=head_only)
