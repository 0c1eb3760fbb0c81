"""Hostile or careless request bodies: each is a 400 that says what was wrong, never a 500, never a huge allocation.

NPY headers that are not literals, too long, too deep or impossible; ragged CSV; values XGBoost cannot read as float32
(in every content type, for every output kind); pickles of every protocol.
"""

import io
import json
import pickle
import re
import struct
import subprocess
import sys

import numpy as np
import pytest
import xgboost

from serve import model_api, npy_codec, recordio
from serve.app import create_app
from serve.errors import BadRequest, ModelLoadError
from serve.loading import build_handler
from serve.multimodel import ModelRegistry
from serve.settings import Settings

from models.xgboost.settings import XGBoostSettings
from tests.conftest import FEATURES, ROOT, load_booster


def _npy(header: bytes, data: bytes = b"\0" * 32, version: int = 1) -> bytes:
    size = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header + data


PREFIX = b"{'descr': '<f8', 'fortran_order': False, 'shape': "
HOSTILE_HEADERS = {
    "unterminated string": PREFIX + b"(1, 4), '''\n",
    "unterminated bracket": PREFIX + b"(1, 4), 'x': (\n",
    "very long": PREFIX + b"(1, 4), 'x': '" + b"a" * 60000 + b"'}\n",
    "deep unary chain": PREFIX + b"(1, " + b"-" * 5000 + b"4)}\n",
    "deeply nested": PREFIX + b"(1, 4), 'x': " + b"[" * 150 + b"]" * 150 + b"}\n",
    "a dimension of 2**64": PREFIX + b"(18446744073709551616, 0)}\n",
    "a dimension of 2**64 last": PREFIX + b"(0, 18446744073709551616)}\n",
    "negative dimensions": PREFIX + b"(-1, -4)}\n",
    "more data than the body": PREFIX + b"(1000000, 40)}\n",
    "a huge item size": b"{'descr': '<U1000000000', 'fortran_order': False, 'shape': (0,)}\n",
    "an expression": PREFIX + b"(1, 2**99999)}\n",
    "not a dict": b"[1, 2, 3]\n",
}


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("name", HOSTILE_HEADERS)
def test_hostile_npy_headers_are_bad_requests(name, version):
    with pytest.raises(BadRequest, match="not a valid .npy array"):
        npy_codec.decode_npy(_npy(HOSTILE_HEADERS[name], version=version), {})


def test_npy_data_must_match_the_declared_shape_exactly():
    good = io.BytesIO()
    np.save(good, np.arange(8, dtype="<f4").reshape(2, 4))
    assert npy_codec.decode_npy(good.getvalue(), {}).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for body in (good.getvalue()[:-1], good.getvalue() + b"\0"):
        with pytest.raises(BadRequest, match="declares a shape"):
            npy_codec.decode_npy(body, {})


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=">f8").reshape(2, 3),
    np.asfortranarray(np.arange(6, dtype="<i4").reshape(2, 3)),
    np.arange(3, dtype=np.uint8),
    np.zeros((0, 4), dtype=np.float32),
    np.float64(3.5),
])
def test_npy_forms_numpy_writes_still_decode(array):
    for version in ((1, 0), (2, 0), (3, 0)):
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asanyarray(array), version=version)
        np.testing.assert_array_equal(npy_codec.decode_npy(buffer.getvalue(), {}), array)


# Run in a child process, so that only the child's address space is limited: a MemoryError there, not the OOM killer,
# if the decoder allocates rows x the widest row first. The child first checks that the limit holds.
RAGGED_CSV_CHILD = """
import resource
import numpy as np
from serve import csv_codec
from serve.errors import BadRequest

resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))
try:
    np.empty(16 << 30, dtype=np.uint8)
    print("the address space limit does not hold")
except MemoryError:
    body = b"," * 1_000_000 + b"\\n" + b"1,2\\n" * 40_000  # 1.2 MB: rows x first-row width would be 320 GB of floats
    try:
        csv_codec.decode_csv(body, {})
        print("accepted")
    except BadRequest as error:
        print("refused:", error.message)
    except MemoryError:
        print("MemoryError")
"""


def test_ragged_csv_is_refused_before_allocating_rows_times_the_widest_row():
    child = subprocess.run([sys.executable, "-c", RAGGED_CSV_CHILD], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "refused: CSV row 2 has 2 columns; row 1 has 1000001", child.stdout + child.stderr


# --- defect 2: values XGBoost cannot read as float32, in every content type and every output kind --------------------

SECRET = 77.125  # a value that must never come back in an error


def _bodies(value: float) -> dict[str, bytes]:
    row = [SECRET, value, 130.0, 6.0]
    text = ",".join(repr(v) if np.isfinite(v) else str(v) for v in row)  # nan, inf, -inf
    record = recordio.Record()
    record.features["values"].float64_tensor.values.extend(row)
    npy = io.BytesIO()
    np.save(npy, np.array([row]))
    bodies = {
        "text/csv": text.encode(),
        "text/libsvm": " ".join(f"{i}:{v}" for i, v in enumerate(text.split(","))).encode(),
        "application/x-recordio-protobuf": recordio.frame([record]),
        "application/x-npy": npy.getvalue(),
    }
    if np.isfinite(value):  # JSON has no infinity
        bodies["application/json"] = json.dumps({"instances": [row]}).encode()
        bodies["application/jsonlines"] = json.dumps(row).encode()
    return bodies


OUT_OF_RANGE = [float("inf"), float("-inf"), 1e300, -3.5e38]
OUTPUT_KINDS = {  # name: (settings changes, headers)
    "scores": ({}, {"Accept": "application/json"}),
    "contributions": ({}, {"Accept": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "contributions=true"}),
    "contribution matrix": ({}, {"Accept": "application/x-npy",
                                 "X-Amzn-SageMaker-Custom-Attributes": "contributions=true"}),
    "selectable": ({"family": XGBoostSettings(inference_output=("predicted_label", "probability"))},
                   {"Accept": "application/json"}),
}


@pytest.fixture(scope="module")
def clients(risk_dir):
    made = {}
    for name, (changes, _) in OUTPUT_KINDS.items():
        settings = Settings(model_dir=risk_dir, workers=1, **changes)
        made[name] = create_app(build_handler(settings), settings).test_client()
    return made


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
@pytest.mark.parametrize("value", OUT_OF_RANGE, ids=str)
def test_values_beyond_float32_are_a_bad_request_for_every_type_and_output(clients, kind, value):
    for content_type, body in _bodies(value).items():
        response = clients[kind].post("/invocations", data=body,
                                      headers={"Content-Type": content_type, **OUTPUT_KINDS[kind][1]})
        assert response.status_code == 400, (content_type, response.data)
        error = response.get_json()["error"]
        assert "row 1, column 2" in error and "float32" in error, error
        assert "77.125" not in error and not re.search(r"\binf\b|e\+?300|3\.5e", error), error


@pytest.mark.parametrize("kind", OUTPUT_KINDS)
def test_nan_is_a_missing_value_for_every_type_and_output(clients, kind, risk_dir):
    booster = load_booster(risk_dir / "xgboost-model")
    for content_type, body in _bodies(float("nan")).items():
        if content_type.startswith("application/json"):
            body = body.replace(b"NaN", b"null")
        body = body.replace(b"1:nan", b"") if content_type == "text/libsvm" else body
        response = clients[kind].post("/invocations", data=body,
                                      headers={"Content-Type": content_type, **OUTPUT_KINDS[kind][1]})
        assert response.status_code == 200, (content_type, response.data)
    expected = booster.inplace_predict(np.array([[SECRET, np.nan, 130.0, 6.0]]))
    scores = clients["scores"].post("/invocations", data=_bodies(float("nan"))["text/csv"],
                                    headers={"Content-Type": "text/csv", "Accept": "application/json"}).get_json()
    assert scores["predictions"][0]["score"] == float(expected[0])


def test_the_largest_float32_is_accepted(clients, risk_dir):
    largest = float(np.finfo(np.float32).max)
    response = clients["contributions"].post("/invocations", data=f"1,{largest!r},-{largest!r},2".encode(),
                                             headers={"Content-Type": "text/csv", **OUTPUT_KINDS["contributions"][1]})
    assert response.status_code == 200, response.data
    (prediction,) = response.get_json()["predictions"]
    booster = load_booster(risk_dir / "xgboost-model")
    row = xgboost.DMatrix(np.array([[1, largest, -largest, 2]], dtype=np.float32))
    assert prediction["score"] == pytest.approx(float(booster.predict(row)[0]), rel=1e-6)
    contributions = booster.predict(row, pred_contribs=True)[0].tolist()
    assert [prediction["contributions"][name] for name in FEATURES + ["bias"]] == pytest.approx(contributions, rel=1e-6)
    # The values reached the model as sent: this model scores them differently from missing values or zeros.
    for other in ([1, np.nan, np.nan, 2], [1, 0, 0, 2]):
        assert booster.predict(xgboost.DMatrix(np.array([other], dtype=np.float32)))[0] != pytest.approx(
            prediction["score"], rel=1e-3)


# --- defect 7: pickles of every protocol are named as pickles ----------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_of_every_protocol_are_refused_as_pickles(tmp_path, outcome_dir, protocol):
    booster = load_booster(outcome_dir / "xgboost-model")
    (tmp_path / "xgboost-model").write_bytes(pickle.dumps(booster, protocol=protocol))
    with pytest.raises(ModelLoadError, match="is a pickle.*SERVE_ALLOW_PICKLE"):
        build_handler(Settings(model_dir=tmp_path))
    loaded = build_handler(Settings(model_dir=tmp_path, family=XGBoostSettings(allow_pickle=True))).model.boosters[0]
    rows = np.ones((1, 4))
    np.testing.assert_array_equal(loaded.inplace_predict(rows), booster.inplace_predict(rows))


@pytest.mark.parametrize("name", ["model.json", "model.ubj"])
def test_model_formats_are_not_mistaken_for_pickles(tmp_path, outcome_dir, name):
    load_booster(outcome_dir / "xgboost-model").save_model(str(tmp_path / name))
    assert build_handler(Settings(model_dir=tmp_path)).model.files == [name]


# --- defect 4: multi-model urls the file system cannot hold, or that lead outside the models root --------------------


@pytest.fixture
def multi_model_client(tmp_path, risk_dir):
    import shutil

    root, outside = tmp_path / "models", tmp_path / "outside"
    shutil.copytree(risk_dir, root / "inside" / "model")
    shutil.copytree(risk_dir, outside / "model")
    (root / "escape").symlink_to(outside)
    (root / "alias").symlink_to(root / "inside")
    settings = Settings(multi_model=True, multi_model_dir=root, workers=1)
    registry = ModelRegistry(settings)
    return create_app(None, settings, registry=registry, routes=model_api.routes(registry, settings)).test_client(), root


@pytest.mark.parametrize("url, status, message", [
    ("{root}/" + "n" * 300 + "/model", 400, "file system can open"),
    ("{root}/" + "/".join(["d" * 250] * 20), 400, "file system can open"),
    ("{root}/inside/\0model", 400, "file system can open"),
    ("{root}/escape/model", 400, "leads outside it through a symbolic link"),
    ("{root}/alias/model", 200, ""),
    ("{root}/inside/model", 200, ""),
], ids=["a name over 255 bytes", "a path over 4096 bytes", "a NUL", "a link leading outside", "a link inside", "plain"])
def test_multi_model_urls_the_file_system_cannot_hold_or_that_leave_the_root(multi_model_client, url, status, message):
    client, root = multi_model_client
    response = client.post("/models", json={"model_name": "m", "url": url.format(root=root)})
    assert response.status_code == status, response.data
    assert message in response.get_json().get("error", "")
