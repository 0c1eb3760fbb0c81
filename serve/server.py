"""gunicorn, started from this interpreter (no PATH lookup), with the model loaded before a worker accepts traffic."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from serve import logs
from serve.settings import Settings

log = logging.getLogger("serve")


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
        "worker_class": "gthread",
        "threads": settings.server_threads,
        "timeout": settings.timeout_seconds,
        "graceful_timeout": settings.graceful_timeout_seconds,
        "keepalive": 75,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level,
        "logger_class": JsonLogger,
        "control_socket_disable": True,
        "proc_name": f"serve-{settings.handler}",
        "worker_exit": close_handler,
    }


class Server(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self):
        try:
            return build_app(self.settings)
        except Exception as error:
            log.critical("cannot serve the model: %s", error, exc_info=not hasattr(error, "status"))
            raise


def run(settings: Settings) -> None:
    Server(settings).run()
