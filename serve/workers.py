"""The gunicorn worker classes: how a worker process takes connections and answers gunicorn's own HTTP errors.

Both read every connection on one poller thread, without blocking, and serve only whole requests (serve.connection):
a client that stops halfway holds a buffer, never a thread, and is closed after SERVE_READ_TIMEOUT seconds without
progress (a 408 when its headers were whole). The front that the official containers get from nginx.

- `ServeWorker`: the poller hands each whole request to a thread pool, for layouts with several threads per process
  (a PAT process batching concurrent requests, a multi-model process).
- `InlineWorker`: one thread per process (the XGBoost layout): the poller thread serves each request itself.

gunicorn's HTTP errors are one line of JSON that echoes nothing sent (serve.http_errors).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import selectors
import socket
import time
import traceback
from collections import Counter
from concurrent import futures
from functools import partial

from gunicorn.http import wsgi
from gunicorn.workers.base import Worker

from serve.connection import CONTINUE, BodyTooLarge, Connection
from serve.http_errors import error_bytes, http_error
from serve.loading import WARM_UP
from serve.responses import OneWriteResponse

log = logging.getLogger("serve")

STOP_KEEPALIVE_LINGER = 2.0  # seconds a stopping worker keeps an idle kept-alive connection, for a request in flight
STOP_SILENT_LINGER = 5.0  # ... and a connection it took from the queue while stopping, for its first bytes
CLOSE_LINGER = 2.0  # seconds a connection closed with unread bytes is drained, so that its response is not reset
_SWEEP_S = 0.25  # how often deadlines are checked
# The warm-up request is served this many times, or for this long (a large model on a CPU): CPython specializes a
# function's bytecode only after its first few runs, and the first clients would otherwise run the generic code.
WARM_UP_ROUNDS = 20
WARM_UP_SECONDS = 2.0
# The heartbeat (a file's time, which gunicorn's master reads to find a worker stuck past its timeout) is written at
# most this often: once per request was a system call per request, and a stuck worker is now restarted at most this
# much before its timeout.
HEARTBEAT_INTERVAL_S = 0.05


def _honour_connection_close(app):
    """gunicorn drops an application's hop-by-hop headers and decides keep-alive itself: make the app's
    `Connection: close` (serve.app.close_if_body_unread) close the connection."""

    def wrapped(environ, start_response):
        def start(status, headers, exc_info=None):
            if any(name.lower() == "connection" and value.lower() == "close" for name, value in headers):
                start_response.__self__.force_close()  # gunicorn's Response
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


class DiscardingSocket:
    """Where the warm-up's response is written: kept in memory, for its status."""

    def __init__(self):
        self.sent = bytearray()

    def setblocking(self, flag: bool) -> None:
        pass

    def send(self, data) -> int:
        self.sent += data
        return len(data)

    def sendall(self, data) -> None:
        self.sent += data


class SettledConfig:
    """gunicorn's settings as a worker reads them: each looked up once, then kept. A worker's settings never change
    after it forks (a reload starts new workers), and gunicorn's parser, environ and response read some twenty of them
    per request through Config.__getattr__."""

    def __init__(self, cfg):
        self._cfg = cfg

    def __getattr__(self, name):
        value = getattr(self._cfg, name)
        setattr(self, name, value)
        return value


class ServeWorker(Worker):
    """A poller thread that reads every connection and hands each whole request to a pool of `threads` threads."""

    response_class = OneWriteResponse
    _heartbeat = float("-inf")  # when the heartbeat was last written (time.monotonic)

    def init_process(self) -> None:
        self.cfg = SettledConfig(self.cfg)
        settings = self.app.settings  # serve.server.Server
        self.read_timeout, self.max_body = settings.read_timeout_seconds, settings.max_payload_bytes
        self.poller = selectors.DefaultSelector()
        self.connections: set[Connection] = set()  # in the poller: idle, receiving a request, or closing
        self.closing: set[Connection] = set()  # of those, closed for writing and drained before they close
        self.nr_conns = 0  # open connections, in the poller or being served
        self.accepting = False
        self.done: queue.SimpleQueue = queue.SimpleQueue()  # (connection, keep-alive) from the pool
        self.tpool = self.get_thread_pool()
        self._next_sweep = 0.0
        super().init_process()

    def notify(self) -> None:
        now = time.monotonic()
        if now - self._heartbeat >= HEARTBEAT_INTERVAL_S:
            super().notify()
            self._heartbeat = now

    def get_thread_pool(self):
        return futures.ThreadPoolExecutor(max_workers=self.cfg.threads)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _honour_connection_close(self.wsgi)
        self.warm_up()

    def warm_up(self) -> int | None:
        """Sends the handler's warm-up request (serve.loading.warm_up_http) through the whole app and this worker's
        request and response path, on the thread that serves requests, into a buffer: no socket, and the app sees
        environ WARM_UP. The handler's own warm-up (serve.handler) warmed its hooks; this warms Flask, werkzeug, the
        pipeline and the response, WARM_UP_ROUNDS times, so that the first client after /ping 200 is served as fast as
        the next. Returns the last status, None without a warm-up request."""
        raw = getattr(self.app, "warm_up_request", None)
        if raw is None:
            return None
        served, status, until = self.nr, None, time.monotonic() + WARM_UP_SECONDS
        for _ in range(WARM_UP_ROUNDS):
            sink = DiscardingSocket()
            conn = Connection(self.cfg, sink, ("127.0.0.1", 0), ("127.0.0.1", 0), deadline=float("inf"))
            conn.buffer += raw
            self.in_serving_thread(self.handle, conn, conn.take_request(self.max_body), True)
            status = int(sink.sent.split(b" ", 2)[1]) if sink.sent.startswith(b"HTTP/") else None
            if status != 200 or time.monotonic() > until:
                break
        self.nr = served
        if status != 200:
            log.warning("the warm-up request through the app failed", extra={"status": status})
        return status

    def in_serving_thread(self, function, *args):
        return self.tpool.submit(function, *args).result()

    def handle_quit(self, sig, frame) -> None:
        self.tpool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    # the loop

    def run(self) -> None:
        self.poller.register(self.PIPE[0], selectors.EVENT_READ, self.on_wake)  # signals and finished requests
        for listener in self.sockets:
            listener.setblocking(False)
        while self.alive:
            self.notify()
            self.set_accept_enabled(self.nr_conns < self.cfg.worker_connections)
            self.dispatch_events(1.0)
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            self.sweep()
        self.stop()

    def dispatch_events(self, timeout: float) -> None:
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            key.data(key.fileobj)

    def on_wake(self, pipe) -> None:
        try:
            os.read(self.PIPE[0], 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                conn, keep = self.done.get_nowait()
            except queue.Empty:
                return
            if self.after_request(conn, keep):
                self.next_request(conn)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled == self.accepting:
            return
        for listener in self.sockets:
            if enabled:
                self.poller.register(listener, selectors.EVENT_READ, self.accept)
            else:
                self.poller.unregister(listener)
        self.accepting = enabled

    def accept(self, listener) -> bool:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return False
            raise
        wait = self.cfg.keepalive if self.alive else STOP_SILENT_LINGER
        conn = Connection(self.cfg, sock, client, listener.getsockname(), time.monotonic() + wait)
        self.nr_conns += 1
        self.watch(conn)
        if self.alive:  # a client sends its request as soon as it has connected: it is often here already
            self.on_readable(conn)
        return True

    def watch(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_readable, conn))

    def unwatch(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.poller.unregister(conn.sock)

    # reading

    def on_readable(self, conn: Connection, sock=None) -> None:
        if conn in self.closing:
            return self.drain(conn)
        try:
            if not conn.receive(self.read_timeout):
                return self.close(conn)  # the client has gone, before a whole request
        except OSError:
            return self.close(conn)
        self.next_request(conn)

    def next_request(self, conn: Connection) -> None:
        """Serves the whole requests the buffer holds, in turn, while the connection stays here."""
        while True:
            try:
                request = conn.take_request(self.max_body)
            except BodyTooLarge:
                return self.refuse(conn, 413, f"body exceeds the {self.max_body}-byte limit")
            except Exception as error:  # gunicorn's parser: a malformed request, or over its limits
                self.handle_error(None, conn.sock, conn.client, error)
                return self.close(conn, linger=True)
            if request is None:
                if conn.expects_continue():
                    conn.continued = True
                    self.send(conn, CONTINUE)
                return
            if not self.serve(conn, request):
                return

    def serve(self, conn: Connection, request) -> bool:
        """Hands a whole request to the pool; the connection waits out of the poller until it is answered. True when
        the next request on the connection may be taken now."""
        self.unwatch(conn)
        self.tpool.submit(self.handle_in_pool, conn, request)
        return False

    def handle_in_pool(self, conn: Connection, request) -> None:
        self.done.put((conn, self.handle(conn, request)))
        try:
            os.write(self.PIPE[1], b"\0")
        except BlockingIOError:  # the pipe is full: the poller is already woken
            pass

    def after_request(self, conn: Connection, keep: bool) -> bool:
        """Back in the poller, or closed. True when a request received behind it waits in the buffer."""
        if not keep or conn.unread:
            self.close(conn, linger=conn.unread or bool(conn.buffer))
            return False
        conn.served += 1
        if conn.buffer:
            conn.deadline = time.monotonic() + self.read_timeout
        else:
            conn.deadline = time.monotonic() + (self.cfg.keepalive if self.alive else STOP_KEEPALIVE_LINGER)
        if conn not in self.connections:
            self.watch(conn)
        return bool(conn.buffer)

    # serving

    def handle(self, conn: Connection, request, warm_up: bool = False) -> bool:
        """Serves one whole request: True when the connection stays open. Writes block; reads never reach the
        socket (the body is in memory)."""
        conn.sock.setblocking(True)
        try:
            return self.handle_request(request, conn, warm_up)
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as error:
            self.handle_error(request, conn.sock, conn.client, error)
        finally:
            conn.sock.setblocking(False)
        return False

    def handle_request(self, request, conn: Connection, warm_up: bool = False) -> bool:
        response, environ = wsgi.create(request, conn.sock, conn.client, conn.server, self.cfg,
                                        response_class=self.response_class)
        environ["wsgi.multithread"] = self.cfg.threads > 1
        if warm_up:
            environ[WARM_UP] = True
        self.nr += 1
        iterable = self.wsgi(environ, response.start_response)
        if not self.alive or self.nr >= self.max_requests:  # stopping, also since the request came: say so
            response.force_close()
        try:
            if isinstance(iterable, environ["wsgi.file_wrapper"]):
                response.write_file(iterable)
            else:
                for item in iterable:
                    response.write(item)
            response.close()
        except Exception:
            if response.headers_sent:  # a second status line would corrupt the answer: cut it short
                self.log.exception("Error handling request")
                return False
            raise
        finally:
            if hasattr(iterable, "close"):
                iterable.close()
        return not response.should_close()

    def handle_error(self, req, client, addr, exc) -> None:
        status, message = http_error(exc)
        if status >= 500:
            log.error("HTTP layer error", extra={"status": status, "exception": type(exc).__qualname__,
                                                 "stack": "".join(traceback.format_tb(exc.__traceback__))})
        else:
            log.info("malformed HTTP request", extra={"status": status, "error": type(exc).__name__})
        try:
            client.sendall(error_bytes(status, message))
        except OSError:
            pass  # the client has gone, or is not reading

    # closing

    def send(self, conn: Connection, data: bytes) -> None:
        try:
            conn.sock.send(data)  # small: it fits the socket's buffer, or the client is not reading
        except OSError:
            pass

    def refuse(self, conn: Connection, status: int, message: str) -> None:
        self.send(conn, error_bytes(status, message))
        self.close(conn, linger=True)

    def close(self, conn: Connection, linger: bool = False) -> None:
        """Closes a connection. With `linger`, bytes the client may still be sending are read and dropped first
        (for at most CLOSE_LINGER seconds), so that the kernel does not reset the connection before the client has
        read the response."""
        if linger:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                linger = False
        if linger:
            conn.deadline = time.monotonic() + CLOSE_LINGER
            self.closing.add(conn)
            if conn not in self.connections:
                self.watch(conn)
            return
        if conn in self.connections:
            self.unwatch(conn)
        self.closing.discard(conn)
        self.nr_conns -= 1
        conn.sock.close()

    def drain(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close(conn)

    def sweep(self, force: bool = False) -> None:
        """Closes connections past their deadline: idle ones quietly, and clients stalled in a request with a count
        in the log (and a 408 to those whose headers were whole)."""
        now = time.monotonic()
        if now < self._next_sweep and not force:
            return
        self._next_sweep = now + _SWEEP_S
        stalled = Counter()
        for conn in [conn for conn in self.connections if conn.deadline <= now]:
            if conn in self.closing or not conn.buffer:
                self.close(conn)
            elif conn.has_head:
                stalled["body incomplete"] += 1
                self.send(conn, error_bytes(408, f"the request was not received in full within "
                                                 f"{self.read_timeout:g} s"))
                self.close(conn)
            else:
                stalled["headers incomplete"] += 1
                self.close(conn)
        for reason, count in stalled.items():
            log.warning("stalled connections closed", extra={
                "count": count, "reason": reason, "status": 408 if reason == "body incomplete" else None,
                "read_timeout_s": self.read_timeout})

    # stopping

    def stop(self) -> None:
        """Stops taking connections, answers what has come, and exits within the graceful timeout."""
        self.take_queued()
        self.cap_idle(time.monotonic())
        graceful = time.monotonic() + self.cfg.graceful_timeout
        while self.nr_conns > 0 and time.monotonic() < graceful:
            self.notify()
            self.dispatch_events(_SWEEP_S)
            self.sweep(force=True)
        for conn in list(self.connections):
            self.close(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()

    def take_queued(self) -> None:
        """Accepts every connection already established in the kernel's queue, then closes the listeners: their
        clients have sent their requests, and closing the listener would reset them."""
        self.set_accept_enabled(False)
        for listener in self.sockets:
            try:
                while self.accept(listener):
                    pass
            except OSError:
                pass
            listener.close()

    def cap_idle(self, now: float) -> None:
        """Stopping: idle kept-alive connections close after STOP_KEEPALIVE_LINGER, new ones that have sent nothing
        after STOP_SILENT_LINGER; a request being received keeps its read deadline."""
        for conn in self.connections:
            if not conn.buffer and conn not in self.closing:
                linger = STOP_KEEPALIVE_LINGER if conn.served else STOP_SILENT_LINGER
                conn.deadline = min(conn.deadline, now + linger)


class InlineWorker(ServeWorker):
    """A worker with one thread that serves each whole request on its poller thread, with no hand-off.

    A thread hand-off (gthread's) costs two thread wake-ups and most of a keep-alive request's system calls
    (`python -m bench.syscalls`), each wake-up waiting for a free core on a busy machine; with one thread requests
    are served one at a time either way, so the hand-off buys nothing. Requests a client has pipelined are served in
    turn. The heartbeat is written before each request (at most every HEARTBEAT_INTERVAL_S): a request still running
    after SAGEMAKER_MODEL_SERVER_TIMEOUT seconds gets its worker restarted (as multi-model-server and gunicorn's sync
    workers do).
    """

    def serve(self, conn: Connection, request) -> bool:
        self.notify()
        return self.after_request(conn, self.handle(conn, request))

    def in_serving_thread(self, function, *args):
        return function(*args)
