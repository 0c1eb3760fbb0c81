"""serve.json_codec.numeric_rows, the XGBoost family's fast path for JSON rows of numbers: every document it reads must
give, to the bit, what orjson and numpy give (decode_json, then the family's np.asarray), and every other document
must be left to decode_json (None)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve.json_codec import numeric_rows

number = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-2**63, 2**64 - 1)  # what orjson writes
leaf = number | st.none() | st.booleans() | st.text(max_size=2) | st.just([]) | st.lists(number, max_size=2)
row = st.lists(number, min_size=1, max_size=4) | st.lists(leaf, min_size=0, max_size=4) | number
instances = st.lists(row, min_size=0, max_size=5)
document = st.fixed_dictionaries({"instances": instances}) | st.fixed_dictionaries(
    {"instances": instances}, optional={"top_k": st.integers(1, 3), "contributions": st.booleans()}) | instances


def generic(body: bytes):
    """What decode_json and the family's dense conversion make of a {"instances": rows} document, or None."""
    try:
        parsed = orjson.loads(body)
        rows = np.asarray(parsed["instances"], dtype=np.float64)
    except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, IndexError, OverflowError):
        return None
    return rows if rows.ndim == 2 and rows.size else None


@settings(max_examples=3000, deadline=None)
@given(document)
def test_what_the_fast_path_reads_equals_orjson_and_numpy(doc):
    body = orjson.dumps(doc)
    fast = numeric_rows(body)
    if fast is None:
        return
    assert isinstance(doc, dict) and list(doc) == ["instances"]  # request options stay with decode_json
    expected = generic(body)
    assert expected is not None and fast.dtype == np.float64 and fast.shape == expected.shape
    assert fast.tobytes() == expected.tobytes()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=3, max_size=3), min_size=1,
                max_size=20))
def test_rows_of_numbers_take_the_fast_path(rows):
    body = orjson.dumps({"instances": rows})
    assert numeric_rows(body).tobytes() == np.array(rows, dtype=np.float64).tobytes()
    with_missing = [[None if i == j else value for j, value in enumerate(row)] for i, row in enumerate(rows)]
    body = orjson.dumps({"instances": with_missing})  # null: a missing value, NaN
    assert numeric_rows(body).tobytes() == np.array(with_missing, dtype=np.float64).tobytes()


@pytest.mark.parametrize("body", [
    b'{"instances": [[[], 5], [[1, 2], 3]]}',  # as many leaves as a 2x2 table, one row holding an array
    b'{"instances": [[1, 2], [3]]}', b'{"instances": [[1, -1.2345e300, null]]}', b'{"instances": [[1, true]]}',
    b'{"instances": [[null, 2], [null]]}',
    b'{"instances": [["1", 2]]}', b'{"instances": [[1, 2]], "top_k": 3}', b'{"instances": []}', b'{"instances": [[]]}',
    b'{"instances": [1, 2]}', b'[[1, 2]]', b'{"instances": [[1e400]]}', b'{"instances": [[18446744073709551616]]}',
    b'null', b'{"instances": [[1, null]], "note": "null"}', b'{"instances": [[1, 2]]', b'\xff', b'\xef\xbb\xbf{"instances": [[1, 2]]}', b'{"instances": [{"features": [1]}]}', b'{"instances": [[1]], "instances": [[2]]}'])
def test_other_documents_are_left_to_decode_json(body):
    assert numeric_rows(body) is None


def test_the_null_stand_in_sent_as_a_number_stays_a_number():
    """A body that sends the value null is read as, and no null, keeps it (the model then refuses it as beyond
    float32); the nulls replaced are counted from the length the replacement adds."""
    rows = numeric_rows(b'{"instances": [[-1.2345e300, 2]]}')
    assert rows.tolist() == [[-1.2345e300, 2.0]]
    rows = numeric_rows(bytearray(b'{"instances": [[null, 2], [3, null]]}'))
    assert np.isnan(rows).tolist() == [[True, False], [False, True]]
