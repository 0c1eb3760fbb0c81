"""The PAT image, CPU variant (what CI builds): the torch build, and serving the example artifact in a container."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import requests

from .conftest import ROOT, built_image, docker, running

pytestmark = pytest.mark.docker

MINUTES_PER_WEEK = 10080


@pytest.fixture(scope="session")
def pat_image() -> str:
    return built_image("pat")


@pytest.fixture(scope="session")
def pat_model(tmp_path_factory):
    """A small example artifact: randomly initialized PAT-S encoder, heads trained briefly on synthetic weeks,
    mounted as written (no chmod here: the example must be readable by the container's --user 1000:1000)."""
    out = tmp_path_factory.mktemp("pat") / "model"
    subprocess.run([sys.executable, "-m", "models.pat.examples", "--out", str(out), "--subjects", "64",
                    "--steps", "20"], cwd=ROOT, check=True, capture_output=True)
    return out


def weeks(count: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.round(rng.gamma(0.6, 120.0, size=(count, MINUTES_PER_WEEK)))


def in_process_predictions(model_dir, body: bytes) -> list[dict]:
    """The same request through the runtime in this process (Flask's test client), on the CPU."""
    from serve.app import create_app
    from serve.loading import build_handler
    from models.pat.settings import PatSettings
    from serve.settings import Settings

    settings = Settings(handler="pat", model_dir=model_dir, family=PatSettings(device="cpu"))
    handler = build_handler(settings)
    try:
        response = create_app(handler, settings).test_client().post(
            "/invocations", data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["predictions"]
    finally:
        handler.close()


def test_pat_image_holds_the_cpu_build_of_torch(pat_image):
    probe = "import torch, h5py, safetensors; print(torch.__version__, torch.version.cuda)"
    result = docker("run", "--rm", "--network", "none", "--entrypoint", "python", pat_image, "-c", probe)
    assert result.stdout.split() == ["2.13.0+cpu", "None"]
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", pat_image).stdout)
    assert config["Entrypoint"] == ["/opt/app/bin/serve"]
    assert config["Labels"]["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert "com.amazonaws.sagemaker.capabilities.multi-models" not in config["Labels"]
    assert "SERVE_HANDLER=pat" in config["Env"]
    size_mb = int(docker("image", "inspect", "--format", "{{.Size}}", pat_image).stdout) / 1e6
    print(f"{pat_image}: {size_mb:.0f} MB")


def test_pat_serves_the_example_hardened_and_as_in_process(pat_image, pat_model):
    body = json.dumps({"instances": [{"id": f"w{i}", "activity": week.tolist()}
                                     for i, week in enumerate(weeks(3))]}).encode()
    with running(pat_image, pat_model, "--user", "1000:1000", "--read-only", "--tmpfs", "/tmp",
                 label="PAT example, --user 1000:1000 --read-only") as container:
        response = container.post(body, "application/json")
        assert response.status_code == 200, response.text
        bad = container.post(b'{"instances": [{"activity": [1, 2, 3]}]}', "application/json")
        assert bad.status_code == 400 and bad.json()["code"] == 400
    served = response.json()["predictions"]
    expected = in_process_predictions(pat_model, body)
    assert [p["id"] for p in served] == ["w0", "w1", "w2"]
    for got, want in zip(served, expected):
        assert len(got["embedding"]) == 96
        np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=1e-5, atol=1e-5)
        assert got["scores"].keys() == want["scores"].keys() and got["scores"]
        np.testing.assert_allclose(list(got["scores"].values()), list(want["scores"].values()), atol=1e-5)
