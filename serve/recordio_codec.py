"""SageMaker's RecordIO-protobuf, both directions, on the wire format in serve.recordio: request errors become 400s,
outputs are written as records."""

from __future__ import annotations

from typing import Mapping

from serve import recordio
from serve.errors import BadRequest
from serve.output_forms import records


def decode_recordio(body: bytes, params: Mapping[str, str]):
    try:
        return recordio.decode(body)
    except ValueError as error:
        raise BadRequest(f"RecordIO-protobuf body: {error}") from None


def encode_recordio(output) -> bytes:
    return recordio.encode(records(output))
