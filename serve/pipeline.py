"""The request pipeline of every invocation: size, media types (chosen before predicting), decode, predict, encode.

`Request` is what a handler may know about one invocation besides its body; `invoke` runs a handler's hooks on an
HTTP request (werkzeug's, passed in: no Flask context needed). Errors are raised as typed errors; serve.app turns them
into responses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from flask import Response
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request as HttpRequest

from serve import negotiation
from serve.errors import BadRequest, PayloadTooLarge
from serve.metrics import Invocation, rows_of
from serve.settings import Settings

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
BODY_READ = "serve.body_read"  # WSGI environ key, True once read_body has read the request's body
INVOCATION = "serve.invocation"  # WSGI environ key: the request's serve.metrics.Invocation, once it is one
# What output_fn returns: the body in request.accept's type, or (body, media type) when the hook chooses the type itself
# (a user's output_fn or transform_fn may, as in AWS's inference toolkit).
Output = bytes | tuple[bytes, str]
_ATTRIBUTE_SEPARATOR = re.compile(r";|,(?=\s*[\w.-]+\s*=)")


@dataclass(frozen=True)
class Request:
    """What a handler may know about one invocation, besides its body."""

    content_type: str
    accept: str
    params: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    content_type_header: str = ""
    accept_header: str = ""
    # This invocation's measurements by metric name (serve.metrics.UNITS): a handler may add its own (PAT: queue wait,
    # batch size, device memory). Never a request's value.
    metrics: dict = field(default_factory=dict)


def parse_attributes(header: str) -> dict[str, str]:
    """`key=value` pairs separated by `;` (or `,` before the next key, so values may list names with commas);
    anything else in the opaque header is ignored."""
    pairs = (item.partition("=") for item in _ATTRIBUTE_SEPARATOR.split(header))
    return {key.strip().lower(): value.strip() for key, sep, value in pairs if sep and key.strip()}


def read_body(request: HttpRequest) -> bytes:
    """The request body, read once. A body that breaks its framing (a bad chunk) is the client's error, a 400; a body
    left unread (refused before reading, or a route that takes none) closes the connection (serve.app)."""
    try:
        body = request.get_data(cache=False)
    except HTTPException:
        raise
    except Exception:  # the server's body reader: malformed chunked encoding, a client that went away
        raise BadRequest("the request body could not be read (malformed chunked transfer encoding?)") from None
    request.environ[BODY_READ] = True
    return body


def start_invocation(request: HttpRequest) -> Invocation:
    """The request is an invocation (its answer is measured and carries a model's identity, serve.app)."""
    invocation = request.environ[INVOCATION] = Invocation()
    return invocation


def invoke(handler, settings: Settings, request: HttpRequest, invocation: Invocation) -> Response:
    """One invocation of a serve.handler.Handler on an HTTP request, timed stage by stage into `invocation`
    (serve.metrics), which also learns which model answered."""
    invocation.identity = handler.identity
    length = request.content_length
    if length is not None and length > settings.max_payload_bytes:
        raise PayloadTooLarge(f"body of {length} bytes exceeds the {settings.max_payload_bytes}-byte limit")
    body = read_body(request)
    invocation.lap("ReadTime")
    if not body:
        return Response(status=204)
    content_type, params = negotiation.choose_decoder(request.headers.get("Content-Type"), handler.decoders)
    accept = negotiation.choose_encoder(request.headers.get("Accept"), handler.encoders, handler.accept_default())
    attributes_header = request.headers.get(CUSTOM_ATTRIBUTES, "")
    context = Request(
        content_type=content_type,
        accept=accept,
        params=params,
        attributes=parse_attributes(attributes_header),
        content_type_header=request.headers.get("Content-Type", ""),
        accept_header=request.headers.get("Accept", ""),
        metrics=invocation.values,
    )
    data = handler.input_fn(body, context)
    invocation.lap("DecodeTime")
    prediction = handler.predict_fn(data, handler.model, context)
    invocation.lap("PredictTime")
    rows = rows_of(prediction)
    if rows is not None:
        invocation.values["Rows"] = rows
    output: Output = handler.output_fn(prediction, context)
    invocation.lap("EncodeTime")
    output, accept = output if isinstance(output, tuple) else (output, accept)
    response = Response(output, status=200, content_type=accept)
    if attributes_header:
        response.headers[CUSTOM_ATTRIBUTES] = attributes_header
    return response
