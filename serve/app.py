"""The HTTP app: SageMaker's hosting routes on the request pipeline (serve.pipeline), and the one place errors become
responses (`error_to_response`).

POST /invocations, every invocation's path, is answered without Flask's request context (`ServeApp`): routing,
contexts and signals were a fifth of a single-row request's time in the worker. Every other route is Flask's.
"""

from __future__ import annotations

import logging
import traceback
from contextlib import AbstractContextManager
from typing import Protocol

import orjson
from flask import Blueprint, Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request as HttpRequest

from serve import provenance
from serve.errors import PayloadTooLarge, ServeError, Unrecoverable
from serve.handler import Handler
from serve.loading import WARM_UP
from serve.metrics import Recorder
from serve.pipeline import BODY_READ, CUSTOM_ATTRIBUTES, INVOCATION, invoke, parse_attributes, start_invocation
from serve.settings import Settings

log = logging.getLogger("serve.app")
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
FAILED = "serve.failed"  # app.extensions key, set by an Unrecoverable error: /ping answers 503 from then on
RECORDER = "serve.recorder"  # app.extensions key: the worker's serve.metrics.Recorder
ENDPOINT = "serve.endpoint"  # app.extensions key: the identity an answer carries when no loaded model made it
REQUEST_ID = "serve.request_id"  # WSGI environ key: the request's id, once it has one


class Models(Protocol):
    """Several models behind one endpoint (serve.multimodel.ModelRegistry): a handler per invocation."""

    def lease(self, name: str | None) -> AbstractContextManager[Handler]: ...


def error_response(status: int, message: str, **extra) -> Response:
    body = orjson.dumps({"error": message, "code": status, **extra})
    return Response(body, status=status, content_type="application/json")


def close_if_body_unread(request: HttpRequest, response: Response) -> Response:
    """A body left unread (serve.pipeline.read_body never ran: refused before reading, a route that takes none) would
    be taken for the next request on the connection: close it, and say so."""
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and not request.environ.get(BODY_READ):
        response.headers["Connection"] = "close"
    return response


def request_id(app: Flask, request: HttpRequest) -> str:
    """The request's id: the one its log line carries (serve.metrics.Recorder)."""
    if REQUEST_ID not in request.environ:
        request.environ[REQUEST_ID] = app.extensions[RECORDER].request_id()
    return request.environ[REQUEST_ID]


def record_invocation(app: Flask, request: HttpRequest, response: Response) -> Response:
    """Every invocation's answer, errors included, names the model and image that made it (serve.provenance), and
    its line is written (serve.metrics). A request that named no loaded model gets the endpoint's identity."""
    invocation = request.environ.pop(INVOCATION, None)
    if invocation is None and request.path != "/invocations":
        return response
    identity = (invocation and invocation.identity) or app.extensions[ENDPOINT]
    response.headers.extend(identity.headers)
    echoed = response.headers.get(CUSTOM_ATTRIBUTES)
    if echoed:
        response.headers[CUSTOM_ATTRIBUTES] = provenance.answer_attributes(echoed, parse_attributes(echoed), identity)
    if not request.environ.get(WARM_UP):  # the worker's own warm-up is no invocation
        app.extensions[RECORDER].write(invocation, response.status_code, identity, request_id(app, request))
    return response


def finish(app: Flask, request: HttpRequest, response: Response) -> Response:
    """What every answer goes through last, on either path."""
    return close_if_body_unread(request, record_invocation(app, request, response))


def error_to_response(app: Flask, request: HttpRequest, error: Exception) -> Response:
    """The one place errors become responses: a ServeError its status and message, werkzeug's HTTP errors theirs,
    anything else a 500 that says only the request id (its log line has the exception and stack)."""
    if isinstance(error, RequestEntityTooLarge):
        error = PayloadTooLarge(f"body exceeds the {app.config['MAX_CONTENT_LENGTH']}-byte limit")
    if isinstance(error, ServeError):
        if isinstance(error, Unrecoverable) and not app.extensions.get(FAILED):
            app.extensions[FAILED] = True
            log.critical("this worker can no longer serve; /ping answers 503", extra={"reason": error.message})
        if error.status >= 500:
            log.error("request failed", extra={"request_id": request_id(app, request), "status": error.status,
                                               "path": request.path, "reason": error.message})
            return error_response(error.status, error.message, request_id=request_id(app, request))
        return error_response(error.status, error.message)
    if isinstance(error, HTTPException):
        return error_response(error.code or 500, error.description or error.name)
    # The exception's message is not logged: a library or user hook may quote the request's values in it.
    log.error("internal error", extra={"request_id": request_id(app, request), "path": request.path,
                                       "exception": type(error).__qualname__,
                                       "stack": "".join(traceback.format_tb(error.__traceback__))})
    return error_response(500, "internal error; see the server log for this request id",
                          request_id=request_id(app, request))


class ServeApp(Flask):
    """Flask, with POST /invocations answered by `answer_invocation` straight from the WSGI environ: the same
    pipeline, errors and last steps (`finish`) as Flask's routes, without its request context."""

    answer_invocation = None  # (werkzeug request) -> Response, set by create_app

    def wsgi_app(self, environ, start_response):
        if environ.get("PATH_INFO") != "/invocations" or environ.get("REQUEST_METHOD") != "POST":
            return super().wsgi_app(environ, start_response)
        http_request = HttpRequest(environ)
        http_request.max_content_length = self.config["MAX_CONTENT_LENGTH"]  # a chunked body is read up to it
        try:
            response = self.answer_invocation(http_request)
        except Exception as error:
            response = error_to_response(self, http_request, error)
        return finish(self, http_request, response)(environ, start_response)


def create_app(handler: Handler | None, settings: Settings, registry: Models | None = None,
               routes: Blueprint | None = None) -> Flask:
    """The app for one loaded handler, or (multi-model endpoints) for a registry of them; `routes` adds more routes
    (serve.model_api: the registry's management API)."""
    app = ServeApp("serve")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    app.extensions[RECORDER] = Recorder(settings)
    app.extensions[ENDPOINT] = handler.identity if handler is not None and handler.identity else \
        provenance.endpoint(settings)
    app.register_error_handler(Exception, lambda error: error_to_response(app, request._get_current_object(), error))
    app.after_request(lambda response: finish(app, request._get_current_object(), response))

    def answer_invocation(http_request: HttpRequest) -> Response:
        invocation = start_invocation(http_request)
        if registry is None:
            return invoke(handler, settings, http_request, invocation)
        with registry.lease(http_request.headers.get(TARGET_MODEL)) as target:
            return invoke(target, settings, http_request, invocation)

    app.answer_invocation = answer_invocation

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

    @app.post("/invocations")  # answered by ServeApp.wsgi_app; the route gives other methods their 405
    def invocations():
        return answer_invocation(request._get_current_object())

    if routes is not None:
        app.register_blueprint(routes)
    return app
