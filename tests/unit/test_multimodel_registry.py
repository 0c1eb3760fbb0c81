"""The multi-model registry without HTTP: loading, naming, paging, unloading, memory budget and LRU eviction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from tests.conftest import FEATURES, train_model
from serve.errors import BadRequest, Conflict, InsufficientMemory, NotFound
from serve.handler import Request
from serve.multimodel import ModelRegistry, UnservableModel
from serve.settings import MIB, Settings

ROWS = np.random.default_rng(3).normal(size=(4, len(FEATURES)))
CSV = Request(content_type="text/csv", accept="text/csv")


def make_model(root: Path, name: str, seed: int = 0, rounds: int = 20, depth: int = 3) -> Path:
    """A SageMaker MME layout, <root>/<name>/model/, holding a regression model of its own (seed)."""
    return train_model(root / name / "model", "reg:squarederror", seed=seed, rounds=rounds, max_depth=depth)


def predict(registry: ModelRegistry, name: str) -> np.ndarray:
    with registry.lease(name) as handler:
        return handler.predict_fn(ROWS, handler.model, CSV)


def booster_prediction(model_dir: Path) -> np.ndarray:
    booster = xgb.Booster()
    booster.load_model(bytearray((model_dir / "xgboost-model").read_bytes()))
    return booster.inplace_predict(ROWS)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """Five models whose predictions differ, and a few broken ones."""
    root = tmp_path_factory.mktemp("models")
    for seed in range(5):
        make_model(root, f"m{seed}", seed=seed)
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
    scripted = make_model(tmp_path, "scripted", seed=1)
    (scripted / "code").mkdir()
    (scripted / "code" / "inference.py").write_text(
        "import numpy as np\n"
        "def predict_fn(data, model):\n"
        "    return np.full(len(data), 42.0)\n")
    broken = make_model(tmp_path, "broken", seed=2)
    (broken / "code").mkdir()
    (broken / "code" / "inference.py").write_text("import a_module_that_is_not_there\n")
    registry = registry_for(tmp_path)
    registry.load("plain", str(make_model(tmp_path, "plain", seed=3)))
    registry.load("scripted", str(scripted))
    with pytest.raises(UnservableModel, match="failed to import"):
        registry.load("broken", str(broken))
    assert predict(registry, "scripted").tolist() == [42.0] * len(ROWS)
    np.testing.assert_array_equal(predict(registry, "plain"), booster_prediction(tmp_path / "plain" / "model"))


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
    for call in (registry.describe, registry.unload, lambda name: predict(registry, name)):
        with pytest.raises(NotFound, match="Model not found: nope"):
            call("nope")


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
def big_models(tmp_path_factory) -> tuple[Path, int]:
    """Four models of about half a MiB each (one shape, other seeds), and the most any of them was charged."""
    root = tmp_path_factory.mktemp("big")
    for seed in range(4):
        make_model(root, f"b{seed}", seed=seed, rounds=300, depth=6)
    registry = registry_for(root)
    registry.load("warm-up", str(root / "b0" / "model"))  # the first load in a process also pays XGBoost's set-up
    sizes = [registry.load(f"b{seed}", str(root / f"b{seed}" / "model")).memory_bytes for seed in range(4)]
    assert min(sizes) > MIB // 4 and max(sizes) < 1.5 * min(sizes), sizes
    return root, max(sizes)


def budget_registry(root: Path, budget: int) -> ModelRegistry:
    registry = registry_for(root, budget)
    registry.load("warm-up", str(root / "b0" / "model"))
    registry.unload("warm-up")
    return registry


def test_loads_over_the_budget_evict_the_least_recently_used_model(big_models):
    root, size = big_models
    registry = budget_registry(root, int(2.5 * size))
    registry.load("b0", str(root / "b0" / "model"))
    registry.load("b1", str(root / "b1" / "model"))
    predict(registry, "b0")  # b1 is now the least recently used
    registry.load("b2", str(root / "b2" / "model"))
    assert registry.describe("b1")["status"] == "evicted"
    assert registry.describe("b0")["status"] == registry.describe("b2")["status"] == "loaded"
    assert registry.memory_in_use <= registry.budget
    assert [entry["modelName"] for entry in registry.page()["models"]] == ["b0", "b1", "b2"]


def test_an_evicted_model_reloads_when_invoked(big_models):
    root, size = big_models
    registry = budget_registry(root, int(2.5 * size))
    for seed in range(3):
        registry.load(f"b{seed}", str(root / f"b{seed}" / "model"))
    assert registry.describe("b0")["status"] == "evicted"
    np.testing.assert_array_equal(predict(registry, "b0"), booster_prediction(root / "b0" / "model"))
    description = registry.describe("b0")
    assert description["status"] == "loaded" and description["loads"] == 2 and description["evictions"] == 1
    assert registry.describe("b1")["status"] == "evicted"  # b0's reload made room by evicting the next oldest
    assert registry.memory_in_use <= registry.budget


def test_a_model_larger_than_the_budget_is_refused_with_507(big_models):
    root, size = big_models
    registry = registry_for(root, size // 4)
    with pytest.raises(InsufficientMemory, match="SERVE_MODEL_MEMORY_MB"):
        registry.load("b0", str(root / "b0" / "model"))
    assert registry.page()["models"] == [] and registry.memory_in_use == 0


def test_the_memory_measured_at_load_is_what_counts(tmp_path):
    """A small directory whose model_fn keeps 8 MiB: the guess from the files fits, the measurement does not."""
    heavy = make_model(tmp_path, "heavy")
    (heavy / "code").mkdir()
    (heavy / "code" / "inference.py").write_text(
        "import numpy as np\n"
        "import xgboost as xgb\n"
        "def model_fn(model_dir):\n"
        "    booster = xgb.Booster()\n"
        "    booster.load_model(bytearray(open(model_dir + '/xgboost-model', 'rb').read()))\n"
        "    booster.ballast = np.ones(1024 * 1024)\n"
        "    return booster\n")
    registry = registry_for(tmp_path, 4 * MIB)
    with pytest.raises(InsufficientMemory, match="more than the 4.0 MiB budget"):
        registry.load("heavy", str(heavy))
    assert registry.page()["models"] == [] and registry.memory_in_use == 0
    unlimited = registry_for(tmp_path).load("heavy", str(heavy))
    assert unlimited.memory_bytes >= 8 * MIB


def test_busy_models_are_not_evicted_and_the_load_is_refused(big_models):
    root, size = big_models
    registry = budget_registry(root, int(2.5 * size))
    registry.load("b0", str(root / "b0" / "model"))
    registry.load("b1", str(root / "b1" / "model"))
    with registry.lease("b0"), registry.lease("b1"):
        with pytest.raises(InsufficientMemory, match="busy"):
            registry.load("b2", str(root / "b2" / "model"))
        assert registry.describe("b0")["status"] == registry.describe("b1")["status"] == "loaded"
    registry.load("b2", str(root / "b2" / "model"))  # idle again: b0 makes room
    assert registry.describe("b0")["status"] == "evicted"


def test_without_a_budget_nothing_is_evicted(big_models):
    root, _ = big_models
    registry = registry_for(root)
    for seed in range(4):
        registry.load(f"b{seed}", str(root / f"b{seed}" / "model"))
    assert {registry.describe(f"b{seed}")["status"] for seed in range(4)} == {"loaded"}
