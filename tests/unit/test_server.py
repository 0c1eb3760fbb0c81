import selectors
import socket
import time

import pytest
from gunicorn.http import errors

from models.pat.settings import PatSettings
from serve.server import close_handler, gunicorn_options, _loaded
from serve.http_errors import http_error
from serve.workers import InlineWorker, ServeWorker
from serve.settings import Settings


def test_gunicorn_options_follow_the_settings():
    options = gunicorn_options(Settings(port=9001, workers=3, timeout_seconds=120))
    assert options["bind"] == "0.0.0.0:9001" and options["workers"] == 3 and options["threads"] == 1
    assert options["timeout"] == 120 and options["graceful_timeout"] == 25
    assert options["control_socket_disable"] and options["accesslog"] is None
    multi = gunicorn_options(Settings(workers=2, multi_model=True))
    assert (multi["workers"], multi["threads"]) == (1, 8)
    pat = gunicorn_options(Settings(workers=4, handler="pat", family=PatSettings(max_batch_size=32)))
    assert (pat["workers"], pat["threads"]) == (1, 32)
    assert options["worker_class"] is InlineWorker  # one thread: served on the poller thread
    assert multi["worker_class"] is pat["worker_class"] is ServeWorker
    assert gunicorn_options(Settings(threads=4))["worker_class"] is ServeWorker
    # PAT's requests wait for its batcher's thread, bounded by its own timeout: never on the poller thread
    unbatched = Settings(handler="pat", family=PatSettings(max_batch_size=1))
    assert unbatched.server_threads == 1 and gunicorn_options(unbatched)["worker_class"] is ServeWorker


def test_worker_exit_closes_what_the_worker_loaded():
    closed = []

    class Loaded:
        def close(self):
            closed.append(self)

    loaded = Loaded()
    _loaded.append(loaded)
    try:
        close_handler(server=None, worker=None)
    finally:
        _loaded.remove(loaded)
    assert closed == [loaded]


def test_http_layer_errors_have_gunicorns_statuses_and_name_no_bytes():
    assert http_error(errors.LimitRequestHeaders("X-Secret: 123")) == (
        431, "the request has more than 100 header fields or one longer than 8190 bytes")
    assert http_error(errors.LimitRequestLine(9000, 4094))[0] == 414
    assert http_error(errors.InvalidHeaderName("X Secret 123")) == (400, "malformed HTTP request: invalid header name")
    assert http_error(errors.InvalidResponseHeader("x"))[0] == 500 and http_error(ValueError("x"))[0] == 500
    options = gunicorn_options(Settings())
    assert (options["limit_request_line"], options["limit_request_fields"], options["limit_request_field_size"]) == \
        (4094, 100, 8190)


def stopping_worker(worker_class, listener):
    """A worker without an arbiter: only what stopping needs."""
    worker = worker_class.__new__(worker_class)
    worker.alive, worker.accepting, worker.nr_conns = False, True, 0
    worker.connections, worker.closing = set(), set()
    worker.sockets, worker.cfg = [listener], type("Cfg", (), {"keepalive": 75})()
    worker.poller = selectors.DefaultSelector()
    worker.poller.register(listener, selectors.EVENT_READ)
    return worker


@pytest.mark.parametrize("worker_class", [ServeWorker, InlineWorker])
def test_a_stopping_worker_takes_connections_already_queued_and_refuses_later_ones(worker_class):
    """Clients whose connection the kernel has queued have sent their request: a stopping worker takes them into its
    poller, where they are served."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    listener.setblocking(False)
    address = listener.getsockname()
    clients = [socket.create_connection(address) for _ in range(3)]
    worker = stopping_worker(worker_class, listener)
    worker.take_queued()
    assert worker.nr_conns == 3 and len(worker.connections) == 3
    assert all(not conn.sock.getblocking() for conn in worker.connections)
    assert {key.data.func.__name__ for key in worker.poller.get_map().values()} == {"on_readable"}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2)
    for sock in [*(conn.sock for conn in worker.connections), *clients]:
        sock.close()


def test_a_stopping_worker_gives_idle_connections_two_seconds_and_silent_new_ones_five():
    worker = ServeWorker.__new__(ServeWorker)
    now = time.monotonic()
    kept, new, receiving = (type("Conn", (), {"deadline": now + 75, "served": served, "buffer": buffer})()
                            for served, buffer in ((1, b""), (0, b""), (1, b"POST /inv")))
    worker.connections, worker.closing = {kept, new, receiving}, set()
    worker.cap_idle(now)
    assert (kept.deadline, new.deadline, receiving.deadline) == (now + 2, now + 5, now + 75)


def _parsed(head: bytes, peer: str):
    from gunicorn.config import Config
    from gunicorn.http.message import Request

    from serve.connection import ReceivedBytes

    cfg = Config()
    for key, value in gunicorn_options(Settings()).items():
        cfg.set(key, value)
    return Request(cfg, ReceivedBytes(head), (peer, 40000), 1)


@pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3"])
def test_no_client_sets_the_scheme_or_wsgi_variables_through_headers(peer):
    request = _parsed(b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n"
                      b"X-Forwarded-Protocol: ssl\r\nScript_Name: /other\r\nPath_Info: /ping\r\nContent-Length: 0\r\n"
                      b"\r\n", peer)
    assert request.scheme == "http" and request.path == "/invocations"
    names = {name for name, _ in request.headers}
    assert "SCRIPT_NAME" not in names and "PATH_INFO" not in names and "X-FORWARDED-PROTO" in names


def test_the_heartbeat_is_written_at_most_every_interval(monkeypatch):
    from serve import workers

    written = []
    monkeypatch.setattr(workers.Worker, "notify", lambda self: written.append(time.monotonic()))
    made = InlineWorker.__new__(InlineWorker)
    for _ in range(100):
        made.notify()
    assert len(written) == 1
    time.sleep(workers.HEARTBEAT_INTERVAL_S * 1.5)
    made.notify()
    assert len(written) == 2
