"""Request-head parsing and reply rendering of the metrics endpoint."""

from __future__ import annotations

from http import HTTPStatus

from hypothesis import given
from hypothesis import strategies as st

from worker.http_message import MAX_HEAD_BYTES, Request, find_head_end, parse_head, render_reply


def test_valid_heads_parse_to_method_and_path() -> None:
    assert parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == Request("GET", "/metrics")
    assert parse_head(b"HEAD /healthz?verbose=1 HTTP/1.0\n\n") == Request("HEAD", "/healthz")


def test_invalid_heads_map_to_their_status() -> None:
    assert parse_head(b"POST /metrics HTTP/1.1\r\n\r\n") == HTTPStatus.METHOD_NOT_ALLOWED
    assert parse_head(b"GET /metrics\r\n\r\n") == HTTPStatus.BAD_REQUEST  # HTTP/0.9
    assert parse_head(b"PRI * HTTP/2.0\r\n\r\n") == HTTPStatus.BAD_REQUEST
    assert parse_head(b"GET http://x/metrics HTTP/1.1\r\n\r\n") == HTTPStatus.BAD_REQUEST
    assert parse_head(b"G(T / HTTP/1.1\r\n\r\n") == HTTPStatus.BAD_REQUEST
    too_big = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n"
    assert parse_head(too_big) == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_request_or_a_client_error(head: bytes) -> None:
    parsed = parse_head(head)
    assert isinstance(parsed, Request) or parsed in {
        HTTPStatus.BAD_REQUEST,
        HTTPStatus.METHOD_NOT_ALLOWED,
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
    }
    if isinstance(parsed, Request):
        assert parsed.method in {"GET", "HEAD"} and parsed.path.startswith("/")


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"GET", b" ", b"x"]), max_size=30), st.integers(0, 60))
def test_head_end_is_found_whatever_the_read_boundaries(pieces: list[bytes], split: int) -> None:
    data = b"".join(pieces)
    split = min(split, len(data))
    if find_head_end(data[:split]) is None:  # the first read did not complete the head
        assert find_head_end(data, split) == find_head_end(data)


def test_replies_carry_length_and_close_and_head_drops_the_body() -> None:
    full = render_reply(HTTPStatus.OK, b"ok\n")
    assert full.startswith(b"HTTP/1.1 200 OK\r\n") and full.endswith(b"\r\n\r\nok\n")
    assert b"Content-Length: 3\r\n" in full and b"Connection: close\r\n" in full
    head = render_reply(HTTPStatus.OK, b"ok\n", head_only=True)
    assert head == full[: -len(b"ok\n")]
    assert b"Allow: GET, HEAD\r\n" in render_reply(HTTPStatus.METHOD_NOT_ALLOWED, b"")
