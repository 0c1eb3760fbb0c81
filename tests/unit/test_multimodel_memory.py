"""Multi-model memory accounting under load: a model is charged its own size, never what invocations served meanwhile
allocate, and the garbage collector keeps running while models load."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest

import serve.multimodel
from serve.handler import Request
from serve.multimodel import ModelRegistry
from serve.settings import MIB, Settings
from tests.conftest import FEATURES
from tests.http.test_multimodel_api import make_model

CSV = Request(content_type="text/csv", accept="text/csv")
REQUEST_ROWS = 1_000_000  # one invocation's batch: 32 MiB of float64 features, held while it is in flight


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Two small models (5 trees) and two large ones (400 deep trees): sizes a factor of a hundred apart."""
    root = tmp_path_factory.mktemp("sized")
    for seed in range(2):
        make_model(root, f"small{seed}", seed, rounds=5)
        make_model(root, f"large{seed}", seed, rounds=400)
    return root


def file_bytes(root: Path, name: str) -> int:
    return (root / name / "model" / "xgboost-model").stat().st_size


class BusyEndpoint:
    """Loads that each wait, midway, until an invocation of another model has allocated its batch and predicted: what
    that invocation holds is in the process while the model loads, as on an endpoint under load."""

    def __init__(self, registry: ModelRegistry, serving: str, monkeypatch):
        self.registry, self.serving = registry, serving
        self.collector_on_during_loads: list[bool] = []
        self.held: list[np.ndarray] = []
        build = serve.multimodel.build_handler

        def build_while_serving(settings, model_dir, **options):
            self.invoke_and_hold()
            self.collector_on_during_loads.append(gc.isenabled())
            return build(settings, model_dir, **options)

        monkeypatch.setattr(serve.multimodel, "build_handler", build_while_serving)

    def invoke_and_hold(self) -> None:
        def invocation():
            batch = np.ones((REQUEST_ROWS, len(FEATURES)))
            with self.registry.lease(self.serving) as handler:
                handler.predict_fn(batch, handler.model, CSV)
            self.held.append(batch)

        thread = threading.Thread(target=invocation)
        thread.start()
        thread.join(60)
        assert not thread.is_alive()


def test_eviction_follows_the_models_sizes_not_what_invocations_allocate_while_they_load(models, monkeypatch):
    large = file_bytes(models, "large0")
    assert large > 50 * file_bytes(models, "small0")
    budget = int(1.6 * large)  # a large model and the small ones fit; two large ones do not
    registry = ModelRegistry(Settings(multi_model=True, multi_model_dir=models, model_memory_budget_bytes=budget))
    registry.load("server", str(models / "small1" / "model"))  # the model that invocations keep using
    busy = BusyEndpoint(registry, "server", monkeypatch)
    for name in ("small0", "large0", "small1"):
        registry.load(name, str(models / name / "model"))
    with registry.lease("small0"), registry.lease("small1"), registry.lease("server"):
        pass  # large0 is now the least recently used
    registry.load("large1", str(models / "large1" / "model"))

    assert len(busy.held) == 4 and busy.collector_on_during_loads == [True] * 4
    charged = {name: registry.describe(name)["memoryBytes"] for name in ("small0", "small1", "large1", "server")}
    assert registry.describe("large0")["status"] == "evicted"
    assert {registry.describe(name)["status"] for name in charged} == {"loaded"}
    assert registry.memory_in_use == sum(charged.values()) <= budget
    for name, size in charged.items():  # each about its own model's size, far below the 32 MiB a request held
        model = "small1" if name == "server" else name
        assert file_bytes(models, model) / 2 <= size <= 2 * file_bytes(models, model) + 64 * 1024, name
    assert charged["large1"] > 20 * max(charged["small0"], charged["small1"])


def test_the_budget_refuses_what_does_not_fit_by_the_models_size_alone(models, monkeypatch):
    """Under a budget of 4 MiB: a 32 MiB batch in flight while each small model loads does not make it too big."""
    registry = ModelRegistry(Settings(multi_model=True, multi_model_dir=models, model_memory_budget_bytes=4 * MIB))
    registry.load("server", str(models / "small1" / "model"))
    busy = BusyEndpoint(registry, "server", monkeypatch)
    registry.load("small0", str(models / "small0" / "model"))
    registry.load("large0", str(models / "large0" / "model"))
    assert len(busy.held) == 2
    assert [registry.describe(name)["status"] for name in ("server", "small0", "large0")] == ["loaded"] * 3
    assert registry.memory_in_use < 4 * MIB
