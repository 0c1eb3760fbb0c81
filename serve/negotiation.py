"""Negotiation: the media type a request's Content-Type names (415 when no decoder takes it) and the one its Accept
prefers among the encoders (406 when none fits). 415 and 406 bodies name what is supported and never echo the header
values sent."""

from __future__ import annotations

import functools
from typing import Mapping

from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from serve.codecs import ANY, CSV, JSON, JSONLINES, LIBSVM, NPY, RECORDIO, Decoder, Encoder, supports
from serve.errors import NotAcceptable, UnsupportedMediaType

ALIASES = {
    "csv": CSV,
    "json": JSON,
    "jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/x-jsonlines": JSONLINES,
    "libsvm": LIBSVM,
    "text/x-libsvm": LIBSVM,
    "recordio-protobuf": RECORDIO,
    "npy": NPY,
}


def media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """The canonical media type of a Content-Type header and its parameters (lower-cased names)."""
    value, params = parse_options_header(header or "")
    value = value.strip().lower()
    return ALIASES.get(value, value), {k.lower(): v for k, v in params.items()}


def choose_decoder(content_type: str | None, decoders: Mapping[str, Decoder]) -> tuple[str, dict[str, str]]:
    """The media type to decode with (and its parameters); 415 when it is missing or unsupported."""
    if not content_type:
        raise UnsupportedMediaType(f"Content-Type is required; supported: {', '.join(decoders)}")
    kind, params = media_type(content_type)
    if supports(decoders, kind):
        return kind, params
    raise UnsupportedMediaType(f"this Content-Type is not supported; supported: {', '.join(decoders)}")


def choose_encoder(accept: str | None, encoders: Mapping[str, Encoder], default: str) -> str:
    """The best supported media type for an Accept header (lists and q-values honoured); 406 when none fits."""
    if not accept or not accept.strip():
        return default
    return _best_encoder(accept, tuple(encoders), default)


@functools.lru_cache(maxsize=256)  # a client sends the same Accept on every request; parsing it is ~50 µs
def _best_encoder(accept: str, encoders: tuple[str, ...], default: str) -> str:
    entries = [(ALIASES.get(value.split(";")[0].strip().lower(), value.split(";")[0].strip().lower()), quality)
               for value, quality in parse_accept_header(accept, MIMEAccept)]
    offered = [default] + [kind for kind in encoders if kind != default and kind != ANY]
    best = MIMEAccept(entries).best_match(offered)
    if best is None:
        if ANY in encoders and entries:
            return max(entries, key=lambda entry: entry[1])[0]
        raise NotAcceptable(f"this Accept cannot be met; supported: {', '.join(offered)}")
    return best
