"""Text bodies (CSV, LIBSVM): the charsets taken, and the body as text."""

from __future__ import annotations

from typing import Mapping

from serve.errors import BadRequest, UnsupportedMediaType


def check_charset(params: Mapping[str, str]) -> None:
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise UnsupportedMediaType("the Content-Type charset is not supported; send utf-8 (or us-ascii)")


def utf8_text(body: bytes, params: Mapping[str, str]) -> str:
    check_charset(params)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8 text") from None
