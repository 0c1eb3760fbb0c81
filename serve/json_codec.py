"""JSON and JSON Lines, both directions. Decoding gives the parsed document (JSON Lines: `{"instances": [...]}`);
encoding writes `{"predictions": [...]}` or one record per line."""

from __future__ import annotations

from typing import Any, Mapping

import orjson

from serve.errors import BadRequest
from serve.output_forms import records

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _json(text: bytes | str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None


def decode_json(body: bytes, params: Mapping[str, str]) -> Any:
    return _json(body)


def decode_jsonlines(body: bytes, params: Mapping[str, str]) -> dict:
    """JSON Lines: one instance per line, returned as a JSON document `{"instances": [...]}`."""
    lines = [line for line in body.splitlines() if line.strip()]
    instances = []
    for number, line in enumerate(lines, 1):
        try:
            instances.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise BadRequest(f"JSON Lines line {number} is not valid JSON") from None
    return {"instances": instances}


def encode_json(output) -> bytes:
    return orjson.dumps({"predictions": records(output)}, option=_NUMPY)


def encode_jsonlines(output) -> bytes:
    return b"".join(orjson.dumps(record, option=_NUMPY) + b"\n" for record in records(output))
