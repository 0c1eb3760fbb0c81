"""PAT Batch Transform: the requests a transform job on the PAT model sends (the deploy tool's CreateTransformJob
for the dev config), run against the PAT handler in process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from serve.app import create_app
from serve.handler import build_handler
from serve.settings import Settings
from tests.pat_models import build_artifact, forward, weeks

DEPLOY = Path(__file__).resolve().parents[2] / "containers" / "deploy"
sys.path.insert(0, str(DEPLOY))
from sagemaker_deploy import batch, config as configs, gpu_hosts  # noqa: E402

MB = 1024 * 1024


@pytest.fixture(scope="module")
def job() -> dict:
    """The dev stage's PAT transform job, with a 1 MB payload so that a few dozen weeks take several requests."""
    config = configs.fill(configs.load(DEPLOY / "dev.json"), "123456789012", "us-east-1", "dev")
    config["batch"]["max_payload_mb"] = 1
    labels = gpu_hosts.lock_labels(DEPLOY.parent / "pat/requirements-cuda.lock")
    return batch.job_request(config, "pat", "pat-model", "pat", "s3://in/", "s3://out/", "v1", image_labels=labels)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("pat") / "model")


@pytest.fixture(scope="module")
def client(model_dir, job):
    settings = Settings(handler="pat", model_dir=model_dir, max_payload_bytes=job["MaxPayloadInMB"] * MB)
    handler = build_handler(settings)
    yield create_app(handler, settings).test_client()
    handler.close()


def mini_batches(lines: list[bytes], max_payload_mb: int) -> list[bytes]:
    """BatchStrategy=MultiRecord with SplitType=Line: as many whole lines per request as fit in MaxPayloadInMB."""
    bodies, body = [], b""
    for line in lines:
        if body and len(body) + len(line) > max_payload_mb * MB:
            bodies.append(body)
            body = b""
        body += line
    return bodies + [body]


def test_the_job_asks_pat_for_json_lines_never_csv(job):
    assert job["BatchStrategy"] == "MultiRecord"
    assert job["TransformInput"]["SplitType"] == "Line" and job["TransformOutput"]["AssembleWith"] == "Line"
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"
    assert job["TransformOutput"]["Accept"] == "application/jsonlines"


def test_the_transform_jobs_requests_score_every_week_in_order(client, job, model_dir):
    activity = weeks(45, seed=41)
    lines = [orjson.dumps({"id": f"subject-{i}", "activity": row.tolist()}) + b"\n" for i, row in enumerate(activity)]
    bodies = mini_batches(lines, job["MaxPayloadInMB"])
    assert len(bodies) >= 3 and all(len(body) <= job["MaxPayloadInMB"] * MB for body in bodies)

    output = b""
    for body in bodies:
        response = client.post("/invocations", data=body, headers={
            "Content-Type": job["TransformInput"]["ContentType"], "Accept": job["TransformOutput"]["Accept"]})
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.content_type == "application/jsonlines"
        output += response.data  # AssembleWith=Line
    predictions = [orjson.loads(line) for line in output.splitlines()]

    assert [p["id"] for p in predictions] == [f"subject-{i}" for i in range(45)]
    expected = forward(model_dir, activity)
    np.testing.assert_allclose([p["embedding"] for p in predictions], expected["embedding"], rtol=1e-5, atol=1e-5)
    assert all(p["scores"].keys() == {"depression", "ssri"} for p in predictions)


def test_csv_is_not_an_answer_pat_gives(client):
    line = orjson.dumps({"activity": weeks(1, seed=42)[0].tolist()}) + b"\n"
    response = client.post("/invocations", data=line, headers={"Content-Type": "application/jsonlines",
                                                                "Accept": "text/csv"})
    assert response.status_code == 406 and response.get_json()["code"] == 406
