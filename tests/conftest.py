"""Shared fixtures: tiny real models trained into temporary dirs, settings, and the in-process app and client."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = ROOT.parent / "shared" / "fixtures"
FEATURES = ["age", "bmi", "systolic_bp", "hba1c"]
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")  # Docker-marked tests fail rather than skip


@functools.cache
def engine_problem() -> str | None:
    """Why no Docker engine can be used, or None when `docker info` answers."""
    try:
        result = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                                capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return "the docker command is not installed"
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer within 30 s"
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        return f"'docker info' failed: {lines[-1]}"
    return None


def shared_fixture(name: str) -> Path:
    path = SHARED_FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared fixtures live beside the checkout (../shared/fixtures)")
    return path


def train_model(model_dir: Path, objective: str, seed: int = 0, rounds: int = 12, metadata: dict | None = None,
                file_name: str = "xgboost-model", **params) -> Path:
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, len(FEATURES)))
    signal = x @ rng.normal(size=len(FEATURES))
    if objective.startswith("binary"):
        y = (signal > 0).astype(int)
    elif objective.startswith("multi"):
        y = np.digitize(signal, [-0.5, 0.5])
        params.setdefault("num_class", 3)
    else:
        y = signal
    booster = xgb.train({"objective": objective, "max_depth": 3, "nthread": 1, "seed": seed, **params},
                        xgb.DMatrix(x, label=y), num_boost_round=rounds)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / file_name).write_bytes(booster.save_raw("ubj"))
    if metadata is not None:
        (model_dir / "metadata.json").write_text(json.dumps(metadata))
    return model_dir


def load_booster(path: Path):
    """The booster in a model file, read as bytes: XGBoost then tells the format by the content, where from a path it
    goes by the extension and warns about SageMaker's extension-less `xgboost-model`."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(bytearray(Path(path).read_bytes()))
    return booster


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def risk_dir(models_root) -> Path:
    return train_model(models_root / "risk", "binary:logistic",
                       metadata={"feature_names": FEATURES, "class_labels": ["low", "high"], "model_version": "0.1"})


@pytest.fixture(scope="session")
def treatment_dir(models_root) -> Path:
    return train_model(models_root / "treatment", "multi:softprob", seed=1, metadata={"feature_names": FEATURES})


@pytest.fixture(scope="session")
def outcome_dir(models_root) -> Path:
    return train_model(models_root / "outcome", "reg:squarederror", seed=2)


@pytest.fixture
def settings(risk_dir):
    from serve.settings import Settings

    return Settings(model_dir=risk_dir, workers=1)


@pytest.fixture
def handler(settings):
    from serve.loading import build_handler

    return build_handler(settings)


@pytest.fixture
def app(handler, settings):
    from serve.app import create_app

    return create_app(handler, settings)


@pytest.fixture
def client(app):
    return app.test_client()
