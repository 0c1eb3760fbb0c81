"""Codecs: one dict per direction, media type -> function.

A decoder turns a request body into data for a handler: a 2-D float array (CSV, NPY), a scipy CSR matrix (LIBSVM,
sparse RecordIO), or a parsed JSON document (JSON, JSON Lines). An encoder turns a handler's output into a body: an
array of scores, or a list of records (dicts). Decoders raise BadRequest and never echo the data they were given.
"""

from __future__ import annotations

import functools
import io
import math
import re
import struct
from typing import Any, Callable, Mapping

import numpy as np
import orjson
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from serve import recordio
from serve.errors import BadRequest, NotAcceptable, UnsupportedMediaType

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
LIBSVM = "text/libsvm"
RECORDIO = "application/x-recordio-protobuf"

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


# --- decoders ----------------------------------------------------------------------------------------------------


def _check_charset(params: Mapping[str, str]) -> None:
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise UnsupportedMediaType("the Content-Type charset is not supported; send utf-8 (or us-ascii)")


def _text(body: bytes, params: Mapping[str, str]) -> str:
    _check_charset(params)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8 text") from None


def _csv_rows_slow(lines: list[str]) -> np.ndarray:
    """Row by row, for what _csv_numbers does not take (nan/inf text, ragged rows): says which row and column is wrong."""
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
# (set to NaN after parsing); orjson then parses it in C, correctly rounded like float(). Any other byte (quotes,
# letters such as nan or inf, brackets, non-ASCII) is mapped to "x", which is not JSON, so such bodies take the
# slow path and its messages.
_CSV_AS_JSON = bytes(c if c in b"0123456789.+-eE,\n" else 32 if c in b" \t\r" else ord("x") for c in range(256))
_COMMA, _NEWLINE, _ZERO = ord(","), ord("\n"), ord("0")
_CHUNK_ROWS = 500


def _csv_numbers(body: bytes) -> np.ndarray | None:
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
    # Parse in chunks of rows: the Python floats of one chunk stay in cache and their memory is reused.
    data, values, done = json.tobytes(), np.empty(rows * width), 0
    bounds = np.concatenate(([-1], newlines[_CHUNK_ROWS - 1::_CHUNK_ROWS], [len(data)]))
    try:
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            numbers = orjson.loads(b"[" + data[start + 1:end] + b"]")
            values[done:done + len(numbers)] = numbers
            done += len(numbers)
    except (orjson.JSONDecodeError, TypeError, ValueError):  # not numbers
        return None
    values[empty] = np.nan
    return values.reshape(rows, width)


def decode_csv(body: bytes, params: Mapping[str, str]) -> np.ndarray:
    """Headerless numeric CSV, comma-separated; an empty field is a missing value. Returns float64 rows."""
    if params.get("label_size", "1").strip() != "1":
        raise UnsupportedMediaType("text/csv parameter label_size must be 1 when given")
    _check_charset(params)
    rows = _csv_numbers(body)
    if rows is not None:
        return rows
    lines = [line for line in _text(body, params).strip().splitlines() if line.strip()]
    if not lines:
        raise BadRequest("CSV body has no rows")
    return _csv_rows_slow(lines)


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


# An NPY header as numpy writes it: a flat dict of strings, booleans and one tuple of integers. Checked (length, then
# form) before numpy's literal_eval sees it, so that no header can reach the tokenizer's or the parser's limits.
NPY_MAX_HEADER = 4096
NPY_MAX_DIMENSIONS = 32
NPY_MAX_LENGTH = 1 << 31  # along any axis: no body this server takes holds more (only an empty array could claim it)
_NPY_HEADER = re.compile(r"\{(\s*'\w+'\s*:\s*('[^'\\]*'|True|False|\((\s*\d+\s*,)*(\s*\d+)?\s*\))\s*,?)*\s*\}\s*")
_NPY_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npy_header(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and the data offset of an NPY body; ValueError when the header is not numpy's."""
    if body[:6] != b"\x93NUMPY" or len(body) < 10:
        raise ValueError("no NPY magic string")
    version = (body[6], body[7])
    size_format = "<H" if version == (1, 0) else "<I" if version in ((2, 0), (3, 0)) else None
    if size_format is None:
        raise ValueError(f"unknown version {version[0]}.{version[1]}")
    start = 8 + struct.calcsize(size_format)
    (length,) = struct.unpack_from(size_format, body, 6 + 2)
    if length > NPY_MAX_HEADER or start + length > len(body):
        raise ValueError(f"header longer than {NPY_MAX_HEADER} bytes or than the body")
    header = body[start:start + length]
    if not _NPY_HEADER.fullmatch(header.decode("utf-8" if version == (3, 0) else "latin1", errors="replace")):
        raise ValueError("header is not a dict of descr, fortran_order and shape")
    stream = io.BytesIO(b"\x93NUMPY\x01\x00" + struct.pack("<H", length) + header) if version == (3, 0) \
        else io.BytesIO(body[:start + length])
    np.lib.format.read_magic(stream)
    shape, fortran_order, dtype = _NPY_READERS.get(version, np.lib.format.read_array_header_1_0)(stream)
    return shape, fortran_order, dtype, start + length


def decode_npy(body: bytes, params: Mapping[str, str]) -> np.ndarray:
    """A numeric array (no pickles, no object or structured dtypes) whose declared shape the body holds exactly."""
    try:
        shape, fortran_order, dtype, offset = _npy_header(body)
    except (ValueError, SyntaxError, TypeError, struct.error):
        raise BadRequest("body is not a valid .npy array: its header is not numpy's (a dict of descr, fortran_order "
                         f"and shape, at most {NPY_MAX_HEADER} bytes; object arrays are refused)") from None
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise BadRequest("body is not a valid .npy array of numbers (object arrays are refused)")
    data = len(body) - offset
    if len(shape) > NPY_MAX_DIMENSIONS or any(dim >= NPY_MAX_LENGTH for dim in shape) \
            or math.prod(shape) * dtype.itemsize != data:
        raise BadRequest(f"body is not a valid .npy array: its header declares a shape ({len(shape)} dimensions) that "
                         f"its {data} bytes of data do not hold")
    array = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=offset).copy()  # writable, as np.load gave
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def decode_libsvm(body: bytes, params: Mapping[str, str]):
    """LIBSVM rows: an optional leading label (ignored), then index:value pairs.

    Indices are 0-based unless the request says `text/libsvm; indexing=1` (or the server is configured so).
    Missing pairs are missing values, as in XGBoost's own LIBSVM reader.
    """
    from scipy.sparse import csr_matrix

    base = params.get("indexing", "0").strip()
    if base not in ("0", "1"):
        raise UnsupportedMediaType("text/libsvm parameter indexing must be 0 or 1")
    lines = [line.split() for line in _text(body, params).splitlines() if line.strip()]
    if not lines:
        raise BadRequest("LIBSVM body has no rows")
    indptr, indices, values = [0], [], []
    for number, tokens in enumerate(lines, 1):
        if tokens and ":" not in tokens[0]:
            tokens = tokens[1:]
        for token in tokens:
            index, sep, value = token.partition(":")
            try:
                indices.append(int(index) - int(base))
                values.append(float(value))
            except ValueError:
                raise BadRequest(f"LIBSVM row {number} has a malformed index:value pair") from None
            if not sep or indices[-1] < 0:
                raise BadRequest(f"LIBSVM row {number} has a malformed or negative index (indexing={base})")
        indptr.append(len(indices))
    width = max(indices) + 1 if indices else 0
    if width > recordio.MAX_WIDTH:
        raise BadRequest(f"LIBSVM feature index {width - 1} is beyond any model")
    return csr_matrix((np.asarray(values, dtype=np.float64), np.asarray(indices), np.asarray(indptr)),
                      shape=(len(lines), width))


def decode_recordio(body: bytes, params: Mapping[str, str]):
    try:
        return recordio.decode(body)
    except ValueError as error:
        raise BadRequest(f"RecordIO-protobuf body: {error}") from None


Decoder = Callable[[bytes, Mapping[str, str]], Any]

DECODERS: dict[str, Decoder] = {
    CSV: decode_csv,
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
    NPY: decode_npy,
    LIBSVM: decode_libsvm,
    RECORDIO: decode_recordio,
}

# --- encoders ----------------------------------------------------------------------------------------------------
# Outputs are either an array of scores (1-D, or 2-D with one row per instance) or a list of records (dicts).

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _scores(output) -> np.ndarray | None:
    """float64 scores (so the text is the float32 result written exactly), or None for records."""
    if isinstance(output, np.ndarray):
        return output.astype(np.float64, copy=False)
    return None


def _records(output) -> list:
    scores = _scores(output)
    if scores is None:
        return output
    return [{"score": row} for row in (scores.tolist() if scores.ndim == 1 else scores)]


def encode_json(output) -> bytes:
    return orjson.dumps({"predictions": _records(output)}, option=_NUMPY)


def encode_jsonlines(output) -> bytes:
    return b"".join(orjson.dumps(record, option=_NUMPY) + b"\n" for record in _records(output))


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
    scores = _scores(output)
    if scores is not None:
        text = orjson.dumps(np.atleast_1d(scores), option=_NUMPY)
        if scores.ndim == 1:
            return text[1:-1].replace(b",", b"\n") + b"\n"
        return text[2:-2].replace(b"],[", b"\n") + b"\n"
    return "".join(",".join(map(_csv_field, record.values())) + "\n" for record in output).encode()


def encode_npy(output) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(output), allow_pickle=False)
    return buffer.getvalue()


def encode_recordio(output) -> bytes:
    return recordio.encode(_records(output))


Encoder = Callable[[Any], bytes]

ENCODERS: dict[str, Encoder] = {
    JSON: encode_json,
    JSONLINES: encode_jsonlines,
    CSV: encode_csv,
    NPY: encode_npy,
    RECORDIO: encode_recordio,
}

# --- negotiation -------------------------------------------------------------------------------------------------

# As a key of a handler's decoders (encoders): the handler's own input_fn (output_fn) takes (gives) every media type, as
# a user's inference.py hook does; nothing is looked up under it.
ANY = "*/*"


def supports(table: Mapping[str, Any], kind: str) -> bool:
    """Whether a handler's decoders or encoders take this media type."""
    return kind in table or ANY in table


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
