"""The contract on a real `serve` process: gunicorn workers, start-up failures, shutdown, logs."""

import json
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import requests

from serve.process import SERVE, ServeProcess
from tests.conftest import load_booster, shared_fixture
from tests.http.emf_spec import without_clock_figures

SECRET_ROW = "77.123,31.4159,142.857,9.87654"


@pytest.fixture
def server(risk_dir, tmp_path):
    process = ServeProcess({"SM_MODEL_DIR": str(risk_dir)}, tmp_path / "serve.log").wait_ready()
    yield process
    process.stop()


def test_serves_booster_predictions_over_http(server, risk_dir):
    rows = np.random.default_rng(9).normal(size=(100, 4)).round(6)
    body = "\n".join(",".join(repr(v) for v in row) for row in rows.tolist())
    response = requests.post(server.url + "/invocations", data=body,
                             headers={"Content-Type": "text/csv", "Accept": "application/json"})
    assert response.status_code == 200
    expected = load_booster(risk_dir / "xgboost-model").inplace_predict(rows)
    assert [p["score"] for p in response.json()["predictions"]] == expected.astype(np.float64).tolist()
    assert requests.get(server.url + "/execution-parameters").json()["MaxConcurrentTransforms"] == 2


def test_sagemaker_builtin_model_over_http(tmp_path):
    folder = shared_fixture("sagemaker-builtin-xgboost-abalone")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(folder / "xgboost-model", model_dir)  # as SageMaker extracts model.tar.gz
    process = ServeProcess({"SM_MODEL_DIR": str(model_dir)}, tmp_path / "serve.log").wait_ready()
    try:
        response = requests.post(process.url + "/invocations", data=(folder / "abalone.validation.head20.libsvm").read_bytes(),
                                 headers={"Content-Type": "text/libsvm; indexing=1"})
        expected = json.loads((folder / "expected_predictions.json").read_text())["predictions"]
        assert [float(line) for line in response.text.splitlines()] == expected
    finally:
        process.stop()


def test_bad_requests_never_kill_a_worker_and_bodies_never_reach_the_logs(server):
    for body, content_type in [(SECRET_ROW + ",1", "text/csv"), ("{" + SECRET_ROW, "application/json"),
                               (SECRET_ROW, "image/png"), (SECRET_ROW.replace(",", ",x"), "text/csv")]:
        response = requests.post(server.url + "/invocations", data=body, headers={"Content-Type": content_type})
        assert 400 <= response.status_code < 500
        assert "77.123" not in response.text
    ok = requests.post(server.url + "/invocations", data=SECRET_ROW, headers={"Content-Type": "text/csv"})
    assert ok.status_code == 200
    logs = server.logs()
    assert "77.123" not in without_clock_figures(logs) and "Booting worker" in logs
    for line in logs.splitlines():
        json.loads(line)  # structured: one JSON object per line


def test_sigterm_drains_in_flight_requests(tmp_path, outcome_dir):
    model_dir = tmp_path / "model"
    shutil.copytree(outcome_dir, model_dir)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(
        "import time\n\ndef output_fn(prediction, accept):\n    time.sleep(2)\n    return b'done'\n")
    process = ServeProcess({"SM_MODEL_DIR": str(model_dir)}, tmp_path / "serve.log").wait_ready()
    results = []
    thread = threading.Thread(target=lambda: results.append(requests.post(
        process.url + "/invocations", data="1,2,3,4", headers={"Content-Type": "text/csv"}, timeout=30)))
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    process.process.wait(30)
    thread.join(30)
    assert time.monotonic() - started < 30
    assert results and results[0].status_code == 200 and results[0].content == b"done"
    assert process.stop() == 0


def test_a_model_that_cannot_be_served_stops_start_up_with_a_clear_message(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "xgboost-model").write_bytes(b"not a model")
    process = ServeProcess({"SM_MODEL_DIR": str(tmp_path / "model")}, tmp_path / "serve.log", deadline_s=30)
    assert process.process.wait(30) != 0
    process.stop()
    assert "is not a booster XGBoost" in process.logs()


def test_a_bad_setting_fails_before_start(tmp_path):
    result = subprocess.run([str(SERVE)], env={"PATH": "/usr/bin:/bin", "SAGEMAKER_BIND_TO_PORT": "eighty"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "SAGEMAKER_BIND_TO_PORT must be an integer" in result.stderr
