"""The gunicorn worker classes: how a worker process takes connections and answers gunicorn's own HTTP errors.

- `ServeWorker`: gunicorn's gthread worker (a poller thread hands each request to a pool thread), for layouts with
  several threads per process (a PAT process batching concurrent requests, a multi-model process).
- `InlineWorker`: one thread per process (the XGBoost layout): the poller thread serves each request itself.

gunicorn's HTTP errors (a request line over LIMIT_REQUEST_LINE bytes, more than LIMIT_REQUEST_FIELDS header fields or
one over LIMIT_REQUEST_FIELD_SIZE bytes, a malformed request) are one line of JSON that echoes nothing sent.
"""

from __future__ import annotations

import errno
import http
import logging
import re
import selectors
import time
import traceback
from concurrent import futures
from functools import partial

import orjson
from gunicorn import util
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, TConn, ThreadWorker

log = logging.getLogger("serve")

LIMIT_REQUEST_LINE = 4094  # bytes; gunicorn's defaults, stated here so that they are documented in one place
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190


_HTTP_STATUS = (  # gunicorn's statuses for its own errors; any other ParseException is a 400, anything else a 500
    (http_errors.LimitRequestLine, 414, f"the request line is longer than {LIMIT_REQUEST_LINE} bytes"),
    (http_errors.LimitRequestHeaders, 431, f"the request has more than {LIMIT_REQUEST_FIELDS} header fields or one "
                                           f"longer than {LIMIT_REQUEST_FIELD_SIZE} bytes"),
    (http_errors.ExpectationFailed, 417, "only Expect: 100-continue is supported"),
    (http_errors.UnsupportedTransferCoding, 501, "unsupported Transfer-Encoding; send chunked or Content-Length"),
    (http_errors.ForbiddenProxyRequest, 403, "proxy requests are not accepted"),
    ((http_errors.InvalidResponseHeader, http_errors.InvalidResponseHeaderName, http_errors.ConfigurationProblem),
     500, "internal error"),
)


def http_error(error: Exception) -> tuple[int, str]:
    """The status and message (naming what was wrong, never the bytes sent) for an error of gunicorn's HTTP parser."""
    for kinds, status, message in _HTTP_STATUS:
        if isinstance(error, kinds):
            return status, message
    if isinstance(error, http_errors.ParseException):
        words = re.sub(r"(?<!^)(?=[A-Z][a-z])", " ", type(error).__name__).lower()
        return 400, f"malformed HTTP request: {words}"
    return 500, "internal error"


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


class ServeWorker(ThreadWorker):
    """gunicorn's gthread worker, answering its own HTTP errors in this runtime's JSON form."""

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _honour_connection_close(self.wsgi)

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:  # stopping: serve what clients have already connected, refuse the rest
            for listener in self.sockets:
                self._accept_backlog(listener)
                listener.close()

    def _accept_backlog(self, listener) -> None:
        """Accepts every connection already established in the kernel's queue: its client has sent its request,
        and closing the listener would reset it; accepted, it is answered within the graceful timeout."""
        while True:
            accepted = self.nr_conns
            try:
                self.accept(listener)  # non-blocking: returns without a connection once the queue is empty
            except OSError:
                return
            if self.nr_conns == accepted:
                return

    def handle_error(self, req, client, addr, exc) -> None:
        status, message = http_error(exc)
        if status >= 500:
            log.error("HTTP layer error", extra={"status": status, "exception": type(exc).__qualname__,
                                                 "stack": "".join(traceback.format_tb(exc.__traceback__))})
        else:
            log.info("malformed HTTP request", extra={"status": status, "error": type(exc).__name__})
        body = orjson.dumps({"error": message, "code": status})
        head = (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            util.write_nonblock(client, head.encode("latin1") + body)
        except OSError:
            pass  # the client has gone


class InlineWorker(ServeWorker):
    """A worker with one thread that serves each request on its poller thread, with no hand-off.

    gthread hands every request to a pool thread and the connection back to the poller through a pipe: two thread
    wake-ups and 22 of the 37 system calls of a keep-alive request (`python -m bench.syscalls`), each wake-up
    waiting for a free core on a busy machine. With one thread requests are served one at a time either way, so the
    hand-off buys nothing. A new connection waits in the poller until its first bytes arrive, and requests a
    client has pipelined are served in turn. Once a request's first bytes are in, the worker reads the rest as
    gthread's one pool thread did, blocking: a client that stops halfway holds the worker (SageMaker's front end,
    the only client, sends whole requests).

    The heartbeat is written before each request: a request still running after SAGEMAKER_MODEL_SERVER_TIMEOUT
    seconds gets its worker restarted (as multi-model-server and gunicorn's sync workers do).
    """

    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                return
            raise
        self.nr_conns += 1
        conn = TConn(self.cfg, sock, client, listener.getsockname())  # non-blocking until it is served
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def enqueue_req(self, conn) -> None:
        self.notify()
        keep = self.handle(conn)
        while keep is True and conn.parser.unreader.buf.getvalue():  # the next request is already read
            self.notify()
            keep = self.handle(conn)
        done = futures.Future()
        done.set_result(keep)
        self.finish_request(conn, done)  # kept alive: back to the poller; otherwise closed

    def _cap_keepalive(self, deadline) -> None:
        """Stopping: kept-alive connections close by `deadline`, and one that has sent nothing yet within the 5 s
        that gthread gave it (queued connections that sent their request are served before either)."""
        super()._cap_keepalive(deadline)
        silent = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT
        for conn in self.pending_conns:  # stays sorted: every entry capped at the same time
            conn.timeout = min(conn.timeout, silent)
