"""gunicorn, started from this interpreter (no PATH lookup), with the model loaded before a worker accepts traffic.

What an operator sees from gunicorn itself is in this runtime's forms too: its log lines are JSON, its HTTP errors
one line of JSON (serve.workers), and a model that cannot be served is said once, by the master, before it exits with
MODEL_UNSERVABLE.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

import orjson
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.glogging import Logger

from serve import logs
from serve.connection import LIMIT_REQUEST_FIELD_SIZE, LIMIT_REQUEST_FIELDS, LIMIT_REQUEST_LINE
from serve.settings import Settings
from serve.workers import InlineWorker, ServeWorker

log = logging.getLogger("serve")

MODEL_UNSERVABLE = Arbiter.WORKER_BOOT_ERROR  # 3: the exit code when a worker cannot load the model
_PIPE_MESSAGE = 4000  # bytes: under PIPE_BUF, so that two workers' reports never interleave (a cut one reads
# as "cut", see read_failure)


class JsonLogger(Logger):
    """gunicorn's own messages in the same one-JSON-object-per-line format; no access log (paths only anyway)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(logs.JsonFormatter())


def build_app(settings: Settings):
    """Runs in each worker before it accepts connections: load the model(s), then build the app."""
    from serve.app import create_app

    if settings.multi_model:
        from serve import model_api
        from serve.multimodel import ModelRegistry

        registry = ModelRegistry(settings)
        _loaded.append(registry)
        return create_app(None, settings, registry=registry, routes=model_api.routes(registry, settings))
    from serve.loading import build_handler

    handler = build_handler(settings)
    _loaded.append(handler)
    log.info("model loaded", extra={"handler": settings.handler, **handler.describe()})
    return create_app(handler, settings)


_loaded = []  # what build_app loaded in this worker process, closed when the worker exits


def close_handler(server, worker) -> None:
    """gunicorn's worker_exit hook: let the handler finish queued work and release its threads and device."""
    for loaded in _loaded:
        loaded.close()


def gunicorn_options(settings: Settings) -> dict:
    return {
        "bind": f"0.0.0.0:{settings.port}",
        "workers": settings.server_processes,
        "worker_class": InlineWorker if settings.serve_inline else ServeWorker,
        "threads": settings.server_threads,
        "timeout": settings.timeout_seconds,
        "graceful_timeout": settings.graceful_timeout_seconds,
        "keepalive": 75,
        # No client may set the scheme or WSGI variables through headers (nothing is trusted for); with "*" gunicorn
        # no longer parses the peer's address on each request to find that out.
        "forwarded_allow_ips": "*",
        "secure_scheme_headers": {},
        "forwarder_headers": "",
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logger_class": JsonLogger,
        "control_socket_disable": True,
        "proc_name": f"serve-{settings.handler}",
        "worker_exit": close_handler,
    }


def _failure(error: Exception) -> dict:
    """What the log says about a model that cannot be served: the reason; for a bug, the exception and its stack."""
    if hasattr(error, "status"):  # a ServeError: its message is the reason
        return {"reason": error.message[:2000]}
    return {"reason": f"{type(error).__name__}: {error}"[:1000],
            "traceback": "".join(traceback.format_tb(error.__traceback__))[-1500:]}


class ServeArbiter(Arbiter):
    """gunicorn's master. A worker that cannot load the model reports why through a pipe and exits; the master then
    stops the others, logs the reason once, and exits with MODEL_UNSERVABLE, instead of gunicorn's tracebacks and
    one report per worker."""

    def reap_workers(self) -> None:
        if self.app.failure is None:
            self.app.failure = self.app.read_failure()
            if self.app.failure is not None:
                raise HaltServer(self.app.failure["reason"], MODEL_UNSERVABLE)
            return super().reap_workers()
        try:  # halting: the other workers' exits are part of the one failure already being reported
            super().reap_workers()
        except HaltServer:
            pass

    def halt(self, reason=None, exit_status=0) -> None:
        if self.app.failure is None:
            return super().halt(reason, exit_status)
        self.log.error_log.disabled = True
        self.stop()
        log.critical("cannot serve the model", extra={**self.app.failure, "exit_code": MODEL_UNSERVABLE})
        sys.exit(MODEL_UNSERVABLE)


class Server(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        self.failure: dict | None = None
        self.warm_up_request: bytes | None = None  # in a worker, once loaded: what serve.workers sends through the app
        self._failures, self._report = os.pipe()  # workers write, the master reads
        os.set_blocking(self._failures, False)
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self):
        """In a worker: the app and its warm-up request, or (the model cannot be served) a report to the master and
        exit."""
        from serve.loading import warm_up_http

        try:
            app = build_app(self.settings)
            self.warm_up_request = warm_up_http(_loaded[-1])
            return app
        except Exception as error:
            os.write(self._report, orjson.dumps(_failure(error))[:_PIPE_MESSAGE] + b"\n")
            os._exit(MODEL_UNSERVABLE)  # nothing else to say: no traceback, no "Worker exiting"

    def read_failure(self) -> dict | None:
        """In the master: the first worker's report, if one has come."""
        try:
            data = os.read(self._failures, 65536)
        except BlockingIOError:
            return None
        try:
            return orjson.loads(data.split(b"\n")[0])
        except orjson.JSONDecodeError:
            return {"reason": "a worker could not load the model (its report was cut)"}

    def run(self) -> None:
        try:
            ServeArbiter(self).run()
        except RuntimeError as error:  # gunicorn's start-up errors (as BaseApplication.run, in JSON)
            log.critical("cannot start the server", extra={"reason": str(error)})
            sys.exit(1)


def run(settings: Settings) -> None:
    Server(settings).run()
