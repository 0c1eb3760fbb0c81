"""decode_csv's vectorized path (simdjson, or orjson for one row, on the body rewritten as a JSON array) must agree,
to the bit, with the field-by-field float() path on every body, and send every body it cannot read exactly to that
path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serve import csv_codec
from serve.errors import BadRequest

FIELDS = ["1", "-2.5", "", " ", "1e5", "1E+05", ".5", "+1", "01", "nan", "inf", "-0.0", "1e400", "abc", "1.5.3",
          '"1"', "[1]", "null", "true", "123456789012345678901234567890", "4.9e-324", "-", "e",
          "0.1000000000000000055511151231257827", "é"]


def field_by_field(body: bytes):
    """What the slow path alone answers: the rows, or the 400 it raises."""
    try:
        lines = [line for line in body.decode().strip().splitlines() if line.strip()]
        return csv_codec.field_by_field_rows(lines) if lines else "400"
    except (BadRequest, UnicodeDecodeError):
        return "400"


def decoded(body: bytes):
    try:
        return csv_codec.decode_csv(body, {})
    except BadRequest:
        return "400"


numbers = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.integers(-10**20, 10**20).map(str)
field = st.sampled_from(FIELDS) | numbers
body = st.builds(
    lambda rows, separator, end: (separator.join(",".join(row) for row in rows) + end).encode(),
    st.lists(st.lists(field, min_size=1, max_size=5), min_size=1, max_size=5),
    st.sampled_from(["\n", "\r\n", "\n\n"]), st.sampled_from(["", "\n", " \n"]))


@settings(max_examples=2000, deadline=None)
@given(body)
def test_fast_path_agrees_with_float_per_field(body):
    expected, got = field_by_field(body), decoded(body)
    if isinstance(expected, str) or isinstance(got, str):
        assert expected == got
    else:  # bit for bit, except that JSON parsers read an integer "-0" as 0 (an integer has no -0)
        assert got.shape == expected.shape
        assert np.array_equal(got, expected, equal_nan=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=3, max_size=3),
                min_size=1, max_size=30))
def test_round_trips_repr_exactly(rows):
    body = "\n".join(",".join(repr(v) for v in row) for row in rows).encode()
    assert csv_codec.decode_csv(body, {}).tobytes() == np.array(rows, dtype=np.float64).tobytes()


def test_large_body_with_missing_values_takes_the_fast_path():
    x = np.random.default_rng(0).normal(size=(2000, 40))
    x[np.random.default_rng(1).random(x.shape) < 0.03] = np.nan
    body = "\n".join(",".join("" if np.isnan(v) else "%.7g" % v for v in row) for row in x).encode()
    fast = csv_codec.vectorized_rows(body)
    assert fast is not None
    assert np.array_equal(fast, field_by_field(body), equal_nan=True)


@pytest.mark.parametrize("body", [b"1,2\n3", b"1\n\n2", b"1,nan", b"1,2\n3,4,5\n6", b"\xff,1"])
def test_bodies_it_cannot_read_exactly_go_to_the_slow_path(body):
    assert csv_codec.vectorized_rows(body) is None
