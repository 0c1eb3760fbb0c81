"""The HTTP app: SageMaker's hosting routes on one request pipeline, and the one place errors become responses."""

from __future__ import annotations

import logging
import re
import traceback
import uuid

import orjson
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from serve import codecs
from serve.errors import BadRequest, PayloadTooLarge, ServeError
from serve.handler import Handler, Request
from serve.settings import Settings

log = logging.getLogger("serve.app")
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


def error_response(status: int, message: str, **extra) -> Response:
    body = orjson.dumps({"error": message, "code": status, **extra})
    return Response(body, status=status, content_type="application/json")


_ATTRIBUTE_SEPARATOR = re.compile(r";|,(?=\s*[\w.-]+\s*=)")


def parse_attributes(header: str) -> dict[str, str]:
    """`key=value` pairs separated by `;` (or `,` before the next key, so values may list names with commas);
    anything else in the opaque header is ignored."""
    pairs = (item.partition("=") for item in _ATTRIBUTE_SEPARATOR.split(header))
    return {key.strip().lower(): value.strip() for key, sep, value in pairs if sep and key.strip()}


def read_body() -> bytes:
    """The request body, read once. A body that breaks its framing (a bad chunk) is the client's error, a 400; a body
    left unread (refused before reading, or a route that takes none) closes the connection (close_if_body_unread)."""
    try:
        body = request.get_data(cache=False)
    except HTTPException:
        raise
    except Exception:  # the server's body reader: malformed chunked encoding, a client that went away
        raise BadRequest("the request body could not be read (malformed chunked transfer encoding?)") from None
    g.body_read = True
    return body


def close_if_body_unread(response: Response) -> Response:
    """Its unread bytes would be taken for the next request on the connection, so close it (and say so)."""
    has_body = request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if has_body and not g.get("body_read"):
        response.headers["Connection"] = "close"
    return response


def invoke(handler: Handler, settings: Settings) -> Response:
    """One invocation: size, media types (before predicting), decode, predict, encode."""
    length = request.content_length
    if length is not None and length > settings.max_payload_bytes:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the {settings.max_payload_bytes}-byte limit")
    body = read_body()
    if not body:
        return Response(status=204)
    content_type, params = codecs.choose_decoder(request.headers.get("Content-Type"), handler.decoders)
    accept = codecs.choose_encoder(request.headers.get("Accept"), handler.encoders, handler.accept_default())
    attributes_header = request.headers.get(CUSTOM_ATTRIBUTES, "")
    context = Request(
        content_type=content_type,
        accept=accept,
        params=params,
        attributes=parse_attributes(attributes_header),
        content_type_header=request.headers.get("Content-Type", ""),
        accept_header=request.headers.get("Accept", ""),
    )
    data = handler.input_fn(body, context)
    output = handler.output_fn(handler.predict_fn(data, handler.model, context), context)
    if isinstance(output, tuple):
        output, accept = output
    response = Response(output, status=200, content_type=accept)
    if attributes_header:
        response.headers[CUSTOM_ATTRIBUTES] = attributes_header
    return response


def register_errors(app: Flask) -> None:
    @app.errorhandler(ServeError)
    def serve_error(error: ServeError):
        if error.status >= 500:
            request_id = uuid.uuid4().hex
            log.error("request failed", extra={"request_id": request_id, "status": error.status,
                                               "path": request.path, "reason": error.message})
            return error_response(error.status, error.message, request_id=request_id)
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
        request_id = uuid.uuid4().hex
        log.error("internal error", extra={"request_id": request_id, "path": request.path,
                                           "exception": type(error).__qualname__,
                                           "stack": "".join(traceback.format_tb(error.__traceback__))})
        return error_response(500, "internal error; see the server log for this request id", request_id=request_id)


def create_app(handler: Handler | None, settings: Settings, registry=None) -> Flask:
    """The app for one loaded handler, or (multi-model endpoints) for a registry of them."""
    app = Flask("serve")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes
    register_errors(app)
    app.after_request(close_if_body_unread)

    @app.get("/ping")
    def ping():
        ready = registry is not None or (handler is not None and handler.ready)
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
        if registry is not None:
            return invoke(registry.target(request.headers.get("X-Amzn-SageMaker-Target-Model")), settings)
        return invoke(handler, settings)

    if registry is not None:
        from serve.multimodel import register_routes

        register_routes(app, registry, settings)
    return app
