from pathlib import Path

import pytest

from models.pat.settings import PatSettings
from models.xgboost.settings import XGBoostSettings
from serve.settings import MIB, Settings, SettingsError, apply_process_defaults

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_follow_sagemaker():
    settings = Settings.from_env({})
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.port == 8080
    assert settings.timeout_seconds == 60 and settings.read_timeout_seconds == 5
    assert settings.max_payload_bytes == 6 * MIB
    assert settings.workers >= 1
    assert settings.handler == "xgboost"
    assert settings.default_accept is None
    assert not settings.multi_model and settings.family == XGBoostSettings() and not settings.family.allow_pickle


def test_values_are_read():
    settings = Settings.from_env({
        "SM_MODEL_DIR": "/models/risk", "SAGEMAKER_BIND_TO_PORT": "9000", "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv; charset=utf-8",
        "SAGEMAKER_PROGRAM": "serve.py", "SERVE_HANDLER": "pat", "SAGEMAKER_MULTI_MODEL": "TRUE",
    })
    assert settings.model_dir == Path("/models/risk")
    assert (settings.port, settings.workers, settings.timeout_seconds) == (9000, 3, 120)
    assert settings.default_accept == "text/csv"
    assert settings.program == "serve.py" and settings.handler == "pat" and settings.multi_model
    assert Settings.from_env({"SERVE_READ_TIMEOUT": "2.5"}).read_timeout_seconds == 2.5


def test_each_family_reads_its_own_settings_from_the_mapping():
    xgboost = Settings.from_env({"SAGEMAKER_INFERENCE_OUTPUT": " predicted_label, PROBABILITY ",
                                 "SERVE_ALLOW_PICKLE": "true", "SERVE_LIBSVM_ONE_BASED": "1"})
    assert xgboost.family == XGBoostSettings(inference_output=("predicted_label", "probability"), allow_pickle=True,
                                             libsvm_one_based=True)
    pat = Settings.from_env({"SERVE_HANDLER": "pat", "SERVE_DEVICE": "CPU", "SERVE_TORCH_THREADS": "2",
                             "SERVE_MAX_BATCH_SIZE": "8", "SERVE_BATCH_WAIT_MS": "3.5"})
    assert pat.family == PatSettings(device="cpu", torch_threads=2, max_batch_size=8, batch_wait_ms=3.5)
    # A family's variables mean nothing to another family's image: they are not read there.
    assert Settings.from_env({"SERVE_BATCH_WAIT_MS": "soon"}).family == XGBoostSettings()
    assert Settings.from_env({"SERVE_HANDLER": "pat", "SAGEMAKER_INFERENCE_OUTPUT": "x"}).family == PatSettings()


def test_family_settings_must_be_the_handlers_family():
    with pytest.raises(TypeError, match="PatSettings"):
        Settings(handler="pat", family=XGBoostSettings())
    with pytest.raises(AttributeError):
        PatSettings().max_batch_size = 1


def test_batch_raises_the_timeout_and_payload_limit():
    settings = Settings.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"})
    assert settings.timeout_seconds == 600
    assert settings.max_payload_bytes == 20 * MIB and settings.max_payload_mb == 20
    explicit = Settings.from_env({"SAGEMAKER_BATCH": "true", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "900"})
    assert explicit.timeout_seconds == 900


def test_max_content_length_is_honoured():
    assert Settings.from_env({"MAX_CONTENT_LENGTH": str(10 * MIB)}).max_payload_bytes == 10 * MIB


@pytest.mark.parametrize("env, message", [
    ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT must be an integer"),
    ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "at least 1"),
    ({"SAGEMAKER_BATCH": "maybe"}, "true or false"),
    ({"SERVE_HANDLER": "sklearn"}, "SERVE_HANDLER must be one of"),
    ({"SAGEMAKER_INFERENCE_OUTPUT": "predicted_labels"}, "unknown keys"),
    ({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "csv"}, "media type"),
    ({"SERVE_HANDLER": "pat", "SERVE_BATCH_WAIT_MS": "soon"}, "SERVE_BATCH_WAIT_MS must be a number"),
    ({"SERVE_HANDLER": "pat", "SERVE_DEVICE": "tpu"}, "SERVE_DEVICE must be one of auto, cpu, cuda"),
    ({"SERVE_ALLOW_PICKLE": "sometimes"}, "SERVE_ALLOW_PICKLE must be true or false"),
])
def test_bad_values_fail_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().port = 1


def test_process_defaults_keep_operator_choice():
    env = {}
    apply_process_defaults(env)
    assert env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "ACTIVE"}
    apply_process_defaults(env)
    assert env == {"OMP_NUM_THREADS": "4", "OMP_WAIT_POLICY": "ACTIVE"}


def test_only_settings_touches_the_environment():
    # serve/process.py is no part of the server: it starts one for tests and benchmarks, passing the caller's
    # interpreter variables (PYTHON*, LD_*) on to it.
    allowed = {ROOT / "serve" / "settings.py", ROOT / "serve" / "process.py"}
    offenders = [str(path.relative_to(ROOT)) for folder in ("serve", "models") for path in (ROOT / folder).rglob("*.py")
                 if path not in allowed and ("os.environ" in path.read_text() or "getenv" in path.read_text())]
    assert offenders == []


def test_payload_limit_rules():
    assert Settings.from_env({"MAX_CONTENT_LENGTH": "1000"}).max_payload_bytes == 1000
    assert Settings.from_env({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}).max_payload_bytes == 100 * MIB
    both = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20", "MAX_CONTENT_LENGTH": str(6 * MIB)}
    assert Settings.from_env(both).max_payload_bytes == 20 * MIB


@pytest.mark.parametrize("env, message", [
    ({"SAGEMAKER_BIND_TO_PORT": "70000"}, "between 1 and 65535"),
    ({"SERVE_HANDLER": "pat", "SERVE_BATCH_WAIT_MS": "inf"}, "finite"),
    ({"SERVE_HANDLER": "pat", "SERVE_BATCH_WAIT_MS": "nan"}, "finite"),
    ({"SERVE_READ_TIMEOUT": "0"}, "SERVE_READ_TIMEOUT must be a finite number of at least 0.1"),
])
def test_out_of_range_values_fail(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_batch_transform_concurrency_keeps_within_100_mb():
    assert Settings(workers=2, max_payload_bytes=6 * MIB).max_concurrent_transforms == 2
    assert Settings(workers=4, max_payload_bytes=50 * MIB).max_concurrent_transforms == 2
    pat = Settings(handler="pat", family=PatSettings(max_batch_size=64), max_payload_bytes=6 * MIB)
    assert pat.max_concurrent_transforms == 16


def test_multi_model_budget_defaults_to_a_share_of_memory():
    from serve.settings import container_memory_bytes

    memory = container_memory_bytes()
    assert memory and memory > 0
    assert Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true"}).model_memory_budget_bytes == int(memory * 0.75)
    assert Settings.from_env({"SAGEMAKER_MULTI_MODEL": "true", "SERVE_MODEL_MEMORY_MB": "0"}).model_memory_budget_bytes == 0
    assert Settings.from_env({}).model_memory_budget_bytes == 0
