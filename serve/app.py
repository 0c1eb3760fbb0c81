"""The HTTP app: SageMaker's hosting routes on the request pipeline (serve.pipeline), and the one place errors become
responses."""

from __future__ import annotations

import logging
import traceback
from contextlib import AbstractContextManager
from typing import Protocol

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from serve import provenance
from serve.errors import PayloadTooLarge, ServeError, Unrecoverable
from serve.handler import Handler
from serve.loading import WARM_UP
from serve.metrics import Invocation, Recorder
from serve.pipeline import CUSTOM_ATTRIBUTES, invoke, parse_attributes
from serve.settings import Settings

log = logging.getLogger("serve.app")
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
FAILED = "serve.failed"  # app.extensions key, set by an Unrecoverable error: /ping answers 503 from then on
RECORDER = "serve.recorder"  # app.extensions key: the worker's serve.metrics.Recorder
ENDPOINT = "serve.endpoint"  # app.extensions key: the identity an answer carries when no loaded model made it


class Models(Protocol):
    """Several models behind one endpoint (serve.multimodel.ModelRegistry): a handler per invocation."""

    def lease(self, name: str | None) -> AbstractContextManager[Handler]: ...


def error_response(status: int, message: str, **extra) -> Response:
    body = orjson.dumps({"error": message, "code": status, **extra})
    return Response(body, status=status, content_type="application/json")


def close_if_body_unread(response: Response) -> Response:
    """A body left unread (serve.pipeline.read_body never ran: refused before reading, a route that takes none) would
    be taken for the next request on the connection: close it, and say so."""
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and not g.get("body_read"):
        response.headers["Connection"] = "close"
    return response


def request_id() -> str:
    """The current request's id: the one its log line carries (serve.metrics.Recorder)."""
    if "request_id" not in g:
        g.request_id = current_app.extensions[RECORDER].request_id()
    return g.request_id


def record_invocation(response: Response) -> Response:
    """Every invocation's answer, errors included, names the model and image that made it (serve.provenance), and
    its line is written (serve.metrics). A request that named no loaded model gets the endpoint's identity."""
    invocation = g.pop("invocation", None)
    if invocation is None and request.path != "/invocations":
        return response
    identity = (invocation and invocation.identity) or current_app.extensions[ENDPOINT]
    response.headers.extend(identity.headers)
    echoed = response.headers.get(CUSTOM_ATTRIBUTES)
    if echoed:
        response.headers[CUSTOM_ATTRIBUTES] = provenance.answer_attributes(echoed, parse_attributes(echoed), identity)
    if not request.environ.get(WARM_UP):  # the worker's own warm-up is no invocation
        current_app.extensions[RECORDER].write(invocation, response.status_code, identity, request_id())
    return response


def register_errors(app: Flask) -> None:
    @app.errorhandler(ServeError)
    def serve_error(error: ServeError):
        if isinstance(error, Unrecoverable) and not app.extensions.get(FAILED):
            app.extensions[FAILED] = True
            log.critical("this worker can no longer serve; /ping answers 503", extra={"reason": error.message})
        if error.status >= 500:
            log.error("request failed", extra={"request_id": request_id(), "status": error.status,
                                               "path": request.path, "reason": error.message})
            return error_response(error.status, error.message, request_id=request_id())
        return error_response(error.status, error.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        return serve_error(PayloadTooLarge(f"body exceeds the {app.config['MAX_CONTENT_LENGTH']}-byte limit"))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return error_response(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        # The exception's message is not logged: a library or user hook may quote the request's values in it.
        log.error("internal error", extra={"request_id": request_id(), "path": request.path,
                                           "exception": type(error).__qualname__,
                                           "stack": "".join(traceback.format_tb(error.__traceback__))})
        return error_response(500, "internal error; see the server log for this request id", request_id=request_id())


def create_app(handler: Handler | None, settings: Settings, registry: Models | None = None,
               routes: Blueprint | None = None) -> Flask:
    """The app for one loaded handler, or (multi-model endpoints) for a registry of them; `routes` adds more routes
    (serve.model_api: the registry's management API)."""
    app = Flask("serve")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions[RECORDER] = Recorder(settings)
    app.extensions[ENDPOINT] = handler.identity if handler is not None and handler.identity else \
        provenance.endpoint(settings)
    register_errors(app)
    app.after_request(close_if_body_unread)
    app.after_request(record_invocation)

    @app.get("/ping")
    def ping():
        ready = not app.extensions.get(FAILED) and (registry is not None or (handler is not None and handler.ready))
        return Response(status=200 if ready else 503)

    @app.get("/execution-parameters")
    def execution_parameters():
        return {
            "MaxConcurrentTransforms": settings.max_concurrent_transforms,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": settings.max_payload_mb,
        }

    @app.post("/invocations")
    def invocations():
        g.invocation = Invocation()
        if registry is None:
            return invoke(handler, settings, g.invocation)
        with registry.lease(request.headers.get(TARGET_MODEL)) as target:
            return invoke(target, settings, g.invocation)

    if routes is not None:
        app.register_blueprint(routes)
    return app
