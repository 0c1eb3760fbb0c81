"""Loads, unloads, evictions and invocations interleaved from many threads (in-process app): no request lost, no
model answering for another, every invocation counted once, nothing left in flight."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.http.test_multimodel_api import BODY, Tally, answer, client_for, distinct_models, expected, load, make_model

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


def test_loads_unloads_and_invocations_interleaved(models):
    root, answers = models
    names = sorted(answers, key=lambda name: int(name[1:]))
    early, late, churn = names[:6], names[6:14], names[14:]
    client, _ = client_for(root)
    app = client.application
    for name in early:
        assert load(client, root, name).status_code == 200
    tally = Tally(answers, early)

    def invoker(seed: int) -> None:
        own, rng = app.test_client(), random.Random(seed)
        post = lambda name: _status_and_body(own.post(f"/models/{name}/invoke", data=BODY, content_type="text/csv"))
        for _ in range(INVOCATIONS):
            tally.invoke(post, rng.choice(names))

    def loader() -> None:
        own = app.test_client()
        for name in late:
            assert load(own, root, name).status_code == 200
            tally.loaded[name].set()

    def churner() -> None:
        own = app.test_client()
        for _ in range(5):
            for name in churn:
                assert load(own, root, name).status_code == 200
                response = own.post(f"/models/{name}/invoke", data=BODY, content_type="text/csv")
                assert response.status_code == 200 and answer(response.data) == answers[name]
                assert own.delete(f"/models/{name}").status_code == 200

    run_together(loader, churner, *(lambda seed=seed: invoker(seed) for seed in range(INVOKERS)))
    listed = [model["modelName"] for model in client.get("/models?max_results=1000").get_json()["models"]]
    assert sorted(listed) == sorted(early + late)
    tally.check(lambda name: client.get(f"/models/{name}").get_json(), early + late)
    assert all(tally.served[name] for name in early) and any(tally.served[name] for name in late)  # interleaved


def test_evictions_and_reloads_under_concurrent_invocations(tmp_path):
    """A budget of about ten models for sixteen: invocations keep evicting and reloading, and all still succeed."""
    answers = {f"b{seed}": expected(make_model(tmp_path, f"b{seed}", seed, rounds=300)) for seed in range(16)}
    probe, _ = client_for(tmp_path)
    sizes = [load(probe, tmp_path, name).get_json()["memoryBytes"] for name in answers]
    client, registry = client_for(tmp_path, int(10.5 * max(sizes)))
    for name in answers:
        assert load(client, tmp_path, name).status_code == 200
    tally = Tally(answers, answers)  # all loaded: anything but 200 is a problem

    def invoker(seed: int) -> None:
        own, rng = client.application.test_client(), random.Random(seed)
        post = lambda name: _status_and_body(own.post(f"/models/{name}/invoke", data=BODY, content_type="text/csv"))
        for _ in range(INVOCATIONS):
            tally.invoke(post, rng.choice(list(answers)))

    run_together(*(lambda seed=seed: invoker(seed) for seed in range(INVOKERS)))
    tally.check(lambda name: client.get(f"/models/{name}").get_json(), answers)
    assert sum(client.get(f"/models/{name}").get_json()["loads"] - 1 for name in answers) > 0  # reloads happened
    assert registry.memory_in_use <= registry.budget


def _status_and_body(response) -> tuple[int, bytes]:
    return response.status_code, response.data
