"""Loads, unloads, evictions and invocations interleaved from many threads (in-process app): no request lost, no
model answering for another, every invocation counted once, nothing left in flight."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.http.test_multimodel_api import BODY, answer, client_for, distinct_models, expected, load, make_model

INVOKERS = 8
INVOCATIONS = 150


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, distinct_models(root, 20)


def run_together(*jobs) -> None:
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


def check_counts(client, names, served: Counter) -> None:
    for name in names:
        description = client.get(f"/models/{name}").get_json()
        assert description["invocations"] == served[name], name
        assert description["inFlight"] == 0, name


def test_loads_unloads_and_invocations_interleaved(models):
    root, answers = models
    names = sorted(answers, key=lambda name: int(name[1:]))
    early, late, churn = names[:6], names[6:14], names[14:]
    client, _ = client_for(root)
    app = client.application
    for name in early:
        assert load(client, root, name).status_code == 200
    loaded = {name: threading.Event() for name in late}
    served, problems, lock = Counter(), [], threading.Lock()

    def invoker(seed: int) -> None:
        own, rng = app.test_client(), random.Random(seed)
        for _ in range(INVOCATIONS):
            name = rng.choice(names)
            was_loaded = name in early or (name in loaded and loaded[name].is_set())
            response = own.post(f"/models/{name}/invoke", data=BODY, content_type="text/csv")
            with lock:
                if response.status_code == 200:
                    served[name] += 1
                    if answer(response.data) != answers[name]:
                        problems.append(f"{name} answered with another model's predictions")
                elif response.status_code != 404 or was_loaded:
                    problems.append(f"{name}: {response.status_code} {response.get_data(as_text=True)}")

    def loader() -> None:
        own = app.test_client()
        for name in late:
            assert load(own, root, name).status_code == 200
            loaded[name].set()

    def churner() -> None:
        own = app.test_client()
        for _ in range(5):
            for name in churn:
                assert load(own, root, name).status_code == 200
                response = own.post(f"/models/{name}/invoke", data=BODY, content_type="text/csv")
                assert response.status_code == 200 and answer(response.data) == answers[name]
                assert own.delete(f"/models/{name}").status_code == 200

    run_together(loader, churner, *(lambda seed=seed: invoker(seed) for seed in range(INVOKERS)))
    assert problems == []
    listed = [model["modelName"] for model in client.get("/models?max_results=1000").get_json()["models"]]
    assert sorted(listed) == sorted(early + late)
    check_counts(client, early + late, served)
    assert all(served[name] for name in early) and any(served[name] for name in late)  # the threads did interleave


def test_evictions_and_reloads_under_concurrent_invocations(tmp_path):
    """A budget of about ten models for sixteen: invocations keep evicting and reloading, and all still succeed."""
    answers = {f"b{seed}": expected(make_model(tmp_path, f"b{seed}", seed, rounds=300)) for seed in range(16)}
    probe, _ = client_for(tmp_path)
    load(probe, tmp_path, "warm-up", "b0")  # the process's first load also pays XGBoost's set-up
    sizes = [load(probe, tmp_path, name).get_json()["memoryBytes"] for name in answers]
    client, registry = client_for(tmp_path, int(10.5 * max(sizes)))
    load(client, tmp_path, "warm-up", "b0")
    client.delete("/models/warm-up")
    for name in answers:
        assert load(client, tmp_path, name).status_code == 200
    served, problems, lock = Counter(), [], threading.Lock()

    def invoker(seed: int) -> None:
        own, rng = client.application.test_client(), random.Random(seed)
        for _ in range(INVOCATIONS):
            name = rng.choice(list(answers))
            response = own.post(f"/models/{name}/invoke", data=BODY, content_type="text/csv")
            with lock:
                served[name] += response.status_code == 200
                if response.status_code != 200 or answer(response.data) != answers[name]:
                    problems.append(f"{name}: {response.status_code} {response.get_data(as_text=True)[:80]}")

    run_together(*(lambda seed=seed: invoker(seed) for seed in range(INVOKERS)))
    assert problems == []
    reloads = sum(client.get(f"/models/{name}").get_json()["loads"] - 1 for name in answers)
    assert reloads > 0
    assert registry.memory_in_use <= registry.budget
    check_counts(client, answers, served)
