"""LIBSVM (`text/libsvm`), decoding only: rows of index:value pairs as a scipy CSR matrix."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from serve import recordio
from serve.charset import utf8_text
from serve.errors import BadRequest, UnsupportedMediaType


def decode_libsvm(body: bytes, params: Mapping[str, str]):
    """LIBSVM rows: an optional leading label (ignored), then index:value pairs.

    Indices are 0-based unless the request says `text/libsvm; indexing=1` (or the server is configured so).
    Missing pairs are missing values, as in XGBoost's own LIBSVM reader.
    """
    from scipy.sparse import csr_matrix

    base = params.get("indexing", "0").strip()
    if base not in ("0", "1"):
        raise UnsupportedMediaType("text/libsvm parameter indexing must be 0 or 1")
    lines = [line.split() for line in utf8_text(body, params).splitlines() if line.strip()]
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
