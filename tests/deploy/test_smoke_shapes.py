"""The smoke test's samples and shape checks against the real handlers' answers (the in-process app of
tests/conftest.py, no AWS): what moto's canned invoke_endpoint cannot show."""

from __future__ import annotations

import io
import json
import sys
import tarfile

import pytest

from tests.conftest import FEATURES, train_model
from tests.pat_models import build_artifact  # torch is a dependency of the project: no skip when it is missing

from .conftest import DEPLOY_CONFIGS

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import artifacts, smoke  # noqa: E402

XGBOOST_MODELS = {"binary": ("binary:logistic", [0, 1]), "multiclass": ("multi:softprob", ["a", "b", "c"]),
                  "regression": ("reg:squarederror", None)}


@pytest.fixture(params=[*XGBOOST_MODELS, "pat"])
def model_dir(request, tmp_path):
    if request.param == "pat":
        return build_artifact(tmp_path / "pat")
    objective, labels = XGBOOST_MODELS[request.param]
    metadata = {"feature_names": FEATURES, **({"class_labels": labels} if labels else {})}
    return train_model(tmp_path / "model", objective, metadata=metadata)


@pytest.fixture
def settings(model_dir):
    """Overrides tests/conftest.py's settings, which its handler and app fixtures build on."""
    from serve.settings import Settings

    return Settings(handler="pat" if (model_dir / "config.json").exists() else "xgboost", model_dir=model_dir,
                    workers=1)


def test_the_sample_gets_an_answer_of_the_checked_shape_from_the_real_handler(model_dir, client, tmp_path):
    archive = artifacts.package("m", model_dir, tmp_path / "out").archive.read_bytes()
    check = smoke.check_for(archive, "test")
    response = client.post("/invocations", data=check.body,
                           headers={"Content-Type": check.content_type, "Accept": "application/json"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert check.verify(json.loads(response.get_data())) is None
    assert check.verify({"predictions": [{"score": 0.5}]}) is not None  # one prediction short, or no scores


def test_an_artifact_without_metadata_cannot_be_smoke_tested():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("xgboost-model"), io.BytesIO(b""))
    with pytest.raises(smoke.DeployError, match="neither an XGBoost artifact"):
        smoke.check_for(buffer.getvalue(), "s3://bucket/key")
