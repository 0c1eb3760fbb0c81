"""Multi-model endpoints on a real `serve` process (SAGEMAKER_MULTI_MODEL=true, gunicorn, a free loopback port)."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from serve.process import ServeProcess
from tests.http.test_multimodel_api import BODY, TARGET, Tally, answer, distinct_models, make_model, model_script

BUDGET_MIB = 24
CSV = {"Content-Type": "text/csv"}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt-ml-models")
    make_model(root, "heavy", 40, script=model_script(mib=2 * BUDGET_MIB))
    make_model(root, "broken", 41).joinpath("xgboost-model").write_bytes(b"\x00broken")
    return root


@pytest.fixture(scope="module")
def answers(root):
    return distinct_models(root, 12)


@pytest.fixture(scope="module")
def server(root, answers, tmp_path_factory):
    env = {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(root),
           "SERVE_MODEL_MEMORY_MB": str(BUDGET_MIB)}
    process = ServeProcess(env, tmp_path_factory.mktemp("log") / "serve.log").wait_ready()
    yield process
    process.stop()


def load(server, root, name: str, session=requests):
    url = str(root / name / "model")
    return session.post(server.url + "/models", json={"model_name": name, "url": url}, timeout=30)


@pytest.fixture(autouse=True)
def clean(server):
    """Each test starts from an empty endpoint."""
    yield
    for model in requests.get(server.url + "/models?max_results=1000").json()["models"]:
        requests.delete(f"{server.url}/models/{model['modelName']}")


def test_ping_before_any_model(server):
    assert requests.get(server.url + "/ping").status_code == 200
    assert requests.get(server.url + "/models").json() == {"models": []}


def test_three_models_through_both_routes(server, root, answers):
    names = ["m0", "m1", "m2"]
    for name in names:
        assert load(server, root, name).status_code == 200
    assert load(server, root, "m0").status_code == 409
    for name in names:
        routed = requests.post(f"{server.url}/models/{name}/invoke", data=BODY, headers=CSV)
        header = requests.post(server.url + "/invocations", data=BODY, headers={**CSV, TARGET: name})
        assert routed.status_code == header.status_code == 200
        assert answer(routed.content) == answer(header.content) == answers[name]
    listed = requests.get(server.url + "/models", params={"max_results": 2}).json()
    rest = requests.get(server.url + "/models", params={"next_page_token": listed["nextPageToken"]}).json()
    assert [model["modelName"] for model in listed["models"] + rest["models"]] == names
    assert requests.get(server.url + "/models/m1").json()["invocations"] == 2
    assert requests.delete(server.url + "/models/m1").status_code == 200
    missing = requests.post(server.url + "/models/m1/invoke", data=BODY, headers=CSV)
    assert missing.status_code == 404 and missing.json() == {"error": "Model not found: the target model is not loaded",
                                                            "code": 404}


def test_failures_answer_in_json_and_harm_nothing(server, root, answers):
    assert load(server, root, "m3").status_code == 200
    assert load(server, root, "gone").status_code == 404
    broken = load(server, root, "broken")
    assert broken.status_code == 422 and "cannot be served" in broken.json()["error"]
    heavy = load(server, root, "heavy")
    assert heavy.status_code == 507 and f"{BUDGET_MIB}.0 MiB budget" in heavy.json()["error"]
    assert requests.post(server.url + "/models", data=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    ok = requests.post(server.url + "/models/m3/invoke", data=BODY, headers=CSV)
    assert ok.status_code == 200 and answer(ok.content) == answers["m3"]


def test_many_clients_while_models_load(server, root, answers):
    names = sorted(answers, key=lambda name: int(name[1:]))
    early, late = names[:6], names[6:]
    for name in early:
        assert load(server, root, name).status_code == 200
    tally = Tally(answers, early)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as session:
            def post(name: str) -> tuple[int, bytes]:
                response = session.post(f"{server.url}/models/{name}/invoke", data=BODY, headers=CSV, timeout=30)
                return response.status_code, response.content

            for _ in range(40):
                tally.invoke(post, rng.choice(names))

    def loader() -> None:
        with requests.Session() as session:
            for name in late:
                assert load(server, root, name, session=session).status_code == 200
                tally.loaded[name].set()

    with ThreadPoolExecutor(17) as pool:
        futures = [pool.submit(loader)] + [pool.submit(client, seed) for seed in range(16)]
        for future in futures:
            future.result()
    tally.check(lambda name: requests.get(f"{server.url}/models/{name}").json(), names)


def test_the_log_holds_model_events_and_no_request_body(server, root):
    assert load(server, root, "m4").status_code == 200
    requests.post(server.url + "/models/m4/invoke", data=BODY, headers=CSV)
    requests.post(server.url + "/models/m4/invoke", data=BODY + b",oops", headers=CSV)
    events = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert {"message": "model loaded", "model": "m4"}.items() <= next(
        event for event in events if event.get("model") == "m4").items()
    assert BODY.decode().split(",")[0] not in server.logs()
