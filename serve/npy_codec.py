"""NPY (`application/x-npy`), both directions: numeric arrays only, the header checked before numpy parses it."""

from __future__ import annotations

import io
import math
import re
import struct
from typing import Mapping

import numpy as np

from serve.errors import BadRequest

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


def encode_npy(output) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(output), allow_pickle=False)
    return buffer.getvalue()
