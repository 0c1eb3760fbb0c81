"""The xgboost image as SageMaker runs it: contract, exact predictions, hardening, shutdown, and the build itself."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading
import time
import tomllib
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import xgboost as xgb

from models.xgboost.examples import synthetic_patients
from serve import recordio
from tests.conftest import load_booster

from .conftest import ROOT, Container, build_sh, docker, running

pytestmark = pytest.mark.docker

ROWS = synthetic_patients(40, seed=123)  # 40 features, about 3% missing


def expected_scores(model_dir: Path, rows: np.ndarray) -> np.ndarray:
    """In-process predictions: a plain xgboost Booster on the same model file."""
    booster = load_booster(model_dir / "xgboost-model")
    return booster.predict(xgb.DMatrix(rows, missing=np.nan, feature_names=booster.feature_names))


def assert_bit_equal(got, expected: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float64).astype(np.float32).reshape(expected.shape)
    np.testing.assert_array_equal(got.view(np.uint32), expected.astype(np.float32).view(np.uint32))


# --- request and response bodies --------------------------------------------------------------------------------


def _number(value: float) -> str:
    return "" if np.isnan(value) else repr(float(value))


def as_csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(map(_number, row)) for row in rows).encode()


def as_json_rows(rows: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in rows]


def as_npy(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    return buffer.getvalue()


def pickled_npy() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([987654321], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def as_libsvm(rows: np.ndarray) -> bytes:
    return "\n".join(" ".join(f"{j}:{v!r}" for j, v in enumerate(row.tolist()) if not np.isnan(v))
                     for row in rows).encode()


REQUESTS = {
    "text/csv": as_csv,
    "application/json": lambda rows: json.dumps({"instances": as_json_rows(rows)}).encode(),
    "application/jsonlines": lambda rows: "\n".join(map(json.dumps, as_json_rows(rows))).encode(),
    "application/x-npy": as_npy,
    "text/libsvm": as_libsvm,
    "application/x-recordio-protobuf": recordio.encode_features,
}


def _recordio_scores(body: bytes) -> list:
    scores = []
    for payload in recordio.split_records(body):
        record = recordio.Record()
        record.ParseFromString(payload)
        scores.append(list(record.label["score"].float32_tensor.values))
    return scores


RESPONSES = {
    "text/csv": lambda body: [[float(v) for v in line.split(",")] for line in body.decode().splitlines()],
    "application/json": lambda body: [p["score"] for p in json.loads(body)["predictions"]],
    "application/jsonlines": lambda body: [json.loads(line)["score"] for line in body.decode().splitlines()],
    "application/x-npy": lambda body: np.load(io.BytesIO(body), allow_pickle=False),
    "application/x-recordio-protobuf": _recordio_scores,
}


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def risk(xgboost_image, xgboost_models):
    with running(xgboost_image, xgboost_models / "risk", label="risk model") as container:
        yield container


# --- the image --------------------------------------------------------------------------------------------------


def test_image_follows_sagemaker_conventions(xgboost_image):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", xgboost_image).stdout)
    labels = config["Labels"]
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"].removesuffix("-dirty") == (head or "nogit")
    assert config["Entrypoint"] == ["/opt/app/bin/serve"]  # exec form: no /bin/sh -c in between
    assert config.get("User", "") in ("", "root", "0")  # root by default, as SageMaker expects
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PYTHONUNBUFFERED"] == "1" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["SERVE_HANDLER"] == "xgboost"
    size_mb = int(docker("image", "inspect", "--format", "{{.Size}}", xgboost_image).stdout) / 1e6
    print(f"{xgboost_image}: {size_mb:.0f} MB")


def test_image_has_no_compilers_pip_caches_or_test_suites(xgboost_image):
    script = (
        "for tool in gcc cc c++ g++ make; do command -v $tool && echo FOUND $tool; done;"
        "python -m pip --version 2>/dev/null && echo FOUND pip in the runtime venv;"
        "find /opt /root /tmp \\( -name '*.whl' -o -name tests -o -name .cache \\) -print | sed 's/^/FOUND /';"
        "find / -xdev -name '*.deb' | sed 's/^/FOUND /';"
        "ls /var/lib/apt/lists | grep -v -x -e lock -e partial -e auxfiles | sed 's/^/FOUND apt list /'"
    )
    result = docker("run", "--rm", "--entrypoint", "sh", xgboost_image, "-c", script)
    assert "FOUND" not in result.stdout, result.stdout


# --- the hosting contract ---------------------------------------------------------------------------------------


def test_ping_and_execution_parameters(risk: Container):
    assert requests.get(f"{risk.url}/ping", timeout=5).status_code == 200
    parameters = requests.get(f"{risk.url}/execution-parameters", timeout=5).json()
    assert parameters["BatchStrategy"] == "MULTI_RECORD" and parameters["MaxPayloadInMB"] == 6


@pytest.mark.parametrize("content_type", sorted(REQUESTS))
def test_every_request_type_predicts_exactly_as_in_process(risk: Container, xgboost_models, content_type):
    response = risk.post(REQUESTS[content_type](ROWS), content_type, accept="application/json")
    assert response.status_code == 200, response.text
    assert_bit_equal(RESPONSES["application/json"](response.content), expected_scores(xgboost_models / "risk", ROWS))


@pytest.mark.parametrize("accept", sorted(RESPONSES))
def test_every_response_type_carries_the_exact_scores(risk: Container, xgboost_models, accept):
    response = risk.post(as_csv(ROWS), "text/csv", accept=accept)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith(accept)
    assert_bit_equal(RESPONSES[accept](response.content), expected_scores(xgboost_models / "risk", ROWS))


@pytest.mark.parametrize("model", ["treatment", "outcome"])
def test_multiclass_and_regression_models(xgboost_image, xgboost_models, model):
    with running(xgboost_image, xgboost_models / model, label=f"{model} model") as container:
        for accept in ("text/csv", "application/json"):
            response = container.post(as_csv(ROWS), "text/csv", accept=accept)
            assert response.status_code == 200, response.text
            assert_bit_equal(RESPONSES[accept](response.content), expected_scores(xgboost_models / model, ROWS))


def test_multi_model_endpoint(xgboost_image, xgboost_models):
    """The multi-models label is backed by SageMaker's model-management API on the same image: three models."""
    models = ("risk", "treatment", "outcome")
    with running(xgboost_image, xgboost_models, env={"SAGEMAKER_MULTI_MODEL": "true"}, mount="/opt/ml/models",
                 label="SAGEMAKER_MULTI_MODEL=true") as container:
        for model in models:
            load = requests.post(f"{container.url}/models", timeout=60,
                                 json={"model_name": model, "url": f"/opt/ml/models/{model}"})
            assert load.status_code == 200, load.text
        again = requests.post(f"{container.url}/models", json={"model_name": "risk", "url": "/opt/ml/models/risk"})
        assert again.status_code == 409
        missing = requests.post(f"{container.url}/models", json={"model_name": "x", "url": "/opt/ml/models/absent"})
        assert missing.status_code == 404
        for model in models:
            expected = expected_scores(xgboost_models / model, ROWS)
            by_header = requests.post(f"{container.url}/invocations", data=as_csv(ROWS), timeout=60, headers={
                "Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": model})
            by_route = requests.post(f"{container.url}/models/{model}/invoke", data=as_csv(ROWS), timeout=60,
                                     headers={"Content-Type": "text/csv"})
            for response in (by_header, by_route):
                assert response.status_code == 200, response.text
                assert_bit_equal(RESPONSES["text/csv"](response.content), expected)
            assert requests.get(f"{container.url}/models/{model}", timeout=5).status_code == 200
        listed = requests.get(f"{container.url}/models", timeout=5).json()["models"]
        assert sorted(entry["modelName"] for entry in listed) == sorted(models)
        assert requests.delete(f"{container.url}/models/outcome", timeout=5).status_code == 200
        gone = requests.post(f"{container.url}/models/outcome/invoke", data=as_csv(ROWS),
                             headers={"Content-Type": "text/csv"}, timeout=30)
        assert gone.status_code == 404 and "Model not found" in gone.json()["error"]


BAD_REQUESTS = [
    ("unsupported content type", {"Content-Type": "image/png"}, b"\x89PNG", 415),
    ("unsupported accept", {"Content-Type": "text/csv", "Accept": "text/html"}, as_csv(ROWS[:1]), 406),
    ("text in CSV", {"Content-Type": "text/csv"}, b"987654321,abc" + b",1" * 38, 400),
    ("wrong feature count", {"Content-Type": "text/csv"}, b"987654321,2,3", 400),
    ("invalid JSON", {"Content-Type": "application/json"}, b'{"instances": [987654321', 400),
    ("JSON without instances", {"Content-Type": "application/json"}, b'{"rows": [[987654321]]}', 400),
    ("pickled NPY", {"Content-Type": "application/x-npy"}, pickled_npy(), 400),
    ("broken RecordIO", {"Content-Type": "application/x-recordio-protobuf"}, b"\x0a\x23\xd7\xce987654321", 400),
    ("body over 6 MB", {"Content-Type": "text/csv"}, b"987654321," * 700_000, 413),
]


@pytest.mark.parametrize("case, headers, body, status", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_json_error_without_the_data(risk: Container, case, headers, body, status):
    response = requests.post(f"{risk.url}/invocations", data=body, headers=headers, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["code"] == status and error["error"]
    assert "987654321" not in response.text
    assert requests.get(f"{risk.url}/ping", timeout=5).status_code == 200  # the worker survived


def test_writes_nothing_outside_tmp(risk: Container):
    assert risk.post(as_csv(ROWS), "text/csv").status_code == 200
    changed = [line.split(" ", 1)[1] for line in docker("diff", risk.name).stdout.splitlines()]
    mount_point = ["/opt", "/opt/ml", "/opt/ml/model"]  # made by Docker for the model volume
    outside_tmp = [path for path in changed if path != "/tmp" and not path.startswith("/tmp/")]
    assert [path for path in outside_tmp if path not in mount_point] == []


# --- how it runs ------------------------------------------------------------------------------------------------


def test_sagemaker_bind_to_port(xgboost_image, xgboost_models):
    with running(xgboost_image, xgboost_models / "risk", env={"SAGEMAKER_BIND_TO_PORT": "9123"}, port=9123,
                 label="SAGEMAKER_BIND_TO_PORT=9123") as container:
        assert container.post(as_csv(ROWS), "text/csv").status_code == 200
        refused = container.exec_python("import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping')")
        assert refused.returncode != 0 and "Connection refused" in refused.stderr


def test_unprivileged_user_and_read_only_root(xgboost_image, xgboost_models):
    with running(xgboost_image, xgboost_models / "risk", "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp",
                 label="--user 1000:1000 --read-only") as container:
        response = container.post(as_csv(ROWS), "text/csv")
        assert response.status_code == 200
        assert_bit_equal(RESPONSES["text/csv"](response.content), expected_scores(xgboost_models / "risk", ROWS))
        assert container.exec_python("import os; assert os.getuid() == 1000").returncode == 0


def test_starts_without_network(xgboost_image, xgboost_models):
    with running(xgboost_image, xgboost_models / "risk", "--network", "none", publish=False,
                 label="--network none") as container:
        predict = ("import urllib.request as u; r = u.urlopen(u.Request('http://127.0.0.1:8080/invocations', "
                   f"data={as_csv(ROWS[:2])!r}, headers={{'Content-Type': 'text/csv'}})); print(r.status)")
        result = container.exec_python(predict)
        assert result.stdout.strip() == "200", result.stderr


def test_docker_stop_drains_in_flight_requests(xgboost_image, xgboost_models):
    """SageMaker stops a container with SIGTERM and kills it 30 s later: requests already sent must complete."""
    heavy = as_csv(np.vstack([ROWS] * 25))  # 1,000 rows with TreeSHAP contributions: a few hundred ms of work
    headers = {"Content-Type": "text/csv", "X-Amzn-SageMaker-Custom-Attributes": "contributions=true"}
    with running(xgboost_image, xgboost_models / "risk", label="risk model (stop test)") as container:
        results: list[tuple[int, float]] = []

        def call() -> None:
            response = requests.post(f"{container.url}/invocations", data=heavy, headers=headers, timeout=60)
            results.append((response.status_code, time.monotonic()))

        callers = [threading.Thread(target=call) for _ in range(6)]
        for caller in callers:
            caller.start()
        while not results:  # the server is busy with all of them once the first answer is back
            assert any(caller.is_alive() for caller in callers)
            time.sleep(0.01)
        stop_sent = time.monotonic()
        docker("stop", "--time", "30", container.name, timeout=60)
        stop_seconds = time.monotonic() - stop_sent
        for caller in callers:
            caller.join(timeout=60)
        exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", container.name).stdout.strip()
    print(f"docker stop took {stop_seconds:.2f} s with {sum(t > stop_sent for _, t in results)} requests in flight")
    assert [status for status, _ in results] == [200] * len(callers)
    assert any(finished > stop_sent for _, finished in results), "no request was still in flight at the stop"
    assert stop_seconds < 15 and exit_code == "0"


# --- the build --------------------------------------------------------------------------------------------------


def test_code_change_rebuilds_only_the_code_layer(xgboost_image, tmp_path):
    """A change under serve/ must reuse the dependency layer (no reinstall) and change only the small code layer."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", ".dockerignore"):
        shutil.copy2(ROOT / name, context / name)
    for name in ("serve", "models", "containers"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "build" / "wheelhouse" / "xgboost", context / "build" / "wheelhouse" / "xgboost",
                    copy_function=_link_or_copy)
    with (context / "serve" / "__init__.py").open("a") as module:
        module.write(f"# changed {uuid.uuid4().hex}\n")
    inspect = json.loads(docker("image", "inspect", xgboost_image).stdout)[0]
    tag = f"xgboost-inference-layer-test:{uuid.uuid4().hex[:8]}"
    base = inspect["Config"]["Labels"]["org.opencontainers.image.base.name"]
    try:
        started = time.monotonic()
        build = docker("build", "--file", str(context / "containers/xgboost/Dockerfile"), "--tag", tag,
                       "--build-arg", f"BASE_IMAGE={base}", str(context), timeout=600, check=False)
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
        print(f"rebuild after a code change: {time.monotonic() - started:.1f} s")
        changed = json.loads(docker("image", "inspect", tag).stdout)[0]
    finally:
        docker("rmi", "--force", tag, check=False)
    before, after = inspect["RootFS"]["Layers"], changed["RootFS"]["Layers"]
    assert len(before) == len(after)
    assert before[:-1] == after[:-1]  # base and dependency layers reused
    assert before[-1] != after[-1]  # the code layer has the change


def _link_or_copy(source: str, target: str) -> None:
    try:
        Path(target).hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)
