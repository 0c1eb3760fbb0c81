"""The multi-model API over HTTP (Flask's test client): every route and status code, on the one request pipeline.

The helpers here (models whose predictions differ, and what each must answer) serve the other test_multimodel_*
modules of this folder as well.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from serve import model_api
from serve.app import create_app
from serve.multimodel import ModelRegistry
from serve.settings import MIB, Settings
from tests.conftest import FEATURES, load_booster, train_model

ROWS = np.random.default_rng(11).normal(size=(3, len(FEATURES)))
BODY = "\n".join(",".join(f"{value:.6f}" for value in row) for row in ROWS).encode()
TARGET = "X-Amzn-SageMaker-Target-Model"
MODEL_FN = """
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

def model_fn(model_dir):
    deadline = time.monotonic() + 30
    while {gated} and not (Path(model_dir) / "open").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    booster = xgb.Booster()
    booster.load_model(bytearray((Path(model_dir) / "xgboost-model").read_bytes()))
    booster.ballast = np.ones({mib} * 1024 * 1024 // 8)  # memory the model keeps beside its trees
    return booster
"""


def model_script(mib: int = 0, gated: bool = False) -> str:
    """An inference.py whose model keeps `mib` MiB more, and (gated) whose load waits for a file named "open"."""
    return MODEL_FN.format(mib=mib, gated=gated)


def make_model(root: Path, name: str, seed: int, rounds: int = 20, script: str | None = None) -> Path:
    """<root>/<name>/model/ (SageMaker's layout) holding a regression model of its own, and optionally a script."""
    model_dir = train_model(root / name / "model", "reg:squarederror", seed=seed, rounds=rounds)
    if script:
        (model_dir / "code").mkdir()
        (model_dir / "code" / "inference.py").write_text(script)
    return model_dir


def expected(model_dir: Path) -> list[float]:
    """What the model must answer for BODY: XGBoost's own prediction, as the CSV encoder writes it."""
    rows = np.loadtxt(BODY.decode().splitlines(), delimiter=",", ndmin=2)
    return load_booster(model_dir / "xgboost-model").inplace_predict(rows).tolist()


def answer(body: bytes) -> list[float]:
    return [float(line) for line in body.decode().split()]


def distinct_models(root: Path, count: int, prefix: str = "m") -> dict[str, list[float]]:
    """`count` models, named prefix0..; each one's expected answer, all of them different."""
    answers = {f"{prefix}{seed}": expected(make_model(root, f"{prefix}{seed}", seed)) for seed in range(count)}
    assert len({tuple(values) for values in answers.values()}) == count
    return answers


class Tally:
    """Invocations from many threads: how many each model served, and what went wrong (nothing, if all is well)."""

    def __init__(self, answers: dict[str, list[float]], loaded=()):
        self.answers = answers
        self.loaded = {name: threading.Event() for name in answers}
        for name in loaded:
            self.loaded[name].set()
        self.served: Counter = Counter()
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def invoke(self, post, name: str) -> None:
        """post(name) -> (status, body). A 404 is right only for a model not (or not yet) known to be loaded."""
        was_loaded = self.loaded[name].is_set()
        status, body = post(name)
        with self._lock:
            if status == 200:
                self.served[name] += 1
                if answer(body) != self.answers[name]:
                    self.problems.append(f"{name} answered with another model's predictions")
            elif status != 404 or was_loaded:
                self.problems.append(f"{name}: {status} {body[:80]!r}")

    def check(self, describe, names) -> None:
        """No problem, and each model counted exactly the invocations it served, none left in flight."""
        assert self.problems == []
        for name in names:
            description = describe(name)
            assert (description["invocations"], description["inFlight"]) == (self.served[name], 0), name


# --- fixtures ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_model(root, "broken", 0).joinpath("xgboost-model").write_bytes(b"\x00not a model")
    make_model(root, "scripted", 1, script="import orjson\n"
                                           "def output_fn(prediction, accept):\n"
                                           "    return orjson.dumps({'scripted': len(prediction)}), 'application/json'\n")
    make_model(root, "heavy", 2, script=model_script(mib=12))
    return root


@pytest.fixture(scope="module")
def answers(root) -> dict[str, list[float]]:
    return distinct_models(root, 3)


def client_for(root: Path, budget_bytes: int = 0):
    settings = Settings(multi_model=True, multi_model_dir=root, model_memory_budget_bytes=budget_bytes)
    registry = ModelRegistry(settings)
    app = create_app(None, settings, registry=registry, routes=model_api.routes(registry, settings))
    return app.test_client(), registry


@pytest.fixture
def client(root, answers):
    client, _ = client_for(root)
    return client


def load(client, root: Path, name: str, directory: str | None = None):
    return client.post("/models", json={"model_name": name, "url": str(root / (directory or name) / "model")})


def invoke(client, name: str, body: bytes = BODY, **headers):
    return client.post(f"/models/{name}/invoke", data=body, headers={"Content-Type": "text/csv", **headers})


# --- load ----------------------------------------------------------------------------------------------------------


def test_ping_is_ready_before_any_model_is_loaded(client):
    assert client.get("/ping").status_code == 200
    assert client.get("/models").get_json() == {"models": []}


def test_load_then_invoke_each_model(client, root, answers):
    for name in answers:
        response = load(client, root, name)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == f'Model "{name}" loaded'
        assert body["modelName"] == name and body["modelUrl"] == str(root / name / "model")
        assert body["memoryBytes"] > 0 and body["loadSeconds"] > 0
    for name, values in answers.items():
        response = invoke(client, name)
        assert response.status_code == 200 and response.content_type == "text/csv"
        assert answer(response.data) == values


def test_loading_a_loaded_name_is_409(client, root):
    assert load(client, root, "m0").status_code == 200
    response = load(client, root, "m0", "m1")
    assert response.status_code == 409
    assert response.get_json() == {"error": "Model m0 is already loaded", "code": 409}


def test_loading_a_missing_directory_is_404(client, root):
    response = load(client, root, "gone")
    assert response.status_code == 404 and "no model directory" in response.get_json()["error"]


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"url": "/opt/ml/models/a/model"}',
                                  b'{"model_name": "a/b", "url": "/opt/ml/models/a/model"}',
                                  b'{"model_name": "a", "url": 7}', b'{"model_name": "a", "url": "/etc"}'])
def test_bad_load_requests_are_400(client, body):
    response = client.post("/models", data=body, content_type="application/json")
    assert response.status_code == 400
    assert set(response.get_json()) == {"error", "code"}


def test_a_broken_artifact_is_422_and_names_the_cause(client, root, answers):
    assert load(client, root, "m0").status_code == 200
    response = load(client, root, "broken")
    assert response.status_code == 422
    assert response.get_json()["error"].startswith("Model broken cannot be served: xgboost-model is not a booster")
    assert [model["modelName"] for model in client.get("/models").get_json()["models"]] == ["m0"]
    assert answer(invoke(client, "m0").data) == answers["m0"]


def test_a_model_over_the_memory_budget_is_507(root, answers):
    client, registry = client_for(root, 8 * MIB)
    response = load(client, root, "heavy")
    assert response.status_code == 507
    assert "budget" in response.get_json()["error"] and "request_id" in response.get_json()
    assert registry.memory_in_use == 0 and client.get("/models").get_json() == {"models": []}


def test_an_evicted_model_is_reloaded_by_its_next_invocation(root, answers):
    client, registry = client_for(root, 20 * MIB)
    assert load(client, root, "heavy").status_code == 200
    assert load(client, root, "heavy-too", "heavy").status_code == 200  # 12 + 12 MiB > 20: evicts "heavy"
    assert client.get("/models/heavy").get_json()["status"] == "evicted"
    assert len(client.get("/models").get_json()["models"]) == 2  # still registered, as SageMaker believes
    assert invoke(client, "heavy").status_code == 200
    assert client.get("/models/heavy").get_json()["status"] == "loaded"
    assert client.get("/models/heavy-too").get_json()["status"] == "evicted"
    assert registry.memory_in_use <= 20 * MIB


# --- list, describe, unload ----------------------------------------------------------------------------------------


def test_list_pages_with_next_page_token(client, root):
    names = [f"cohort-{index}" for index in range(5)]
    for name in names:
        assert load(client, root, name, "m0").status_code == 200
    first = client.get("/models?max_results=2").get_json()
    assert first["models"] == [{"modelName": name, "modelUrl": str(root / "m0" / "model")} for name in names[:2]]
    second = client.get("/models", query_string={"max_results": 2, "next_page_token": first["nextPageToken"]})
    third = client.get("/models", query_string={"limit": 2, "next_page_token": second.get_json()["nextPageToken"]})
    assert [model["modelName"] for model in third.get_json()["models"]] == names[4:]
    assert "nextPageToken" not in third.get_json()


@pytest.mark.parametrize("query", ["max_results=0", "max_results=many", "limit=5000", "next_page_token=!!"])
def test_bad_list_queries_are_400(client, query):
    assert client.get(f"/models?{query}").status_code == 400


def test_describe_a_model(client, root):
    load(client, root, "m1")
    invoke(client, "m1")
    description = client.get("/models/m1").get_json()
    assert description["modelName"] == "m1" and description["modelUrl"] == str(root / "m1" / "model")
    assert description["status"] == "loaded" and description["invocations"] == 1 and description["inFlight"] == 0
    assert description["model"]["objective"] == "reg:squarederror"
    assert client.get("/models/nope").status_code == 404


def test_unload_a_model(client, root):
    load(client, root, "m2")
    response = client.delete("/models/m2")
    assert response.status_code == 200 and response.get_json() == {"status": 'Model "m2" unregistered'}
    assert client.delete("/models/m2").status_code == 404
    assert invoke(client, "m2").status_code == 404
    assert load(client, root, "m2").status_code == 200  # and it can come back


# --- invoke --------------------------------------------------------------------------------------------------------


def test_invoking_an_unknown_model_is_404_model_not_found(client):
    response = invoke(client, "nope")
    assert response.status_code == 404
    assert response.get_json() == {"error": "Model not found: the target model is not loaded", "code": 404}


def test_invocations_picks_the_model_from_the_target_model_header(client, root, answers):
    for name in answers:
        load(client, root, name)
    for name, values in answers.items():
        response = client.post("/invocations", data=BODY, content_type="text/csv", headers={TARGET: name})
        assert response.status_code == 200 and answer(response.data) == values
    assert client.post("/invocations", data=BODY, content_type="text/csv", headers={TARGET: "nope"}).status_code == 404
    missing = client.post("/invocations", data=BODY, content_type="text/csv")
    assert missing.status_code == 400 and TARGET in missing.get_json()["error"]


def test_invocations_without_the_header_serves_the_only_model(client, root, answers):
    load(client, root, "m1")
    response = client.post("/invocations", data=BODY, content_type="text/csv")
    assert response.status_code == 200 and answer(response.data) == answers["m1"]


def test_invoke_runs_the_same_pipeline_as_single_model(client, root, answers):
    load(client, root, "m0")
    json = invoke(client, "m0", Accept="application/json", **{"X-Amzn-SageMaker-Custom-Attributes": "trace=1"})
    assert json.status_code == 200 and json.headers["X-Amzn-SageMaker-Custom-Attributes"] == "trace=1"
    assert [record["score"] for record in json.get_json()["predictions"]] == answers["m0"]
    assert invoke(client, "m0", b"").status_code == 204
    bad = invoke(client, "m0", b"1,2,oops\n")
    assert bad.status_code == 400 and "oops" not in bad.get_data(as_text=True)
    assert invoke(client, "m0", BODY, **{"Content-Type": "image/png"}).status_code == 415
    assert client.get("/models/m0").get_json()["inFlight"] == 0  # failed invocations release the model too


def test_each_model_runs_its_own_inference_script(client, root, answers):
    load(client, root, "scripted")
    load(client, root, "m0")
    assert invoke(client, "scripted").get_json() == {"scripted": len(ROWS)}
    assert answer(invoke(client, "m0").data) == answers["m0"]


def test_a_slow_load_blocks_no_invocation_and_its_name_is_taken(tmp_path):
    gated = make_model(tmp_path, "gated", 5, script=model_script(gated=True))
    other = make_model(tmp_path, "m0", 0)
    client, _ = client_for(tmp_path)
    assert load(client, tmp_path, "m0").status_code == 200
    results = {}
    loader = threading.Thread(target=lambda: results.update(load=load(client, tmp_path, "gated").status_code))
    loader.start()
    try:
        deadline = time.monotonic() + 10
        while client.delete("/models/gated").status_code != 409 and time.monotonic() < deadline:
            time.sleep(0.01)  # 404 until the load has taken the name
        for _ in range(20):
            assert answer(invoke(client, "m0").data) == expected(other)
        assert load(client, tmp_path, "gated").status_code == 409
        assert invoke(client, "gated").status_code == 404
        assert client.get("/models/gated").status_code == 404
        assert [model["modelName"] for model in client.get("/models").get_json()["models"]] == ["m0"]
        assert loader.is_alive()  # all of the above happened while the load was still running
    finally:
        (gated / "open").touch()
        loader.join(30)
    assert results == {"load": 200}
    assert invoke(client, "gated").status_code == 200
