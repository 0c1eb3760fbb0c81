"""serve.connection: a connection's bytes become gunicorn requests only once whole, whatever pieces they come in."""

from __future__ import annotations

import io
import socket
import time
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.http import errors
from gunicorn.http import body as gunicorn_body
from gunicorn.http import unreader as gunicorn_unreader

from serve.connection import CONTINUE, BodyTooLarge, Connection

LIMIT = 1000


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    conn = Connection(Config(), server, ("127.0.0.1", 5000), ("127.0.0.1", 8080), deadline=time.monotonic() + 75)
    yield conn, client
    server.close()
    client.close()


def feed(conn: Connection, client: socket.socket, data: bytes):
    """Sends `data`, lets the connection read it, and returns the request it completes (or None)."""
    client.sendall(data)
    assert conn.receive(read_timeout=5)  # a socket pair: all of it is there at once
    return conn.take_request(LIMIT)


def post(body: bytes, **headers) -> bytes:
    fields = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return b"POST /invocations HTTP/1.1\r\nHost: x\r\n" + fields.encode() + b"\r\n" + body


def test_a_request_in_pieces_is_handed_on_once_whole_with_its_body_in_memory(pair):
    conn, client = pair
    request = post(b"1,2,3,4", Content_Length=7)
    cuts = [0, 10, 40, len(request) - 3]
    for start, end in zip(cuts, cuts[1:]):
        assert feed(conn, client, request[start:end]) is None
    whole = feed(conn, client, request[cuts[-1]:])
    assert whole.method == "POST" and whole.path == "/invocations" and whole.body.read() == b"1,2,3,4"
    assert not conn.buffer and conn.take_request(LIMIT) is None


def test_pipelined_requests_come_out_one_at_a_time(pair):
    conn, client = pair
    first = feed(conn, client, post(b"1,2", Content_Length=3) + b"GET /ping HTTP/1.1\r\n\r\n" + b"GET /p")
    assert first.body.read() == b"1,2"
    second = conn.take_request(LIMIT)
    assert second.path == "/ping" and second.body.read() == b""
    assert conn.take_request(LIMIT) is None and conn.buffer == b"GET /p"


def test_a_chunked_body_is_whole_only_after_its_last_chunk_and_trailers(pair):
    conn, client = pair
    head = post(b"", Transfer_Encoding="chunked")
    assert feed(conn, client, head + b"4\r\n1,2,\r\n3;ext=1\r\n3,4\r\n") is None
    assert feed(conn, client, b"0\r\nX-Trailer: 1\r\n") is None
    request = feed(conn, client, b"\r\nGET /ping HTTP/1.1\r\n\r\n")
    assert request.body.read() == b"1,2,3,4"
    assert conn.take_request(LIMIT).path == "/ping"


def test_a_bad_chunk_is_handed_on_for_gunicorn_to_refuse(pair):
    conn, client = pair
    request = feed(conn, client, post(b"zz\r\n", Transfer_Encoding="chunked"))
    with pytest.raises(errors.InvalidChunkSize):
        request.body.read()


def test_a_chunked_body_declaring_more_than_the_limit_is_refused_before_it_arrives(pair):
    conn, client = pair
    with pytest.raises(BodyTooLarge):
        feed(conn, client, post(b"%x\r\n" % (LIMIT + 1), Transfer_Encoding="chunked"))


def test_a_length_over_the_limit_is_handed_on_at_once_and_its_body_never_reads_short(pair):
    conn, client = pair
    request = feed(conn, client, post(b"1,2,3", Content_Length=LIMIT + 1))
    assert request is not None and conn.unread
    with pytest.raises(errors.NoMoreData):
        request.body.read()


def test_a_client_expecting_100_continue_is_told_once_and_gunicorn_does_not_repeat_it(pair):
    conn, client = pair
    assert feed(conn, client, post(b"", Content_Length=3, Expect="100-continue")) is None
    assert conn.expects_continue()
    conn.continued = True
    assert not conn.expects_continue()
    request = feed(conn, client, b"1,2")
    assert request.body.read() == b"1,2" and ("EXPECT", "100-continue") not in request.headers
    assert not getattr(request, "_expected_100_continue", False) and CONTINUE.startswith(b"HTTP/1.1 100 ")


@pytest.mark.parametrize("data, error", [
    (b"GET /ping?" + b"a" * 5000, errors.LimitRequestLine),  # no end of line yet: refused already
    (b"GET /ping HTTP/1.1\r\n" + b"X-A: 1\r\n" * 120 + b"\r\n", errors.LimitRequestHeaders),
    (b"GET /ping HTTP/1.1\nHost: x\n\n", errors.ParseException),  # bare LF: never waited on
])
def test_requests_over_gunicorns_limits_or_malformed_raise_its_errors(pair, data, error):
    conn, client = pair
    with pytest.raises(error):
        feed(conn, client, data)


def test_the_read_deadline_starts_at_a_requests_first_byte_and_moves_with_its_body(pair):
    conn, client = pair
    before = time.monotonic()
    feed(conn, client, b"POST /invocations HTTP/1.1\r\n")
    head_deadline = conn.deadline
    assert before + 5 <= head_deadline <= time.monotonic() + 5
    feed(conn, client, b"Host: x\r\n")  # more of the head: the deadline stays
    assert conn.deadline == head_deadline
    feed(conn, client, b"Content-Length: 9\r\n\r\n1,2")
    feed(conn, client, b",3")  # the body moves: so does the deadline
    assert conn.deadline > head_deadline and conn.has_head


def test_a_large_body_read_in_small_steps_is_not_copied_again_on_each_step(pair, monkeypatch):
    """werkzeug reads a body 64 KiB at a time; gunicorn's readers would copy what is left of it into a new buffer
    on every step: quadratic in the body's size."""
    copied = []

    class CountingBuffer(io.BytesIO):
        def write(self, data):
            copied.append(len(data))
            return super().write(data)

    for module in (gunicorn_body, gunicorn_unreader):
        monkeypatch.setattr(module, "io", SimpleNamespace(BytesIO=CountingBuffer, SEEK_END=io.SEEK_END))
    conn, client = pair
    body = bytes(range(256)) * (4 * 4096)  # 4 MiB
    data, sent, request = post(body, Content_Length=len(body)), 0, None
    client.setblocking(False)
    while request is None:
        try:
            sent += client.send(data[sent:])
        except BlockingIOError:
            pass
        conn.receive(read_timeout=5)
        request = conn.take_request(len(body))
    assert b"".join(iter(lambda: request.body.read(64 * 1024), b"")) == body
    assert sum(copied) <= len(body)
