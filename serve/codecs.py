"""The codec tables: one dict per direction, media type -> function, and the media types' names.

A decoder turns a request body into data for a handler: a 2-D float array (CSV, NPY), a scipy CSR matrix (LIBSVM,
sparse RecordIO), or a parsed JSON document (JSON, JSON Lines). An encoder turns a handler's output into a body: an
array of scores, or a list of records (dicts). Decoders raise BadRequest and never echo the data they were given.
The codecs live in serve.csv_codec, serve.json_codec, serve.npy_codec, serve.libsvm_codec and serve.recordio_codec;
serve.negotiation chooses one for a request.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from serve.csv_codec import decode_csv, encode_csv
from serve.json_codec import decode_json, decode_jsonlines, encode_json, encode_jsonlines
from serve.libsvm_codec import decode_libsvm
from serve.npy_codec import decode_npy, encode_npy
from serve.recordio_codec import decode_recordio, encode_recordio

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
LIBSVM = "text/libsvm"
RECORDIO = "application/x-recordio-protobuf"

Decoder = Callable[[bytes, Mapping[str, str]], Any]

DECODERS: dict[str, Decoder] = {
    CSV: decode_csv,
    JSON: decode_json,
    JSONLINES: decode_jsonlines,
    NPY: decode_npy,
    LIBSVM: decode_libsvm,
    RECORDIO: decode_recordio,
}

Encoder = Callable[[Any], bytes]

ENCODERS: dict[str, Encoder] = {
    JSON: encode_json,
    JSONLINES: encode_jsonlines,
    CSV: encode_csv,
    NPY: encode_npy,
    RECORDIO: encode_recordio,
}

# As a key of a handler's decoders (encoders): the handler's own input_fn (output_fn) takes (gives) every media type, as
# a user's inference.py hook does; nothing is looked up under it.
ANY = "*/*"


def supports(table: Mapping[str, Any], kind: str) -> bool:
    """Whether a handler's decoders or encoders take this media type."""
    return kind in table or ANY in table
