"""The PAT handler behind SageMaker's hosting contract: the in-process app, then a real `serve` process
(SERVE_HANDLER=pat: one gunicorn worker, many threads, the dynamic batcher)."""

from __future__ import annotations

import io
import json
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from serve.app import create_app
from serve.loading import build_handler
from serve.pipeline import CUSTOM_ATTRIBUTES
from serve.server import MODEL_UNSERVABLE
from serve.settings import Settings
from serve.process import ServeProcess
from tests.pat_models import TASKS, FaultyPatHandler, at_once, build_artifact, cuda_error, forward, weeks
from tests.http.emf_spec import without_clock_figures

TOLERANCE = 1e-5
SECRET = 98765.4321


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("pat") / "model")


@pytest.fixture(scope="module")
def client(model_dir):
    settings = Settings(handler="pat", model_dir=model_dir, max_payload_bytes=6 * 1024 * 1024)
    handler = build_handler(settings)
    yield create_app(handler, settings).test_client()
    handler.close()


def json_body(activity, **extra) -> bytes:
    return json.dumps({"instances": [{"activity": row.tolist(), "id": f"w{i}"} for i, row in enumerate(activity)],
                       **extra}).encode()


def npy(rows) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows)
    return buffer.getvalue()


def assert_error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.data
    assert response.content_type == "application/json"
    body = response.get_json() if hasattr(response, "get_json") else response.json()
    assert body["code"] == status and fragment in body["error"]
    text = response.data if hasattr(response, "data") else response.content
    assert b"\n" not in text.strip() and b"98765" not in text


def test_ping(client):
    response = client.get("/ping")
    assert response.status_code == 200 and response.data == b""


def test_json_in_json_out_matches_the_in_process_forward_pass(client, model_dir):
    activity = weeks(2, seed=21)
    response = client.post("/invocations", data=json_body(activity), content_type="application/json")
    assert response.status_code == 200 and response.content_type == "application/json"
    predictions = response.get_json()["predictions"]
    expected = forward(model_dir, activity)
    np.testing.assert_allclose([p["embedding"] for p in predictions], expected["embedding"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose([[p["scores"][t] for t in TASKS] for p in predictions], expected["scores"], rtol=0,
                               atol=TOLERANCE)
    assert [p["id"] for p in predictions] == ["w0", "w1"]


def test_accept_npy_returns_embeddings(client, model_dir):
    activity = weeks(3, seed=22)
    response = client.post("/invocations", data=npy(activity), content_type="application/x-npy",
                           headers={"Accept": "application/x-npy"})
    assert response.status_code == 200 and response.content_type == "application/x-npy"
    embeddings = np.load(io.BytesIO(response.data))
    np.testing.assert_allclose(embeddings, forward(model_dir, activity)["embedding"], rtol=0, atol=TOLERANCE)


def test_custom_attributes_select_outputs_for_csv(client):
    activity = weeks(1, seed=23)
    body = ",".join(repr(v) for v in activity[0].tolist())
    response = client.post("/invocations", data=body, content_type="text/csv",
                           headers={CUSTOM_ATTRIBUTES: "outputs=embedding+metrics;start=2024-03-04T00:00"})
    assert response.status_code == 200
    assert response.headers[CUSTOM_ATTRIBUTES] == "outputs=embedding+metrics;start=2024-03-04T00:00"
    prediction = response.get_json()["predictions"][0]
    assert set(prediction) == {"embedding", "metrics", "missing_minutes", "precision"}
    assert prediction["metrics"]["sleep"]["sadeh"]["nights"][0]["date"] == "2024-03-03"


def test_media_types_outside_the_handler_are_415_and_406(client):
    body = json_body(weeks(1))
    assert_error(client.post("/invocations", data=body, content_type="text/libsvm"), 415, "not supported")
    assert_error(client.post("/invocations", data=body, content_type="application/json",
                             headers={"Accept": "text/csv"}), 406, "cannot be met")


@pytest.mark.parametrize("body, content_type, fragment", [
    (json.dumps({"instances": [[SECRET] * 10079]}), "application/json", "10079 minutes"),
    (json.dumps({"instances": [[-SECRET] * 10080]}), "application/json", "must not be negative"),
    ("[" + str(SECRET), "application/json", "not valid JSON"),
    (",".join([str(SECRET)] * 10079 + ["nan"]), "text/csv", "NaN or infinity"),
    (npy(np.full((10080,), SECRET)), "application/x-npy", "must be 2-D"),
    (json.dumps({"instances": [[SECRET] * 1000], "outputs": ["metrics"]}), "application/json", "at least 24 h"),
])
def test_bad_input_is_a_one_line_400_that_does_not_echo_values(client, body, content_type, fragment):
    assert_error(client.post("/invocations", data=body, content_type=content_type), 400, fragment)


def test_an_empty_body_is_204_and_an_oversized_one_413(client):
    assert client.post("/invocations", data=b"", content_type="application/json").status_code == 204
    big = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"
    assert_error(client.post("/invocations", data=big, content_type="application/json"), 413, "limit")


# --- device faults, injected on the CPU (tests.pat_models.FaultyRunner) -------------------------------------------


@contextmanager
def faulty_app(model_dir):
    settings = Settings(handler="pat", model_dir=model_dir, max_payload_bytes=6 * 1024 * 1024)
    handler = FaultyPatHandler(settings)
    handler.load(model_dir)
    try:
        yield create_app(handler, settings).test_client(), handler.model.runner
    finally:
        handler.close()


def test_out_of_memory_even_one_week_at_a_time_is_a_507_and_the_worker_keeps_serving(model_dir):
    secret = weeks(2, seed=40)
    secret[:, 7] = SECRET
    with faulty_app(model_dir) as (client, runner):
        runner.fault = lambda rows: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")
        assert_error(client.post("/invocations", data=json_body(secret), content_type="application/json"), 507,
                     "did not fit")
        assert client.get("/ping").status_code == 200
        runner.fault = lambda rows: None
        ok = client.post("/invocations", data=json_body(weeks(1)), content_type="application/json")
        assert ok.status_code == 200, ok.data
        assert client.get("/ping").status_code == 200


def test_an_unusable_device_is_a_503_and_turns_ping_to_503(model_dir):
    with faulty_app(model_dir) as (client, runner):
        assert client.get("/ping").status_code == 200
        runner.fault = lambda rows: cuda_error(700, "an illegal memory access was encountered")
        assert_error(client.post("/invocations", data=json_body(weeks(1)), content_type="application/json"), 503,
                     "CUDA error 700")
        assert client.get("/ping").status_code == 503
        runner.fault = lambda rows: None
        assert_error(client.post("/invocations", data=json_body(weeks(1)), content_type="application/json"), 503,
                     "cannot serve again")
        assert client.get("/ping").status_code == 503


# --- a real serve process ------------------------------------------------------------------------------------------


@contextmanager
def serving(env: dict[str, str], log: Path):
    """A PAT serve process, ready; stopped afterwards, also when it never became ready.

    Readiness is retried while /ping times out: gunicorn's socket accepts before the worker has loaded torch."""
    process = ServeProcess({"SERVE_HANDLER": "pat", **env}, log, deadline_s=120)
    try:
        for _ in range(60):
            try:
                process.wait_ready()
                break
            except requests.Timeout:
                continue
        else:
            raise TimeoutError("the PAT server did not become ready")
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    env = {"SM_MODEL_DIR": str(model_dir), "SERVE_DEVICE": "auto", "SERVE_MAX_BATCH_SIZE": "16",
           "SERVE_BATCH_WAIT_MS": "20"}
    with serving(env, tmp_path_factory.mktemp("serve") / "serve.log") as process:
        yield process


def test_serve_process_matches_the_in_process_forward_pass(server, model_dir):
    activity = weeks(2, seed=24)
    response = requests.post(server.url + "/invocations", data=json_body(activity, outputs=["embedding", "saliency"]),
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = forward(model_dir, activity)
    np.testing.assert_allclose([p["embedding"] for p in predictions], expected["embedding"], rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose([p["saliency"] for p in predictions], expected["saliency"], rtol=0, atol=TOLERANCE)


def test_sixteen_concurrent_clients_with_a_bad_one_among_them(server, model_dir):
    activity = weeks(15, seed=25)
    expected = forward(model_dir, activity)["embedding"]

    def call(i):
        rows = activity[i:i + 1] if i < 15 else np.full((1, 10079), SECRET)
        return requests.post(server.url + "/invocations", data=json_body(rows),
                             headers={"Content-Type": "application/json"}, timeout=120)

    responses = at_once(call, 16)
    for i, response in enumerate(responses[:15]):
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"][0]["embedding"], expected[i], rtol=0,
                                   atol=TOLERANCE)
    assert responses[15].status_code == 400 and "98765" not in responses[15].text


def test_serve_logs_the_model_and_never_a_body(server):
    requests.post(server.url + "/invocations", data=json.dumps({"instances": [[-SECRET] * 10080]}),
                  headers={"Content-Type": "application/json"}, timeout=60)
    logs = server.logs()
    assert "98765" not in without_clock_figures(logs)
    loaded = [json.loads(line) for line in logs.splitlines() if '"model loaded"' in line]
    assert len(loaded) == 1  # one worker process owns the model (and the GPU)
    assert loaded[0]["variant"] == "PAT-S" and loaded[0]["max_batch_size"] == 16
    assert loaded[0]["device"] in ("cpu", "cuda")


def test_sigterm_stops_the_pat_server_cleanly(model_dir, tmp_path):
    with serving({"SM_MODEL_DIR": str(model_dir)}, tmp_path / "serve.log") as process:
        ok = requests.post(process.url + "/invocations", data=json_body(weeks(1)),
                           headers={"Content-Type": "application/json"}, timeout=60)
        assert ok.status_code == 200
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(60) == 0
    assert process.stop() == 0


def test_a_model_that_fails_its_warm_up_stops_start_up_with_exit_code_3(tmp_path):
    model_dir = build_artifact(tmp_path / "model")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(
        "from pathlib import Path\n"
        "from models.pat.artifact import load_artifact\n\n"
        "def model_fn(model_dir):\n"
        "    artifact = load_artifact(Path(model_dir))\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('weights do not fit this network')\n"
        "    artifact.encoder.encode = broken\n"
        "    return artifact\n")
    process = ServeProcess({"SERVE_HANDLER": "pat", "SM_MODEL_DIR": str(model_dir)}, tmp_path / "serve.log")
    try:
        assert process.process.wait(120) == MODEL_UNSERVABLE
    finally:
        process.stop()
    failures = [json.loads(line) for line in process.logs().splitlines() if '"cannot serve the model"' in line]
    assert len(failures) == 1
    assert failures[0]["reason"] == ("the model failed its warm-up prediction: RuntimeError: weights do not fit this "
                                     "network")
