"""SageMaker's hosting contract on the in-process app (Flask test client), with a real tiny model."""

import io
import json

import numpy as np
import pytest

from models.pat.settings import PatSettings
from models.xgboost.settings import XGBoostSettings
from serve import recordio
from serve.app import create_app
from serve.handler import Handler
from serve.settings import Settings
from tests.conftest import FEATURES, load_booster

ROW = b"50,27.5,130,6.1"


def post(client, body, content_type="text/csv", accept=None, **headers):
    if accept:
        headers["Accept"] = accept
    return client.post("/invocations", data=body, headers={"Content-Type": content_type, **headers})


def test_ping_is_200_once_loaded_and_empty(client):
    response = client.get("/ping")
    assert response.status_code == 200 and response.data == b""


def test_ping_is_503_when_the_handler_is_not_ready(settings):
    client = create_app(Handler(settings), settings).test_client()
    assert client.get("/ping").status_code == 503


def test_execution_parameters(client):
    assert client.get("/execution-parameters").get_json() == {
        "MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_default_accept_is_csv_like_the_official_container(client, risk_dir):
    response = post(client, ROW)
    assert response.status_code == 200 and response.content_type == "text/csv"
    expected = load_booster(risk_dir / "xgboost-model").inplace_predict(np.array([[50, 27.5, 130, 6.1]]))
    assert response.data == f"{float(expected[0])!r}\n".encode()


def test_default_accept_setting(risk_dir):
    from serve.loading import build_handler

    settings = Settings(model_dir=risk_dir, default_accept="application/json")
    client = create_app(build_handler(settings), settings).test_client()
    assert post(client, ROW, accept="*/*").content_type == "application/json"


def _npy(rows):
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(rows, dtype=np.float32))
    return buffer.getvalue()


ROWS = np.array([[50, 27.5, 130, 6.1], [71, 31.0, 150, 7.9], [33, 22.0, 115, 5.2]])
BODIES = {
    "text/csv": b"\n".join(b",".join(f"{v!r}".encode() for v in row) for row in ROWS.tolist()),
    "text/csv; charset=utf-8": b"\n".join(b",".join(f"{v!r}".encode() for v in row) for row in ROWS.tolist()),
    "application/json": json.dumps({"instances": ROWS.tolist()}).encode(),
    "application/jsonlines": b"\n".join(json.dumps(row).encode() for row in ROWS.tolist()),
    "application/x-npy": _npy(ROWS),
    "text/libsvm": b"\n".join(b" ".join(f"{i}:{v!r}".encode() for i, v in enumerate(row)) for row in ROWS.tolist()),
    "application/x-recordio-protobuf": recordio.encode_features(ROWS),
}


@pytest.mark.parametrize("content_type", BODIES)
@pytest.mark.parametrize("accept", ["application/json", "text/csv", "application/jsonlines", "application/x-npy"])
def test_every_content_type_and_accept_gives_booster_predictions(client, risk_dir, content_type, accept):
    response = post(client, BODIES[content_type], content_type, accept)
    assert response.status_code == 200, response.data
    assert response.content_type == accept
    booster = load_booster(risk_dir / "xgboost-model")
    rows = ROWS.astype(np.float32) if "npy" in content_type or "recordio" in content_type else ROWS
    expected = booster.inplace_predict(rows).astype(np.float64).tolist()
    if accept == "application/json":
        got = [p["score"] for p in response.get_json()["predictions"]]
    elif accept == "text/csv":
        got = [float(line) for line in response.data.decode().splitlines()]
    elif accept == "application/jsonlines":
        got = [json.loads(line)["score"] for line in response.data.decode().splitlines()]
    else:
        got = np.load(io.BytesIO(response.data)).astype(np.float64).tolist()
    assert got == expected


def test_custom_attributes_are_echoed_and_ask_for_contributions(client):
    attributes = "trace-id=abc123;contributions=true;top_k=2"
    response = post(client, ROW, accept="application/json", **{"X-Amzn-SageMaker-Custom-Attributes": attributes})
    assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == attributes
    (prediction,) = response.get_json()["predictions"]
    assert len(prediction["contributions"]) == 3 and "bias" in prediction["contributions"]
    assert set(prediction["contributions"]) - {"bias"} <= set(FEATURES)


BAD_REQUESTS = [
    # (description, content type, body, accept, status, message fragment)
    ("unsupported content type", "application/x-parquet", b"PAR1", None, 415, "not supported"),
    ("missing content type", "", ROW, None, 415, "Content-Type is required"),
    ("unsupported accept", "text/csv", ROW, "text/html", 406, "cannot be met"),
    ("label_size other than 1", "text/csv;label_size=0", ROW, None, 415, "label_size"),
    ("too few columns", "text/csv", b"1,2,3", None, 400, "expected 4 features per row, got 3"),
    ("too many columns", "text/csv", b"1,2,3,4,5", None, 400, "expected 4 features per row, got 5"),
    ("text in csv", "text/csv", b"1,2,abc,4", None, 400, "row 1, column 3 is not a number"),
    ("ragged csv", "text/csv", b"1,2,3,4\n1,2,3", None, 400, "row 2 has 3 columns"),
    ("broken json", "application/json", b'{"instances": [[1,2', None, 400, "not valid JSON"),
    ("json without instances", "application/json", b'{"rows": [[1,2,3,4]]}', None, 400, "instances"),
    ("unknown feature names", "application/json", b'{"instances": [{"age": 1}]}', None, 400, "missing features"),
    ("pickled npy", "application/x-npy", b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, "
                                        b"'shape': (1,), }" + b" " * 60 + b"\n\x80\x04N.", None, 400, "npy"),
    ("libsvm index past the model", "text/libsvm", b"1 0:1 9:2", None, 400, "feature index up to 9"),
    ("broken recordio", "application/x-recordio-protobuf", b"\x00\x01\x02\x03", None, 400, "RecordIO"),
    ("invalid utf-8", "text/csv", b"\xff\xfe", None, 400, "UTF-8"),
    ("bad top_k", "text/csv", ROW, None, 400, "top_k"),
    ("npy without rows", "application/x-npy", _npy(np.zeros((0, 4))), None, 400, "no instances"),
    ("recordio width declared wrong", "application/x-recordio-protobuf", None, None, 400, "declares 5 features"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_one_line_json_error(client, case):
    description, content_type, body, accept, status, fragment = case
    headers = {"X-Amzn-SageMaker-Custom-Attributes": "contributions=true;top_k=-1"} if "top_k" in description else {}
    if body is None:
        record = recordio.Record()
        tensor = record.features["values"].float32_tensor
        tensor.values.extend([1.0, 2.0, 3.0, 4.0])
        tensor.shape.extend([5])
        body = recordio.frame([record])
    response = post(client, body, content_type, accept, **headers)
    assert response.status_code == status
    assert response.content_type == "application/json"
    error = response.get_json()
    assert error["code"] == status and fragment in error["error"]
    assert b"\n" not in response.data and b"Traceback" not in response.data


def test_empty_body_is_204(client):
    assert post(client, b"").status_code == 204


def test_body_over_the_limit_is_413(risk_dir):
    from serve.loading import build_handler

    settings = Settings(model_dir=risk_dir, max_payload_bytes=1024)
    client = create_app(build_handler(settings), settings).test_client()
    response = post(client, b"1,2,3,4\n" * 200)
    assert response.status_code == 413 and "1024-byte limit" in response.get_json()["error"]


def test_415_and_406_are_decided_before_predicting(settings):
    calls = []

    class Counting(Handler):
        def predict_fn(self, data, model, request):
            calls.append(1)
            return np.zeros(1)

    handler = Counting(settings)
    handler.ready = True
    client = create_app(handler, settings).test_client()
    assert post(client, b"1", "text/csv", "text/html").status_code == 406
    assert post(client, b"1", "image/png").status_code == 415
    assert calls == []


MARK = "zq-mark-4242"  # planted in Content-Type and Accept: a 415 or 406 must never send it back
MARKED = [  # (Content-Type, Accept, status)
    (f"{MARK}/csv", None, 415), (f"text/{MARK}", None, 415), (f"image/png; {MARK}=1", None, 415),
    (f'image/png; x="{MARK}"', None, 415), (f"text/csv; charset={MARK}", None, 415),
    (f"text/csv; label_size={MARK}", None, 415), (f"text/libsvm; indexing={MARK}", None, 415),
    ("text/csv", f"{MARK}/html", 406), ("text/csv", f"text/{MARK}", 406), ("text/csv", f"text/html; x={MARK}", 406),
    ("text/csv", f"text/html; {MARK}=1, image/{MARK.upper()};q=0.5", 406),
]


@pytest.mark.parametrize("content_type, accept, status", MARKED)
def test_415_and_406_name_what_is_supported_and_echo_no_header_value(settings, content_type, accept, status):
    from serve.loading import build_handler

    handler = build_handler(settings)
    response = post(create_app(handler, settings).test_client(), b"1 0:1" if "libsvm" in content_type else ROW,
                    content_type, accept)
    assert response.status_code == status, response.data
    assert MARK.encode() not in response.data.lower(), response.data
    error = response.get_json()["error"]
    if status == 406:
        assert error.endswith("supported: " + ", ".join([handler.accept_default()] + [
            kind for kind in handler.encoders if kind != handler.accept_default()])), error
    elif "=" not in content_type or "image" in content_type:
        assert error.endswith("supported: " + ", ".join(handler.decoders)), error
    else:  # a parameter of a supported type: the message names the parameter
        assert content_type.split(";")[1].split("=")[0].strip() in error, error


def test_a_bug_is_a_500_with_a_request_id_and_no_traceback(settings, caplog):
    class Broken(Handler):
        def predict_fn(self, data, model, request):
            raise ZeroDivisionError("secret internals")

    handler = Broken(settings)
    handler.ready = True
    client = create_app(handler, settings).test_client()
    response = post(client, b"1,2", "text/csv")
    assert response.status_code == 500
    error = response.get_json()
    assert len(error["request_id"]) == 32 and "secret" not in response.data.decode()
    assert any(getattr(record, "request_id", None) == error["request_id"] for record in caplog.records)
    assert post(client, ROW).status_code == 500  # the app keeps serving


@pytest.mark.parametrize("method, path, status", [("GET", "/invocations", 405), ("GET", "/nope", 404),
                                                  ("POST", "/ping", 405)])
def test_routing_errors_are_json(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status and response.get_json()["code"] == status


@pytest.mark.parametrize("header, expected", [
    ("contributions=true;top_k=3", {"contributions": "true", "top_k": "3"}),
    ("outputs=embedding,metrics;start=2024-03-04T00:00", {"outputs": "embedding,metrics", "start": "2024-03-04T00:00"}),
    ("trace-id=1, Top_K = 2", {"trace-id": "1", "top_k": "2"}),
    ("c000b4f9-df62-4c85-a0bf-7c525f9104a4/trace-id", {}),
])
def test_custom_attributes_parsing(header, expected):
    from serve.pipeline import parse_attributes

    assert parse_attributes(header) == expected


@pytest.mark.parametrize("settings_kwargs, expected", [
    ({"workers": 3}, 3), ({"workers": 2, "multi_model": True}, 8),
    ({"handler": "pat", "family": PatSettings(max_batch_size=16)}, 16),
])
def test_execution_parameters_report_the_real_concurrency(settings_kwargs, expected):
    settings = Settings(**settings_kwargs)
    client = create_app(Handler(settings), settings).test_client()
    assert client.get("/execution-parameters").get_json()["MaxConcurrentTransforms"] == expected


def test_selectable_text_labels_and_contributions_in_every_output_type(risk_dir):
    from serve.loading import build_handler

    settings = Settings(model_dir=risk_dir, family=XGBoostSettings(inference_output=("predicted_label", "probability")))
    client = create_app(build_handler(settings), settings).test_client()
    for accept in ("application/x-recordio-protobuf", "text/csv", "application/json", "application/jsonlines"):
        response = post(client, ROW, accept=accept, **{"X-Amzn-SageMaker-Custom-Attributes": "contributions=true"})
        assert response.status_code == 200, (accept, response.data)
    assert post(client, ROW, accept="text/csv").data.split(b",")[0] in (b"low", b"high")


def test_internal_errors_log_no_exception_message(settings, caplog):
    class Leaky(Handler):
        def predict_fn(self, data, model, request):
            raise ValueError(f"could not convert {data.tolist()} for patient")

    handler = Leaky(settings)
    handler.ready = True
    post(create_app(handler, settings).test_client(), b"77.123,2", "text/csv")
    (record,) = [r for r in caplog.records if r.getMessage() == "internal error"]
    assert record.exception == "ValueError" and "predict_fn" in record.stack
    assert "77.123" not in str(vars(record))


def test_invocations_are_answered_without_flasks_request_context_and_other_routes_with_it(client, monkeypatch):
    """POST /invocations takes serve.app.ServeApp's direct path (Flask's routing and contexts were a fifth of a
    single-row request's time); its answers, errors and provenance headers are those of Flask's routes."""
    from flask import Flask

    contexts = []
    original = Flask.request_context
    monkeypatch.setattr(Flask, "request_context", lambda app, environ: contexts.append(environ["PATH_INFO"])
                        or original(app, environ))
    answer = post(client, ROW)
    refused = post(client, b"1,2", "text/plain")
    assert contexts == []
    assert answer.status_code == 200 and answer.headers["X-Model-Name"]
    assert refused.status_code == 415 and refused.get_json()["code"] == 415
    assert refused.headers["X-Model-Name"] == answer.headers["X-Model-Name"]
    assert client.get("/ping").status_code == 200 and client.get("/invocations").status_code == 405
    assert contexts == ["/ping", "/invocations"]
