"""CSV, both directions. Decoding: headerless numeric rows, a vectorized path for numeric bodies (the hot path of
single-row requests and Batch) and a field-by-field path that says which row and column is wrong. Encoding: one line
per instance."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import orjson
import simdjson

from serve.charset import check_charset, utf8_text
from serve.errors import BadRequest, UnsupportedMediaType
from serve.json_codec import NOT_NUMBERS, float64s
from serve.output_forms import scores

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def field_by_field_rows(lines: list[str]) -> np.ndarray:
    """Row by row, for what vectorized_rows does not take (nan, inf, ragged rows): says which row and column is wrong."""
    widths = [line.count(",") + 1 for line in lines]  # checked before allocating rows x the first row's width
    width = widths[0]
    for r, other in enumerate(widths):
        if other != width:
            raise BadRequest(f"CSV row {r + 1} has {other} columns; row 1 has {width}")
    rows = np.empty((len(lines), width), dtype=np.float64)
    for r, line in enumerate(lines):
        for c, field in enumerate(line.split(",")):
            field = field.strip()
            try:
                rows[r, c] = float(field) if field else np.nan
            except ValueError:
                raise BadRequest(f"CSV row {r + 1}, column {c + 1} is not a number") from None
    return rows


# A numeric CSV body becomes a JSON array of numbers once its newlines are commas and its empty fields are "0"
# (set to NaN after parsing). simdjson then parses it in C++ straight into float64s, correctly rounded like float(),
# with no Python object per number; a single row goes through orjson (smaller fixed cost). Any other byte (quotes,
# letters such as nan or inf, brackets, non-ASCII) is mapped to "x", which is not JSON, so such bodies take the slow
# path and its messages.
_CSV_AS_JSON = bytes(c if c in b"0123456789.+-eE,\n" else 32 if c in b" \t\r" else ord("x") for c in range(256))
_COMMA, _NEWLINE, _ZERO = ord(","), ord("\n"), ord("0")
_CHUNK_ROWS = 1000


def vectorized_rows(body: bytes) -> np.ndarray | None:
    """Rows of numbers and empty fields, all of one width, as float64; None when the body needs the slow path."""
    data = body.strip().translate(_CSV_AS_JSON)
    if not data:
        return None
    if b"\n" not in data:  # one row, the common single-prediction request: empty fields become null (NaN)
        line = data.replace(b",,", b",null,").replace(b",,", b",null,")
        line = (b"[null" if line[0] == _COMMA else b"[") + line + (b"null]" if line[-1] == _COMMA else b"]")
        try:
            return np.array([orjson.loads(line)], dtype=np.float64)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None
    text = np.frombuffer(data, dtype=np.uint8)
    separators = np.flatnonzero((text == _COMMA) | (text == _NEWLINE))
    line_ends = np.flatnonzero(text[separators] == _NEWLINE)
    rows = line_ends.size + 1
    width, uneven = divmod(separators.size + 1, rows)
    if uneven or not np.array_equal(line_ends, np.arange(width - 1, separators.size, width)):
        return None  # ragged or blank lines
    starts = np.concatenate(([0], separators + 1))
    empty = np.flatnonzero(starts == np.append(separators, text.size))
    if empty.size and width == 1:
        return None  # a blank line or a missing value? the slow path skips blank lines
    json = text.copy()
    newlines = separators[line_ends]
    json[newlines] = _COMMA
    if empty.size:
        json = np.insert(json, starts[empty], _ZERO)
        newlines = newlines + np.searchsorted(starts[empty], newlines, side="right")  # moved by the zeros before
    # Parse in chunks of rows, with one parser: its buffers are sized by a chunk and reused, not by the whole body.
    data, values, done, parser = json.tobytes(), np.empty(rows * width), 0, simdjson.Parser()
    bounds = np.concatenate(([-1], newlines[_CHUNK_ROWS - 1::_CHUNK_ROWS], [len(data)]))
    try:
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            numbers = float64s(parser.parse(b"[" + data[start + 1:end] + b"]"))
            values[done:done + numbers.size] = numbers
            done += numbers.size
    except NOT_NUMBERS:  # the slow path reads what it can (an integer beyond 64 bits) and says what it cannot
        return None
    values[empty] = np.nan
    return values.reshape(rows, width)


def decode_csv(body: bytes, params: Mapping[str, str]) -> np.ndarray:
    """Headerless numeric CSV, comma-separated; an empty field is a missing value. Returns float64 rows."""
    if params.get("label_size", "1").strip() != "1":
        raise UnsupportedMediaType("text/csv parameter label_size must be 1 when given")
    check_charset(params)
    rows = vectorized_rows(body)
    if rows is not None:
        return rows
    lines = [line for line in utf8_text(body, params).strip().splitlines() if line.strip()]
    if not lines:
        raise BadRequest("CSV body has no rows")
    return field_by_field_rows(lines)


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _csv_field(value) -> str:
    if isinstance(value, (list, tuple, dict, np.ndarray)):
        return _quoted(orjson.dumps(value, option=_NUMPY).decode())
    if isinstance(value, str):
        return _quoted(value) if any(c in value for c in ',"\r\n') else value
    return "" if value is None else orjson.dumps(value, option=_NUMPY).decode()


def encode_csv(output) -> bytes:
    """One line per instance. Scores: the row's values comma-separated. Records: values in key order, lists quoted."""
    values = scores(output)
    if values is not None:
        text = orjson.dumps(np.atleast_1d(values), option=_NUMPY)
        if values.ndim == 1:
            return text[1:-1].replace(b",", b"\n") + b"\n"
        return text[2:-2].replace(b"],[", b"\n") + b"\n"
    return "".join(",".join(map(_csv_field, record.values())) + "\n" for record in output).encode()
