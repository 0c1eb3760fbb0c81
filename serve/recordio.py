"""SageMaker's `application/x-recordio-protobuf`: RecordIO framing around `aialgs.data.Record` messages.

The message classes are built from a descriptor declared here (the schema of SageMaker's record.proto), so no
generated code and no protoc are needed. Framing: a magic number, a little-endian length, the record, padding to 4 bytes.
"""

from __future__ import annotations

import struct

import numpy as np
import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

MAGIC = 0xCED7230A
_HEADER = struct.Struct("<II")
_FIELD = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, label: int = _FIELD.LABEL_OPTIONAL, type_name: str = "",
           packed: bool = False, oneof: int | None = None) -> descriptor_pb2.FieldDescriptorProto:
    field = _FIELD(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    if packed:
        field.options.packed = True
    if oneof is not None:
        field.oneof_index = oneof
    return field


def _tensor(name: str, kind: int) -> descriptor_pb2.DescriptorProto:
    repeated = _FIELD.LABEL_REPEATED
    return descriptor_pb2.DescriptorProto(name=name, field=[
        _field("values", 1, kind, repeated, packed=True),
        _field("keys", 2, _FIELD.TYPE_UINT64, repeated, packed=True),
        _field("shape", 3, _FIELD.TYPE_UINT64, repeated, packed=True),
    ])


def _map_entry(name: str) -> descriptor_pb2.DescriptorProto:
    entry = descriptor_pb2.DescriptorProto(name=name, field=[
        _field("key", 1, _FIELD.TYPE_STRING),
        _field("value", 2, _FIELD.TYPE_MESSAGE, type_name=".aialgs.data.Value"),
    ])
    entry.options.map_entry = True
    return entry


def _build_record_class():
    message = _FIELD.TYPE_MESSAGE
    value = descriptor_pb2.DescriptorProto(
        name="Value",
        field=[
            _field("float32_tensor", 2, message, type_name=".aialgs.data.Float32Tensor", oneof=0),
            _field("float64_tensor", 3, message, type_name=".aialgs.data.Float64Tensor", oneof=0),
            _field("int32_tensor", 7, message, type_name=".aialgs.data.Int32Tensor", oneof=0),
            _field("bytes", 9, message, type_name=".aialgs.data.Bytes", oneof=0),
        ],
        oneof_decl=[descriptor_pb2.OneofDescriptorProto(name="value")],
    )
    raw_bytes = descriptor_pb2.DescriptorProto(name="Bytes", field=[
        _field("value", 1, _FIELD.TYPE_BYTES, _FIELD.LABEL_REPEATED),
        _field("content_type", 2, _FIELD.TYPE_STRING),
    ])
    repeated = _FIELD.LABEL_REPEATED
    record = descriptor_pb2.DescriptorProto(
        name="Record",
        field=[
            _field("features", 1, message, repeated, type_name=".aialgs.data.Record.FeaturesEntry"),
            _field("label", 2, message, repeated, type_name=".aialgs.data.Record.LabelEntry"),
            _field("uid", 3, _FIELD.TYPE_STRING),
            _field("metadata", 4, _FIELD.TYPE_STRING),
            _field("configuration", 5, _FIELD.TYPE_STRING),
        ],
        nested_type=[_map_entry("FeaturesEntry"), _map_entry("LabelEntry")],
    )
    schema = descriptor_pb2.FileDescriptorProto(
        name="serve_record.proto", package="aialgs.data", syntax="proto2",
        message_type=[
            _tensor("Float32Tensor", _FIELD.TYPE_FLOAT),
            _tensor("Float64Tensor", _FIELD.TYPE_DOUBLE),
            _tensor("Int32Tensor", _FIELD.TYPE_INT32),
            raw_bytes, value, record,
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("aialgs.data.Record"))


Record = _build_record_class()
_TENSORS = ("float32_tensor", "float64_tensor", "int32_tensor")
MAX_WIDTH = 1 << 31  # features per record: more is not a tabular row


def split_records(body: bytes) -> list[bytes]:
    """The payloads of a RecordIO stream; ValueError when the framing is broken."""
    records, offset = [], 0
    while offset < len(body):
        if offset + _HEADER.size > len(body):
            raise ValueError("truncated RecordIO header")
        magic, length = _HEADER.unpack_from(body, offset)
        if magic != MAGIC:
            raise ValueError("not a RecordIO stream (bad magic number)")
        start = offset + _HEADER.size
        if start + length > len(body):
            raise ValueError("truncated RecordIO record")
        records.append(body[start:start + length])
        offset = start + length + (-length % 4)
    return records


def _row(record, index: int) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """(values, keys or None for dense, declared width or None) of one record's `values` feature."""
    if "values" not in record.features:
        raise ValueError(f"record {index} has no 'values' feature")
    value = record.features["values"]
    kind = value.WhichOneof("value")
    if kind not in _TENSORS:
        raise ValueError(f"record {index} holds {kind or 'no'} data; expected a numeric tensor")
    tensor = getattr(value, kind)
    values = np.asarray(tensor.values, dtype=np.float64)
    width = int(tensor.shape[-1]) if len(tensor.shape) else None
    if width is not None and not 0 < width <= MAX_WIDTH:
        raise ValueError(f"record {index} declares {width} features")
    if not len(tensor.keys):
        if width is not None and width != len(values):
            raise ValueError(f"record {index} declares {width} features but holds {len(values)} values")
        return values, None, width
    if len(tensor.keys) != len(values):
        raise ValueError(f"record {index} has {len(tensor.keys)} keys for {len(values)} values")
    if max(tensor.keys) >= (width or MAX_WIDTH):
        raise ValueError(f"record {index} has a key beyond its {width or MAX_WIDTH} features")
    return values, np.asarray(tensor.keys, dtype=np.int64), width


def decode(body: bytes):
    """Rows of a RecordIO-protobuf payload: a dense float64 array, or a scipy CSR matrix when records are sparse."""
    rows = []
    for index, payload in enumerate(split_records(body)):
        record = Record()
        try:
            record.ParseFromString(payload)
        except DecodeError:
            raise ValueError(f"record {index} is not a valid protobuf Record") from None
        rows.append(_row(record, index))
    if not rows:
        raise ValueError("no records in the payload")
    if all(keys is None for _, keys, _ in rows):
        widths = {len(values) for values, _, _ in rows}
        if len(widths) != 1:
            raise ValueError("records have different numbers of features")
        return np.vstack([values for values, _, _ in rows])
    from scipy.sparse import csr_matrix

    width = max(w if w is not None else (int(k.max()) + 1 if k is not None and len(k) else len(v))
                for v, k, w in rows)
    indices = [k if k is not None else np.arange(len(v)) for v, k, _ in rows]
    indptr = np.cumsum([0] + [len(i) for i in indices])
    return csr_matrix((np.concatenate([v for v, _, _ in rows]), np.concatenate(indices), indptr),
                      shape=(len(rows), width))


def frame(records: list) -> bytes:
    """RecordIO stream of serialized Record messages."""
    out = bytearray()
    for record in records:
        payload = record.SerializeToString()
        out += _HEADER.pack(MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)
    return bytes(out)


def _float32_values(value) -> list[float]:
    return np.atleast_1d(np.asarray(value, dtype=np.float32)).tolist()


def _is_numeric(value) -> bool:
    return np.asarray(value).dtype.kind in "biuf"


def encode(rows: list[dict]) -> bytes:
    """One Record per output row under `label` (SageMaker's output form): numbers as a float32 tensor, text (a class
    label) as UTF-8 bytes, anything else (feature contributions) as JSON bytes."""
    records = []
    for fields in rows:
        record = Record()
        for key, value in fields.items():
            if _is_numeric(value):
                record.label[key].float32_tensor.values.extend(_float32_values(value))
            elif isinstance(value, str):
                record.label[key].bytes.value.append(value.encode())
                record.label[key].bytes.content_type = "text/plain"
            else:
                record.label[key].bytes.value.append(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))
                record.label[key].bytes.content_type = "application/json"
        records.append(record)
    return frame(records)


def encode_features(rows: np.ndarray) -> bytes:
    """Dense rows under `features['values']`, as clients send them (used by tests and benchmarks)."""
    records = []
    for row in np.atleast_2d(rows):
        record = Record()
        record.features["values"].float32_tensor.values.extend(_float32_values(row))
        records.append(record)
    return frame(records)
