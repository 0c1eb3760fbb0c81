"""serve.responses through a worker's request path: a response whose body is not chunked leaves in one send, and every
response's bytes are those gunicorn's own Response writes."""

from __future__ import annotations

import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import gunicorn.util
import pytest
from flask import Flask, Response
from gunicorn.config import Config
from gunicorn.http import wsgi

from serve.connection import Connection
from serve.workers import InlineWorker, _honour_connection_close
from tests.conftest import FEATURES

LARGE = bytes(range(256)) * 4096  # 1 MiB


class CountingSocket:
    """A socket that counts the system calls that send."""

    def __init__(self, sock: socket.socket):
        self.sock, self.sends = sock, 0

    def send(self, data, *flags):
        self.sends += 1
        return self.sock.send(data, *flags)

    def sendall(self, data, *flags):
        self.sends += 1
        return self.sock.sendall(data, *flags)

    def sendmsg(self, *args):
        self.sends += 1
        return self.sock.sendmsg(*args)

    def __getattr__(self, name):
        return getattr(self.sock, name)


def flask_app() -> Flask:
    app = Flask("t")

    @app.route("/invocations", methods=["GET", "POST"])
    def small():
        return Response(b"0.25\n", content_type="text/csv")

    @app.get("/empty")
    def empty():
        return Response(status=204)

    @app.get("/large")
    def large():
        return Response(LARGE, content_type="application/octet-stream")

    @app.get("/close")
    def close():
        return Response(b'{"error":"x"}', status=413, headers={"Connection": "close"})

    return app


def pieces(environ, start_response):
    """A bare WSGI app: a known length, an empty first piece."""
    start_response("200 OK", [("Content-Length", "4"), ("Content-Type", "text/plain")])
    return [b"", b"ab", b"cd"]


def streamed(environ, start_response):
    """No length: chunked on HTTP/1.1, read to the close on HTTP/1.0."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"first ", b"second"]


def worker(app, gunicorns: bool) -> InlineWorker:
    """The worker's request path without an arbiter; with `gunicorns`, writing gunicorn's own Response."""
    made = InlineWorker.__new__(InlineWorker)
    made.cfg, made.wsgi, made.nr, made.max_requests, made.alive = Config(), _honour_connection_close(app), 0, \
        sys.maxsize, True
    if gunicorns:
        made.response_class = wsgi.Response
    return made


def serve(app, raw: bytes, gunicorns: bool = False) -> tuple[int, bytes, bool]:
    """One request through the worker's handle(): the sends it took, the bytes the client got, keep-alive."""
    server, client = socket.socketpair()
    counting = CountingSocket(server)
    with server, client:
        conn = Connection(Config(), counting, ("127.0.0.1", 5000), ("127.0.0.1", 8080), time.monotonic() + 75)
        client.sendall(raw)
        assert conn.receive(read_timeout=5)
        request = conn.take_request(10 ** 7)
        received = bytearray()
        with ThreadPoolExecutor(1) as reader:  # read while the worker writes: a large body fills the socket buffer
            done = reader.submit(read_to_end, client, received)
            keep = worker(app, gunicorns).handle(conn, request)
            server.shutdown(socket.SHUT_WR)
            done.result(timeout=30)
    return counting.sends, bytes(received), keep


def read_to_end(sock: socket.socket, into: bytearray) -> None:
    while chunk := sock.recv(1 << 20):
        into += chunk


def get(path: str, method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nHost: x\r\n\r\n".encode()


def post(row: bytes) -> bytes:
    return b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s" % (
        len(row), row)


SINGLE_ROW = post(b"1,2\n")
CASES = {  # name: (app, request, sends with the head held for the body)
    "single row": (flask_app(), SINGLE_ROW, 1),
    "204": (flask_app(), get("/empty"), 1),
    "404": (flask_app(), get("/nowhere"), 1),
    "HEAD": (flask_app(), get("/invocations", "HEAD"), 1),
    "Connection: close": (flask_app(), get("/close"), 1),
    "empty first piece": (pieces, get("/"), 2),
    "large": (flask_app(), get("/large"), 2),
    "chunked": (streamed, get("/"), None),
    "HTTP/1.0 to the close": (streamed, get("/", version="1.0"), 2),
}


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    monkeypatch.setattr(gunicorn.util, "http_date", lambda *_: "Sun, 06 Dec 2026 05:00:00 GMT")


@pytest.mark.parametrize("name", CASES)
def test_the_response_bytes_are_gunicorns_and_a_body_with_a_length_goes_with_its_head(name):
    app, raw, sends = CASES[name]
    plain_sends, plain, plain_keep = serve(app, raw, gunicorns=True)
    ours_sends, ours, ours_keep = serve(app, raw)
    assert ours == plain and ours_keep == plain_keep
    assert ours.startswith(b"HTTP/1.")
    assert ours_sends == (plain_sends if sends is None else sends)


def test_a_keep_alive_single_row_invocation_of_the_real_app_is_one_send(app):
    sends, received, keep = serve(app, post(b",".join([b"0.5"] * len(FEATURES)) + b"\n"))
    assert keep and sends == 1
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: keep-alive" in head and body
