"""The smoke test's samples and shape checks against the real handlers' answers (in process, no AWS): what
moto's canned invoke_endpoint cannot show."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import FEATURES, train_model

from .conftest import DEPLOY_CONFIGS

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import artifacts, smoke  # noqa: E402


def answer(model_dir: Path, check: smoke.Check, **env) -> object:
    from serve.app import create_app
    from serve.handler import build_handler
    from serve.settings import Settings

    settings = Settings(model_dir=model_dir, workers=1, **env)
    handler = build_handler(settings)
    try:
        response = create_app(handler, settings).test_client().post(
            "/invocations", data=check.body, headers={"Content-Type": check.content_type,
                                                      "Accept": "application/json"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.loads(response.get_data())
    finally:
        getattr(handler, "close", lambda: None)()


@pytest.mark.parametrize("objective, labels", [("binary:logistic", [0, 1]),
                                               ("multi:softprob", ["a", "b", "c"]),
                                               ("reg:squarederror", None)])
def test_the_xgboost_sample_gets_an_answer_of_the_checked_shape(tmp_path, objective, labels):
    metadata = {"feature_names": FEATURES, **({"class_labels": labels} if labels else {})}
    model_dir = train_model(tmp_path / "model", objective, metadata=metadata)
    archive = artifacts.package("m", model_dir, tmp_path / "out").archive.read_bytes()
    check = smoke.check_for(archive, "test")
    assert check.verify(answer(model_dir, check)) is None
    assert check.verify({"predictions": [{"score": 0.5}]}) is not None  # one row short


def test_the_pat_sample_gets_an_answer_of_the_checked_shape(tmp_path):
    pytest.importorskip("torch")
    from tests.pat_models import TASKS, build_artifact

    model_dir = build_artifact(tmp_path / "pat")
    archive = artifacts.package("pat", model_dir, tmp_path / "out").archive.read_bytes()
    check = smoke.check_for(archive, "test")
    assert check.verify(answer(model_dir, check, handler="pat")) is None
    assert check.verify({"predictions": [{"scores": {task: 0.5 for task in list(TASKS)[:1]}}]}) is not None


def test_an_artifact_without_metadata_cannot_be_smoke_tested(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("xgboost-model")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(smoke.DeployError, match="neither an XGBoost artifact"):
        smoke.check_for(buffer.getvalue(), "s3://bucket/key")
