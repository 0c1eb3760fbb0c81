"""JSON and JSON Lines, both directions. Decoding gives the parsed document (JSON Lines: `{"instances": [...]}`);
encoding writes `{"predictions": [...]}` or one record per line. `numeric_rows` reads the commonest document, rows of
numbers, straight into a float64 array, for a family that predicts on one."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import orjson
import simdjson

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


# What simdjson raises for a document that is not numbers: ValueError (not JSON, a number out of range), TypeError (a
# value that is not a number), RuntimeError (an integer beyond 64 bits, which float() still reads).
NOT_NUMBERS = (ValueError, TypeError, RuntimeError)


def float64s(array: simdjson.Array) -> np.ndarray:
    """A parsed array's numbers, nested arrays flattened, as float64s (in C++: no Python object per number); raises
    one of NOT_NUMBERS for any other value."""
    return np.frombuffer(array.as_buffer(of_type="d"), np.float64)


# null is read as this number, then set to NaN, when the body holds exactly as many of that value as it holds nulls:
# any model that reads float32 refuses a value this large anyway, and a body that holds it takes decode_json.
_NULL_AS = b"-1.2345e300"
_NULL_VALUE = float(_NULL_AS)


def numeric_rows(body: bytes) -> np.ndarray | None:
    """`{"instances": [[number or null, ...], ...]}`, nothing else in it and every row as wide, as float64 rows (null:
    NaN) parsed in C++ (simdjson, correctly rounded like orjson and float()); None for any other document, which
    decode_json then reads (request options beside "instances", named features, strings, an integer beyond 64 bits,
    invalid JSON)."""
    if body.startswith(b"\xef\xbb\xbf"):  # simdjson skips a byte order mark; orjson, and so decode_json, refuses it
        return None
    replaced = body.replace(b"null", _NULL_AS)  # one pass; how many it replaced is told by the length
    nulls = (len(replaced) - len(body)) // (len(_NULL_AS) - len(b"null"))
    parser = simdjson.Parser()
    try:
        document = parser.parse(replaced)
        if not isinstance(document, simdjson.Object) or len(document) != 1 or "instances" not in document:
            return None
        instances = document["instances"]
        if not isinstance(instances, simdjson.Array) or not len(instances):
            return None
        widths = {len(row) if isinstance(row, simdjson.Array) else -1 for row in instances}
        values = float64s(instances)
    except (*NOT_NUMBERS, KeyError):
        return None
    rows = len(instances)
    del instances, document  # the parser is free again
    # float64s flattens nested arrays: a row holding an array would add a "[" beyond the rows' own.
    if len(widths) != 1 or min(widths) < 1 or values.size != rows * min(widths) or body.count(b"[") != rows + 1:
        return None
    if nulls:
        missing = values == _NULL_VALUE
        if np.count_nonzero(missing) != nulls:
            return None
        values = np.where(missing, np.nan, values)
    return values.reshape(rows, -1)


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
