"""The multi-model registry without HTTP: loading, naming, paging, unloading, memory budget and LRU eviction."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serve.errors import BadRequest, Conflict, InsufficientMemory, NotFound, UnservableModel
from serve.handler import Request
from serve.multimodel import ModelRegistry
from serve.settings import MIB, Settings
from tests.conftest import FEATURES, load_booster
from tests.http.test_multimodel_api import make_model, model_script

ROWS = np.random.default_rng(3).normal(size=(4, len(FEATURES)))
CSV = Request(content_type="text/csv", accept="text/csv")


def predict(registry: ModelRegistry, name: str) -> np.ndarray:
    with registry.lease(name) as handler:
        return handler.predict_fn(ROWS, handler.model, CSV)


def booster_prediction(model_dir: Path) -> np.ndarray:
    return load_booster(model_dir / "xgboost-model").inplace_predict(ROWS)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Five models whose predictions differ, and a few broken ones."""
    root = tmp_path_factory.mktemp("models")
    for seed in range(5):
        make_model(root, f"m{seed}", seed)
    (root / "empty" / "model").mkdir(parents=True)
    (root / "garbage" / "model").mkdir(parents=True)
    (root / "garbage" / "model" / "xgboost-model").write_bytes(b"not a booster")
    return root


def registry_for(root: Path, budget_bytes: int = 0) -> ModelRegistry:
    return ModelRegistry(Settings(multi_model=True, multi_model_dir=root, model_memory_budget_bytes=budget_bytes))


def test_each_model_answers_with_its_own_predictions(models):
    registry = registry_for(models)
    for seed in range(5):
        registry.load(f"m{seed}", str(models / f"m{seed}" / "model"))
    answers = {seed: predict(registry, f"m{seed}") for seed in range(5)}
    for seed, answer in answers.items():
        np.testing.assert_array_equal(answer, booster_prediction(models / f"m{seed}" / "model"))
    assert len({answer.tobytes() for answer in answers.values()}) == 5


def test_load_measures_memory_and_time(models):
    registry = registry_for(models)
    model = registry.load("m0", str(models / "m0" / "model"))
    assert model.memory_bytes > 0 and model.load_seconds > 0
    assert registry.memory_in_use == model.memory_bytes
    description = registry.describe("m0")
    assert description["status"] == "loaded" and description["memoryBytes"] == model.memory_bytes
    assert description["model"]["num_features"] == len(FEATURES)
    registry.unload("m0")
    assert registry.memory_in_use == 0


def test_second_load_of_a_name_conflicts_and_keeps_the_first(models):
    registry = registry_for(models)
    registry.load("m", str(models / "m0" / "model"))
    with pytest.raises(Conflict):
        registry.load("m", str(models / "m1" / "model"))
    np.testing.assert_array_equal(predict(registry, "m"), booster_prediction(models / "m0" / "model"))


@pytest.mark.parametrize("name", ["", "a/b", "x" * 1025, "tab\there", None, 7])
def test_bad_model_names_are_refused(models, name):
    with pytest.raises(BadRequest):
        registry_for(models).load(name, str(models / "m0" / "model"))


def test_urls_must_be_directories_under_the_model_root(models):
    registry = registry_for(models)
    for url in ["relative/m0/model", "/etc", str(models), str(models / ".." / "elsewhere"), None, ""]:
        with pytest.raises(BadRequest):
            registry.load("m", url)
    with pytest.raises(NotFound):
        registry.load("m", str(models / "missing" / "model"))


@pytest.mark.parametrize("broken", ["empty", "garbage"])
def test_a_broken_artifact_fails_its_own_load_and_harms_nothing(models, broken):
    registry = registry_for(models)
    registry.load("good", str(models / "m1" / "model"))
    with pytest.raises(UnservableModel, match=f"Model {broken} cannot be served"):
        registry.load(broken, str(models / broken / "model"))
    assert [entry["modelName"] for entry in registry.page()["models"]] == ["good"]
    np.testing.assert_array_equal(predict(registry, "good"), booster_prediction(models / "m1" / "model"))
    registry.load(broken, str(models / "m2" / "model"))  # the name is free again


def test_each_model_may_carry_its_own_inference_script(models, tmp_path):
    scripted = make_model(tmp_path, "scripted", 1, script="import numpy as np\n"
                                                          "def predict_fn(data, model):\n"
                                                          "    return np.full(len(data), 42.0)\n")
    broken = make_model(tmp_path, "broken", 2, script="import a_module_that_is_not_there\n")
    registry = registry_for(tmp_path)
    registry.load("plain", str(make_model(tmp_path, "plain", 3)))
    registry.load("scripted", str(scripted))
    with pytest.raises(UnservableModel, match="failed to import"):
        registry.load("broken", str(broken))
    assert predict(registry, "scripted").tolist() == [42.0] * len(ROWS)
    np.testing.assert_array_equal(predict(registry, "plain"), booster_prediction(tmp_path / "plain" / "model"))


def test_helper_modules_of_one_model_never_answer_for_another(tmp_path):
    """Two models whose inference.py imports a module of the same name from its own code/ directory."""
    registry = registry_for(tmp_path)
    for name, value in (("first", 1.0), ("second", 2.0)):
        model_dir = make_model(tmp_path, name, 4, script="import numpy as np\n"
                                                         "import helper\n"
                                                         "def predict_fn(data, model):\n"
                                                         "    return np.full(len(data), helper.VALUE)\n")
        (model_dir / "code" / "helper.py").write_text(f"VALUE = {value}\n")
        registry.load(name, str(model_dir))
    assert predict(registry, "first").tolist() == [1.0] * len(ROWS)
    assert predict(registry, "second").tolist() == [2.0] * len(ROWS)


def test_pages_list_every_model_once_in_name_order(models):
    registry = registry_for(models)
    names = [f"cohort-{index:02d}" for index in range(23)]
    for name in names:
        registry.load(name, str(models / "m0" / "model"))
    seen, token = [], None
    while True:
        page = registry.page("10", token)
        assert len(page["models"]) <= 10
        seen += [entry["modelName"] for entry in page["models"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    assert seen == names
    assert registry.page()["models"][0] == {"modelName": "cohort-00", "modelUrl": str(models / "m0" / "model")}


def test_pages_stay_right_while_models_come_and_go(models):
    registry = registry_for(models)
    for name in "bdfh":
        registry.load(name, str(models / "m0" / "model"))
    first = registry.page("2")
    assert [entry["modelName"] for entry in first["models"]] == ["b", "d"]
    registry.unload("b")
    registry.load("a", str(models / "m0" / "model"))  # sorts before the token: not repeated, not skipping others
    second = registry.page("2", first["nextPageToken"])
    assert [entry["modelName"] for entry in second["models"]] == ["f", "h"]
    assert "nextPageToken" not in second


@pytest.mark.parametrize("max_results", ["0", "1001", "ten", "-1"])
def test_bad_page_sizes_are_refused(models, max_results):
    with pytest.raises(BadRequest):
        registry_for(models).page(max_results)


def test_bad_page_tokens_are_refused(models):
    with pytest.raises(BadRequest):
        registry_for(models).page(None, "%%%")


def test_unknown_models_are_not_found(models):
    registry = registry_for(models)
    for call in (registry.describe, registry.unload):  # the management API names the model, as MMS does
        with pytest.raises(NotFound, match="Model not found: nope"):
            call("nope")
    with pytest.raises(NotFound) as invoked:  # an invocation never echoes the target model it sent
        predict(registry, "nope")
    assert invoked.value.message == "Model not found: the target model is not loaded"


def test_the_target_may_be_left_out_only_while_one_model_is_loaded(models):
    registry = registry_for(models)
    with pytest.raises(BadRequest):
        predict(registry, None)
    registry.load("only", str(models / "m3" / "model"))
    np.testing.assert_array_equal(predict(registry, None), booster_prediction(models / "m3" / "model"))
    registry.load("second", str(models / "m4" / "model"))
    with pytest.raises(BadRequest, match="2 models are loaded"):
        predict(registry, None)


def test_an_unloaded_model_finishes_the_invocations_in_flight(models):
    registry = registry_for(models)
    registry.load("m", str(models / "m0" / "model"))
    with registry.lease("m") as handler:
        registry.unload("m")
        assert registry.page()["models"] == []
        np.testing.assert_array_equal(handler.predict_fn(ROWS, handler.model, CSV),
                                      booster_prediction(models / "m0" / "model"))
    with pytest.raises(NotFound):
        predict(registry, "m")


# --- memory budget -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_models(tmp_path_factory) -> Path:
    """Four models that each keep 4 MiB beside their trees."""
    root = tmp_path_factory.mktemp("big")
    for seed in range(4):
        make_model(root, f"b{seed}", seed, script=model_script(mib=4))
    return root


def test_loads_over_the_budget_evict_the_least_recently_used_model(big_models):
    registry = registry_for(big_models, 10 * MIB)
    registry.load("b0", str(big_models / "b0" / "model"))
    registry.load("b1", str(big_models / "b1" / "model"))
    predict(registry, "b0")  # b1 is now the least recently used
    registry.load("b2", str(big_models / "b2" / "model"))
    assert registry.describe("b1")["status"] == "evicted"
    assert registry.describe("b0")["status"] == registry.describe("b2")["status"] == "loaded"
    assert registry.memory_in_use <= registry.budget
    assert [entry["modelName"] for entry in registry.page()["models"]] == ["b0", "b1", "b2"]


def test_an_evicted_model_reloads_when_invoked(big_models):
    registry = registry_for(big_models, 10 * MIB)
    for seed in range(3):
        registry.load(f"b{seed}", str(big_models / f"b{seed}" / "model"))
    assert registry.describe("b0")["status"] == "evicted"
    np.testing.assert_array_equal(predict(registry, "b0"), booster_prediction(big_models / "b0" / "model"))
    description = registry.describe("b0")
    assert description["status"] == "loaded" and description["loads"] == 2 and description["evictions"] == 1
    assert registry.describe("b1")["status"] == "evicted"  # b0's reload made room by evicting the next oldest
    assert registry.memory_in_use <= registry.budget


def test_a_failed_reload_on_an_invocation_does_not_name_the_model(big_models, tmp_path):
    """The loader's reason quotes the model's directory, which SageMaker names after the model: an invocation's 422
    says neither; the log line has the reason."""
    name = "zq-secret-86420"
    model_dir = make_model(tmp_path, name, 5, script=model_script(mib=4))
    registry = registry_for(tmp_path, 6 * MIB)
    registry.load(name, str(model_dir))
    make_model(tmp_path, "other", 6, script=model_script(mib=4))
    registry.load("other", str(tmp_path / "other" / "model"))  # evicts the first
    assert registry.describe(name)["status"] == "evicted"
    (model_dir / "code" / "inference.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UnservableModel) as failed:
        predict(registry, name)
    assert failed.value.message == "The target model cannot be served; the server log says why"


def test_a_model_unloaded_while_it_reloads_stays_unloaded(big_models):
    gated = make_model(big_models, "gated", 9, script=model_script(mib=4, gated=True))
    (gated / "open").touch()
    registry = registry_for(big_models, 6 * MIB)
    registry.load("gated", str(gated))
    registry.load("b1", str(big_models / "b1" / "model"))  # evicts "gated"
    (gated / "open").unlink()
    outcome = []
    invocation = threading.Thread(target=lambda: outcome.append(_error_of(lambda: predict(registry, "gated"))))
    invocation.start()
    deadline = time.monotonic() + 10
    while registry.describe("gated")["status"] != "reloading" and time.monotonic() < deadline:
        time.sleep(0.01)
    registry.unload("gated")
    (gated / "open").touch()
    invocation.join(30)
    assert outcome == ["Model not found: the target model was unloaded while it reloaded"]
    assert registry.page()["models"] == [{"modelName": "b1", "modelUrl": str(big_models / "b1" / "model")}]
    assert registry.memory_in_use == 0  # b1 was evicted to make room for the reload; the reload was dropped


def _error_of(call) -> str | None:
    try:
        call()
    except NotFound as error:
        return error.message
    return None


def test_a_model_larger_than_the_budget_is_refused_with_507(big_models):
    """The files are small and fit; what the load measures (4 MiB) does not: the measurement decides."""
    registry = registry_for(big_models, 2 * MIB)
    with pytest.raises(InsufficientMemory, match="more than the 2.0 MiB budget"):
        registry.load("b0", str(big_models / "b0" / "model"))
    assert registry.page()["models"] == [] and registry.memory_in_use == 0
    assert registry_for(big_models).load("b0", str(big_models / "b0" / "model")).memory_bytes >= 4 * MIB


def test_busy_models_are_not_evicted_and_the_load_is_refused(big_models):
    registry = registry_for(big_models, 10 * MIB)
    registry.load("b0", str(big_models / "b0" / "model"))
    registry.load("b1", str(big_models / "b1" / "model"))
    with registry.lease("b0"), registry.lease("b1"):
        with pytest.raises(InsufficientMemory, match="busy"):
            registry.load("b2", str(big_models / "b2" / "model"))
        assert registry.describe("b0")["status"] == registry.describe("b1")["status"] == "loaded"
    registry.load("b2", str(big_models / "b2" / "model"))  # idle again: b0 makes room
    assert registry.describe("b0")["status"] == "evicted"


def test_without_a_budget_nothing_is_evicted(big_models):
    registry = registry_for(big_models)
    for seed in range(4):
        registry.load(f"b{seed}", str(big_models / f"b{seed}" / "model"))
    assert {registry.describe(f"b{seed}")["status"] for seed in range(4)} == {"loaded"}
