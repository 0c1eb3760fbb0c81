"""A worker's warm-up request: the handler's synthetic invocation, sent through the whole app and the worker's request
and response path before the worker serves, with no socket, marked for the app, and answered 200 by the real
handlers."""

from __future__ import annotations

import logging
import sys
import threading
from concurrent import futures

import pytest
from gunicorn.config import Config

from models.pat.settings import PatSettings
from serve import server as serve_server
from serve.loading import WARM_UP, build_handler, warm_up_http
from serve.settings import Settings
from serve.workers import WARM_UP_ROUNDS, InlineWorker, ServeWorker
from tests.pat_models import build_artifact
from tests.unit.test_script_mode import with_script

BODY = b"1,2,3\n"
RAW = (b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/csv\r\nAccept: application/json\r\n"
       b"Content-Length: 6\r\n\r\n" + BODY)


class Recorded:
    """A WSGI app that keeps what each request showed it."""

    def __init__(self):
        self.seen = []

    def __call__(self, environ, start_response):
        self.seen.append({"method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"],
                          "content_type": environ.get("CONTENT_TYPE"), "accept": environ.get("HTTP_ACCEPT"),
                          "body": environ["wsgi.input"].read(), "warm_up": environ.get(WARM_UP),
                          "socket": environ["gunicorn.socket"], "thread": threading.current_thread()})
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]


class App:
    """What a worker's `app` offers it (serve.server.Server): the WSGI app, and the warm-up request once loaded."""

    def __init__(self, wsgi, warm_up_request):
        self.callable, self.warm_up_request = wsgi, warm_up_request

    def wsgi(self):
        return self.callable


def worker(worker_class, app):
    """A worker without an arbiter: what loading and serving one request need."""
    made = worker_class.__new__(worker_class)
    made.app, made.cfg, made.nr, made.max_requests, made.alive = app, Config(), 0, sys.maxsize, True
    made.max_body = 1 << 20
    made.tpool = futures.ThreadPoolExecutor(1)
    return made


@pytest.mark.parametrize("worker_class", [InlineWorker, ServeWorker])
def test_a_worker_sends_the_warm_up_request_through_the_app_as_it_loads_it(worker_class, caplog):
    recorded = Recorded()
    made = worker(worker_class, App(recorded, RAW))
    with caplog.at_level(logging.INFO):
        made.load_wsgi()
    made.tpool.shutdown()
    assert len(recorded.seen) == WARM_UP_ROUNDS  # until CPython has specialized the path's bytecode
    seen = recorded.seen[0]
    assert (seen["method"], seen["path"], seen["content_type"], seen["accept"], seen["body"]) == \
        ("POST", "/invocations", "text/csv", "application/json", BODY)
    assert seen["warm_up"] is True
    assert not hasattr(seen["socket"], "fileno")  # a buffer, never a socket
    # on the thread that serves requests: the poller's for the inline worker, the pool's otherwise
    assert (seen["thread"] is threading.main_thread()) == (worker_class is InlineWorker)
    assert made.nr == 0  # not a request served: max_requests counts clients' only
    assert caplog.records == []


def test_without_a_warm_up_request_the_app_sees_nothing():
    recorded = Recorded()
    made = worker(InlineWorker, App(recorded, None))
    made.load_wsgi()
    made.tpool.shutdown()
    assert recorded.seen == [] and made.warm_up() is None


def pat_settings(tmp_path):
    return Settings(handler="pat", model_dir=build_artifact(tmp_path / "pat"), family=PatSettings(batch_wait_ms=1.0))


@pytest.mark.parametrize("layout", ["xgboost", "pat"])
def test_the_handlers_warm_up_requests_are_answered_200_by_the_real_app(layout, settings, tmp_path, caplog):
    if layout == "pat":
        settings = pat_settings(tmp_path)
    loaded = len(serve_server._loaded)
    server = serve_server.Server(settings)
    made = worker(InlineWorker if settings.serve_inline else ServeWorker, server)
    try:
        made.load_wsgi()
        assert server.warm_up_request.startswith(b"POST /invocations HTTP/1.1\r\n")
        with caplog.at_level(logging.INFO):
            assert made.warm_up() == 200
        assert [record for record in caplog.records if record.name.startswith("serve")] == []
    finally:
        made.tpool.shutdown()
        for handler in serve_server._loaded[loaded:]:
            handler.close()
        del serve_server._loaded[loaded:]


def test_a_users_script_gets_the_handlers_warm_up_request_only_when_it_defines_model_fn_alone(tmp_path, risk_dir):
    """A user's input_fn or predict_fn may not take the handler's synthetic input: no warm-up through the app then."""
    plain = warm_up_http(build_handler(Settings(model_dir=risk_dir)))
    model_fn_only = with_script(tmp_path / "own", risk_dir, """
        import pathlib, xgboost as xgb
        def model_fn(model_dir):
            return xgb.Booster(model_file=bytearray(pathlib.Path(model_dir, "xgboost-model").read_bytes()))
    """)
    own_input = with_script(tmp_path / "input", risk_dir, "def input_fn(body, content_type):\n    return body\n")
    assert plain is not None and plain.endswith(b"\r\n\r\n0,0,0,0\n")
    assert warm_up_http(build_handler(Settings(model_dir=model_fn_only))) == plain
    assert warm_up_http(build_handler(Settings(model_dir=own_input))) is None
