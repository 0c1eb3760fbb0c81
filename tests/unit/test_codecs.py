import io

import numpy as np
import orjson
import pytest

from serve import codecs, csv_codec, json_codec, libsvm_codec, negotiation, npy_codec, recordio, recordio_codec
from serve.errors import BadRequest, NotAcceptable, UnsupportedMediaType


def test_csv_rows_are_parsed_exactly():
    rows = csv_codec.decode_csv(b"2,0.645,0.515\n1,0.685,0.55\n", {})
    np.testing.assert_array_equal(rows, [[2, 0.645, 0.515], [1, 0.685, 0.55]])
    assert rows.dtype == np.float64


def test_csv_single_row_crlf_spaces_and_charset():
    assert csv_codec.decode_csv(b"1, 2 ,3\r\n", {"charset": "UTF-8"}).tolist() == [[1, 2, 3]]


def test_csv_empty_field_is_missing():
    rows = csv_codec.decode_csv(b"1,,3\n,5,\n", {})
    assert np.isnan(rows[0, 1]) and np.isnan(rows[1, 0]) and np.isnan(rows[1, 2])
    assert rows[1, 1] == 5


@pytest.mark.parametrize("body, message", [
    (b"1,2,3\n4,5\n", "row 2 has 2 columns"),
    (b"1,2\n3,4,5\n", "row 2 has 3 columns"),
    (b"age,bmi\n1,2\n", "row 1, column 1 is not a number"),
    (b"1,2,secret\n", "row 1, column 3 is not a number"),
    (b"\xff\xfe1,2", "not valid UTF-8"),
    (b"\n\n", "no rows"),
])
def test_bad_csv_is_a_bad_request_without_its_values(body, message):
    with pytest.raises(BadRequest, match=message) as error:
        csv_codec.decode_csv(body, {})
    assert "secret" not in error.value.message


def test_csv_label_size_other_than_one_is_unsupported():
    assert csv_codec.decode_csv(b"1,2", {"label_size": "1"}).shape == (1, 2)
    with pytest.raises(UnsupportedMediaType):
        csv_codec.decode_csv(b"1,2", {"label_size": "0"})


def test_json_and_jsonlines():
    assert json_codec.decode_json(b'{"instances": [[1, 2]]}', {}) == {"instances": [[1, 2]]}
    assert json_codec.decode_jsonlines(b'[1, 2]\n{"features": [3, 4]}\n', {}) == {
        "instances": [[1, 2], {"features": [3, 4]}]}
    with pytest.raises(BadRequest, match="not valid JSON"):
        json_codec.decode_json(b'{"instances": [1, 2', {})
    with pytest.raises(BadRequest, match="line 2"):
        json_codec.decode_jsonlines(b"[1]\n[2\n", {})


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_npy_round_trip_and_pickle_refused():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(npy_codec.decode_npy(_npy(array), {}), array)
    with pytest.raises(BadRequest, match="object arrays are refused"):
        npy_codec.decode_npy(_npy(np.array([{"x": 1}], dtype=object)), {})
    with pytest.raises(BadRequest):
        npy_codec.decode_npy(b"not npy", {})


def test_libsvm_zero_based_by_default_one_based_on_request():
    matrix = libsvm_codec.decode_libsvm(b"10 0:2 3:0.5\n1:7\n", {})
    assert matrix.shape == (2, 4)
    np.testing.assert_array_equal(matrix.toarray(), [[2, 0, 0, 0.5], [0, 7, 0, 0]])
    one_based = libsvm_codec.decode_libsvm(b"10 1:2 4:0.5\n", {"indexing": "1"})
    np.testing.assert_array_equal(one_based.toarray(), [[2, 0, 0, 0.5]])
    with pytest.raises(BadRequest, match="negative index"):
        libsvm_codec.decode_libsvm(b"0:1\n", {"indexing": "1"})
    with pytest.raises(BadRequest, match="malformed"):
        libsvm_codec.decode_libsvm(b"1 a:b\n", {})
    with pytest.raises(UnsupportedMediaType):
        libsvm_codec.decode_libsvm(b"0:1", {"indexing": "2"})


def test_recordio_dense_sparse_and_broken():
    rows = np.array([[42, 6, 9], [1, 2, 3]], dtype=np.float32)
    np.testing.assert_array_equal(recordio_codec.decode_recordio(recordio.encode_features(rows), {}), rows)
    record = recordio.Record()
    tensor = record.features["values"].float64_tensor
    tensor.values.extend([1.0, 5.0])
    tensor.keys.extend([0, 5])
    tensor.shape.extend([8])
    sparse = recordio_codec.decode_recordio(recordio.frame([record]), {})
    assert sparse.shape == (1, 8) and sparse[0, 5] == 5
    with pytest.raises(BadRequest, match="bad magic"):
        recordio_codec.decode_recordio(b"\x00" * 12, {})
    with pytest.raises(BadRequest, match="truncated"):
        recordio_codec.decode_recordio(recordio.encode_features(rows)[:-6], {})


def test_json_output_is_valid_json_with_exact_float32_values():
    scores = np.array([11.100030899047852, np.nan], dtype=np.float32)
    body = json_codec.encode_json(scores)
    assert body == b'{"predictions":[{"score":11.100030899047852},{"score":null}]}'
    assert orjson.loads(body)["predictions"][0]["score"] == float(scores[0])


def test_csv_output_one_row_per_line():
    assert csv_codec.encode_csv(np.array([0.5, 0.25], dtype=np.float32)) == b"0.5\n0.25\n"
    assert csv_codec.encode_csv(np.array([[0.5, 0.5], [0.25, 0.75]])) == b"0.5,0.5\n0.25,0.75\n"
    records = [{"predicted_label": 1, "probabilities": [0.25, 0.75]}]
    assert csv_codec.encode_csv(records) == b'1,"[0.25,0.75]"\n'


def test_jsonlines_and_npy_and_recordio_output():
    assert json_codec.encode_jsonlines(np.array([1.0, 2.0])) == b'{"score":1.0}\n{"score":2.0}\n'
    array = np.array([[1.0, 2.0]])
    np.testing.assert_array_equal(np.load(io.BytesIO(npy_codec.encode_npy(array))), array)
    stream = recordio_codec.encode_recordio([{"score": 0.5}])
    (payload,) = recordio.split_records(stream)
    record = recordio.Record()
    record.ParseFromString(payload)
    assert list(record.label["score"].float32_tensor.values) == [0.5]


@pytest.mark.parametrize("header, expected", [
    ("text/csv", "text/csv"), ("text/csv; charset=utf-8", "text/csv"), ("CSV", "text/csv"),
    ("application/json; charset=UTF-8", "application/json"), ("text/x-libsvm", "text/libsvm"),
])
def test_content_type_matching(header, expected):
    assert negotiation.choose_decoder(header, codecs.DECODERS)[0] == expected


@pytest.mark.parametrize("header", [None, "", "application/x-parquet", "image/png"])
def test_unsupported_content_type_is_415(header):
    with pytest.raises(UnsupportedMediaType):
        negotiation.choose_decoder(header, codecs.DECODERS)


@pytest.mark.parametrize("accept, expected", [
    (None, "text/csv"), ("*/*", "text/csv"), ("application/json", "application/json"),
    ("application/json;verbose=True", "application/json"), ("text/csv, application/json", "text/csv"),
    ("text/csv;q=0.1, application/jsonlines", "application/jsonlines"), ("application/*", "application/json"),
    ("text/html, application/x-npy;q=0.5", "application/x-npy"),
])
def test_accept_negotiation(accept, expected):
    assert negotiation.choose_encoder(accept, codecs.ENCODERS, "text/csv") == expected


@pytest.mark.parametrize("accept", ["text/html", "application/xml, image/*", "text/libsvm"])
def test_unacceptable_accept_is_406(accept):
    with pytest.raises(NotAcceptable):
        negotiation.choose_encoder(accept, codecs.ENCODERS, "text/csv")


# 415 and 406 bodies name what is supported and echo no header value: a marker planted in the media type, the subtype
# or a parameter (name or value) never comes back.
MARK = "zq-mark-4242"
MARKED_CONTENT_TYPES = [f"{MARK}/csv", f"text/{MARK}", f"application/{MARK}; charset=utf-8", f"image/png; {MARK}=1",
                        f"image/png; x={MARK}", f'image/png; x="{MARK}, y"', f"{MARK.upper()}"]
MARKED_ACCEPTS = [f"{MARK}/html", f"text/{MARK}", f"text/html; {MARK}=1", f"text/html; q=0.5; x={MARK}",
                  f"application/xml, image/{MARK};q=0.9", f"{MARK.upper()}/X"]


def _names_only_supported(message: str, supported) -> None:
    assert MARK not in message.lower(), message
    listed = message.partition("supported: ")[2].split(", ")
    assert listed == list(supported), message


@pytest.mark.parametrize("header", MARKED_CONTENT_TYPES)
def test_415_names_the_supported_types_and_echoes_no_content_type(header):
    with pytest.raises(UnsupportedMediaType) as refused:
        negotiation.choose_decoder(header, codecs.DECODERS)
    _names_only_supported(refused.value.message, codecs.DECODERS)


@pytest.mark.parametrize("accept", MARKED_ACCEPTS)
def test_406_names_the_supported_types_and_echoes_no_accept(accept):
    with pytest.raises(NotAcceptable) as refused:
        negotiation.choose_encoder(accept, codecs.ENCODERS, "text/csv")
    _names_only_supported(refused.value.message, ["text/csv"] + [t for t in codecs.ENCODERS if t != "text/csv"])


@pytest.mark.parametrize("decode, params", [
    (csv_codec.decode_csv, {"charset": MARK}), (csv_codec.decode_csv, {"label_size": MARK}),
    (libsvm_codec.decode_libsvm, {"charset": MARK}), (libsvm_codec.decode_libsvm, {"indexing": MARK}),
], ids=["csv charset", "csv label_size", "libsvm charset", "libsvm indexing"])
def test_a_refused_content_type_parameter_is_named_not_echoed(decode, params):
    with pytest.raises(UnsupportedMediaType) as refused:
        decode(b"1,2", params)
    assert MARK not in refused.value.message.lower() and next(iter(params)) in refused.value.message


def _npy_header(shape) -> bytes:
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (118 - len(header)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header


@pytest.mark.parametrize("body", [_npy_header((10 ** 13, 40)) + b"\0" * 16, _npy_header((2, 3)) + b"\0" * 8])
def test_npy_whose_header_claims_more_than_the_body_is_refused(body):
    with pytest.raises(BadRequest, match="not a valid .npy"):
        npy_codec.decode_npy(body, {})


def test_huge_sparse_indices_are_bad_requests():
    with pytest.raises(BadRequest, match="beyond any model"):
        libsvm_codec.decode_libsvm(b"99999999999999999999999:1", {})
    record = recordio.Record()
    tensor = record.features["values"].float32_tensor
    tensor.values.extend([1.0])
    tensor.keys.extend([2 ** 64 - 1])
    with pytest.raises(BadRequest, match="key beyond"):
        recordio_codec.decode_recordio(recordio.frame([record]), {})


@pytest.mark.parametrize("values, keys, shape, message", [
    ([1.0, 2.0], [], [3], "declares 3 features but holds 2"),
    ([1.0], [5], [4], "key beyond its 4 features"),
    ([1.0], [], [0], "declares 0 features"),
])
def test_recordio_declared_shapes_are_checked(values, keys, shape, message):
    record = recordio.Record()
    tensor = record.features["values"].float32_tensor
    tensor.values.extend(values)
    tensor.keys.extend(keys)
    tensor.shape.extend(shape)
    with pytest.raises(BadRequest, match=message):
        recordio_codec.decode_recordio(recordio.frame([record]), {})


def test_recordio_output_carries_text_labels_and_json_fields():
    stream = recordio_codec.encode_recordio([{"predicted_label": "oral_agent", "probability": 0.75,
                                      "contributions": {"age": 0.5}}])
    (payload,) = recordio.split_records(stream)
    record = recordio.Record()
    record.ParseFromString(payload)
    assert record.label["predicted_label"].bytes.value == [b"oral_agent"]
    assert list(record.label["probability"].float32_tensor.values) == [0.75]
    assert orjson.loads(record.label["contributions"].bytes.value[0]) == {"age": 0.5}


def test_csv_output_quotes_text_that_needs_it():
    assert csv_codec.encode_csv([{"label": "a,b", "other": 'say "x"', "plain": "low"}]) == b'"a,b","say ""x""",low\n'
