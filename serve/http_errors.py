"""gunicorn's own HTTP errors, and the serving front's, as responses: one line of JSON that names what was wrong and
never the bytes sent. Its limits (a request line over LIMIT_REQUEST_LINE bytes, more than LIMIT_REQUEST_FIELDS header
fields or one over LIMIT_REQUEST_FIELD_SIZE bytes) are serve.connection's."""

from __future__ import annotations

import http
import re

import orjson
from gunicorn.http import errors as http_errors

from serve.connection import LIMIT_REQUEST_FIELD_SIZE, LIMIT_REQUEST_FIELDS, LIMIT_REQUEST_LINE

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


def error_bytes(status: int, message: str) -> bytes:
    """A whole HTTP response: one line of JSON, and the connection closes."""
    body = orjson.dumps({"error": message, "code": status})
    return (f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode("latin1") + body


