"""Observability on real `serve` processes: every invocation's answer (2xx, 4xx, 5xx) names the model, its version and
the image; the request's log line carries the same, with request id, status and latency; that line is a valid EMF
record (tests/http/emf_spec.py) with the deploy's dimensions; a bad dimension value stops start-up with exit code 2.
XGBoost single-model and multi-model, and PAT."""

from __future__ import annotations

import json
import re
import subprocess
import time

import numpy as np
import pytest
import requests

from serve import metrics, provenance
from serve.process import ServeProcess
from tests.conftest import FEATURES, train_model
from tests.http.emf_spec import check_line
from tests.pat_models import build_artifact, weeks

IMAGE = {"SERVE_IMAGE_VERSION": "1.4.2", "SERVE_IMAGE_REVISION": "0a1b2c3d"}
DEPLOY = {"SERVE_METRICS_ENDPOINT": "clinical-risk-dev", "SERVE_METRICS_VARIANT": "AllTraffic",
          "SERVE_METRICS_MODEL": "risk-model-7"}
DIMENSIONS = {"EndpointName": "clinical-risk-dev", "VariantName": "AllTraffic", "ModelName": "risk-model-7"}
SECRET = "31415.926"  # a feature value: never in a record
# A script that fails on purpose for a body starting with "fail" (a bug: 500), and otherwise answers zeros.
FAILING_SCRIPT = '''
import numpy as np

def input_fn(input_data, content_type):
    return bytes(input_data)

def predict_fn(data, model):
    if data.startswith(b"fail"):
        raise RuntimeError("failing on purpose")
    return np.zeros(len(data.splitlines()))
'''


def scripted_model(model_dir, version: str | None):
    train_model(model_dir, "binary:logistic", metadata={"model_version": version} if version else None)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(FAILING_SCRIPT)
    return model_dir


def invocation_lines(server: ServeProcess) -> list[dict]:
    return [json.loads(line) for line in server.logs().splitlines() if '"message":"invocation"' in line]


def wait_for_lines(server: ServeProcess, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while len(lines := invocation_lines(server)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


def assert_names(response: requests.Response, model: str, version: str | None, target: str | None = None) -> None:
    headers = response.headers
    assert headers["X-Model-Name"] == model
    assert headers.get("X-Model-Version") == version
    assert headers.get("X-Target-Model") == target
    assert headers["X-Image-Version"] == "1.4.2" and headers["X-Image-Revision"] == "0a1b2c3d"


def assert_line(line: dict, response: requests.Response, dimensions: dict = DIMENSIONS) -> None:
    """The line says what the headers say, and is an EMF record with the deploy's dimensions."""
    assert line["status"] == response.status_code
    assert re.fullmatch("[0-9a-f]{32}", line["request_id"]) and line["latency_ms"] > 0
    assert line["model"] == response.headers["X-Model-Name"]
    assert line.get("model_version") == response.headers.get("X-Model-Version")
    assert line.get("target_model") == response.headers.get("X-Target-Model")
    assert (line["image_version"], line["image_revision"]) == ("1.4.2", "0a1b2c3d")
    record = check_line(json.dumps(line))
    directive, = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ClinicalInference"
    rollup = [[name for name in dimensions if name != "ModelName"]] if "ModelName" in dimensions else []
    assert directive["Dimensions"] == [list(dimensions)] + rollup and all(line[k] == v for k, v in dimensions.items())
    names = [metric["Name"] for metric in directive["Metrics"]]
    assert set(names) <= set(metrics.METRICS) and line["Requests"] == 1
    status_class = f"Status{response.status_code // 100}xx"
    assert [line[name] for name in ("Status2xx", "Status4xx", "Status5xx")].count(1) == 1 and line[status_class] == 1
    if response.status_code == 200:
        assert {"ReadTime", "DecodeTime", "PredictTime", "EncodeTime", "Rows"} <= set(names)
    assert SECRET not in json.dumps(line)


# --- XGBoost, one model -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    model_dir = scripted_model(tmp_path_factory.mktemp("single") / "model", version="2026.12-r7")
    env = {"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": "1", **IMAGE, **DEPLOY}
    process = ServeProcess(env, tmp_path_factory.mktemp("single-log") / "serve.log").wait_ready()
    yield process
    process.stop()


def test_single_model_answers_name_model_version_and_image_on_200_4xx_and_5xx(single):
    csv = {"Content-Type": "text/csv"}
    ok = requests.post(single.url + "/invocations", data=f"{SECRET},1,2,3\n4,5,6,7\n", headers=csv)
    refused = requests.post(single.url + "/invocations", data=b"1,2,3,4", headers={**csv, "Accept": "image/png"})
    broken = requests.post(single.url + "/invocations", data=b"fail", headers=csv)
    assert (ok.status_code, refused.status_code, broken.status_code) == (200, 406, 500)
    for response in (ok, refused, broken):
        assert_names(response, "risk-model-7", "2026.12-r7")
    assert "X-Model-Name" not in requests.get(single.url + "/ping").headers

    lines = wait_for_lines(single, 3)
    assert len(lines) == 3, "one line per invocation, and none for /ping"
    for line, response in zip(lines, (ok, refused, broken)):
        assert_line(line, response)
    assert lines[0]["Rows"] == 2
    assert lines[2]["request_id"] == broken.json()["request_id"], "a 500's request id is its line's"


# --- XGBoost, several models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt-ml-models")
    train_model(root / "risk" / "model", "binary:logistic", metadata={"feature_names": FEATURES, "model_version": "3"})
    train_model(root / "plain" / "model", "reg:squarederror", seed=2)  # no metadata.json: the content hash
    scripted_model(root / "failing" / "model", version=None)
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(root), **IMAGE, **DEPLOY}
    process = ServeProcess(env, tmp_path_factory.mktemp("multi-log") / "serve.log").wait_ready()
    for name in ("risk", "plain", "failing"):
        loaded = requests.post(process.url + "/models", json={"model_name": name, "url": str(root / name / "model")})
        assert loaded.status_code == 200, loaded.text
    yield process, root
    process.stop()


def test_multi_model_answers_name_the_target_and_its_version(multi):
    server, root = multi
    plain_version = provenance.content_hash(root / "plain" / "model")
    assert re.fullmatch("sha256:[0-9a-f]{16}", plain_version)

    def post(target: str | None, body: bytes, path: str = "/invocations"):
        headers = {"Content-Type": "text/csv", **({"X-Amzn-SageMaker-Target-Model": target} if target else {})}
        return requests.post(server.url + path, data=body, headers=headers)

    cases = [
        (post("risk", f"{SECRET},1,2,3".encode()), 200, "3", "risk"),
        (post("plain", b"1,2,3,4"), 200, plain_version, "plain"),
        (post("risk", b"1,2,3"), 400, "3", "risk"),
        (post("failing", b"fail"), 500, provenance.content_hash(root / "failing" / "model"), "failing"),
        (post(None, b"1,2,3,4", "/models/plain/invoke"), 200, plain_version, "plain"),
        (post("absent", b"1,2,3,4"), 404, None, None),  # no loaded model answered: the endpoint's name only
    ]
    for response, status, version, target in cases:
        assert response.status_code == status, response.text
        assert_names(response, "risk-model-7", version, target)
    lines = wait_for_lines(server, len(cases))
    assert len(lines) == len(cases)
    for line, (response, *_) in zip(lines, cases):
        assert_line(line, response)


# --- PAT ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pat(tmp_path_factory):
    model_dir = build_artifact(tmp_path_factory.mktemp("pat") / "model")
    env = {"SERVE_HANDLER": "pat", "SM_MODEL_DIR": str(model_dir), "SERVE_DEVICE": "cpu", **IMAGE,
           "SERVE_METRICS_ENDPOINT": "actigraphy-dev"}
    process = ServeProcess(env, tmp_path_factory.mktemp("pat-log") / "serve.log", deadline_s=120).wait_ready()
    yield process, model_dir
    process.stop()


def test_pat_answers_and_lines_carry_queue_wait_and_batch_size(pat):
    server, model_dir = pat
    version = provenance.content_hash(model_dir)
    body = {"instances": [{"activity": row.tolist()} for row in weeks(2)]}
    ok = requests.post(server.url + "/invocations", json=body, timeout=120)
    short = requests.post(server.url + "/invocations", json={"instances": [{"activity": [1.0] * 100}]})
    assert (ok.status_code, short.status_code) == (200, 400), short.text
    for response in (ok, short):
        assert_names(response, "model", version)
    lines = wait_for_lines(server, 2)
    assert len(lines) == 2
    for line, response in zip(lines, (ok, short)):
        assert_line(line, response, dimensions={"EndpointName": "actigraphy-dev"})
    assert lines[0]["Rows"] == 2 and lines[0]["BatchSize"] >= 2 and lines[0]["QueueWait"] >= 0
    assert "DeviceMemoryBytes" not in lines[0], "no device memory figure on the CPU"


# --- settings -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value", [("SERVE_METRICS_ENDPOINT", "  "),
                                             ("SERVE_METRICS_VARIANT", "Vari\u00e4nt"),
                                             ("SERVE_METRICS_MODEL", "a\tb"), ("SERVE_METRICS_NAMESPACE", "AWS/Mine")])
def test_a_bad_dimension_value_stops_start_up_with_one_line_and_exit_code_2(tmp_path, risk_dir, variable, value):
    server = ServeProcess({"SM_MODEL_DIR": str(risk_dir), variable: value}, tmp_path / "serve.log")
    try:
        server.process.wait(60)
    except subprocess.TimeoutExpired:
        server.stop()
        pytest.fail(f"serve started with {variable}={value!r}")
    assert server.stop() == 2
    lines = server.logs().splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["message"] == "configuration error" and line["reason"].startswith(variable)


def test_records_off_leave_the_log_line(tmp_path, risk_dir):
    server = ServeProcess({"SM_MODEL_DIR": str(risk_dir), "SERVE_METRICS": "false", **IMAGE},
                          tmp_path / "serve.log").wait_ready()
    try:
        response = requests.post(server.url + "/invocations", data=b"1,2,3,4", headers={"Content-Type": "text/csv"})
        assert response.status_code == 200
        assert_names(response, risk_dir.name, "0.1")
        line, = wait_for_lines(server, 1)
    finally:
        server.stop()
    assert "_aws" not in line and "Requests" not in line
    assert line["status"] == 200 and line["model_version"] == "0.1" and line["latency_ms"] > 0
    assert np.isfinite(line["latency_ms"])
