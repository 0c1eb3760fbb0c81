"""`build.sh all` from source to endpoints: the real xgboost image build, the registry, moto; then a new tag."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import stage_config

pytestmark = [pytest.mark.deploy, pytest.mark.docker]

XGBOOST_ENDPOINTS = ["xgboost-outcome-endpoint", "xgboost-risk-endpoint", "xgboost-treatment-endpoint"]


def test_build_sh_all_builds_pushes_registers_and_deploys_then_a_new_tag_updates(build_sh, moto, registry,
                                                                                 execution_role, tmp_path):
    config = stage_config(tmp_path, stage="prod", tiny=False, families=("xgboost",))
    images_json = Path(build_sh.env["DEPLOY_STATE_DIR"]) / "prod" / "images.json"
    build_sh("all", DEPLOY_CONFIG=str(config))  # IMAGE_TAG: build.sh's own VERSION-GITSHA
    pushed = json.loads(images_json.read_text())["families"]["xgboost"]
    tag = pushed["tag"]
    new_tag = f"{tag}-rebuilt"
    try:
        # What was pushed is the image build.sh built: the local tag carries the registry's digest.
        local = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}",
                                f"xgboost-inference:{tag}"], capture_output=True, text=True, check=True)
        assert pushed["uri"] in json.loads(local.stdout)
        assert registry.manifest("xgboost-inference", pushed["digest"]) == 200

        sagemaker = moto.client("sagemaker")
        first = {name: sagemaker.describe_endpoint(EndpointName=name) for name in XGBOOST_ENDPOINTS}
        for endpoint in first.values():
            assert endpoint["EndpointStatus"] == "InService"
            variant = sagemaker.describe_endpoint_config(
                EndpointConfigName=endpoint["EndpointConfigName"])["ProductionVariants"][0]
            model = sagemaker.describe_model(ModelName=variant["ModelName"])
            assert model["PrimaryContainer"]["Image"] == pushed["uri"]
            assert model["VpcConfig"]["Subnets"][0] == "subnet-0fedcba9876543210"
        assert [request["EnableNetworkIsolation"] for request in moto.requests("CreateModel")] == [True] * 3
        assert len(moto.requests("CreateRepository")) == 1

        build_sh("all", DEPLOY_CONFIG=str(config), IMAGE_TAG=new_tag)
        assert len(moto.requests("CreateRepository")) == 1  # found the second time
        updated = sorted(request["EndpointName"] for request in moto.requests("UpdateEndpoint"))
        assert updated == XGBOOST_ENDPOINTS
        for name, before in first.items():
            after = sagemaker.describe_endpoint(EndpointName=name)
            assert after["EndpointStatus"] == "InService"
            assert after["EndpointConfigName"] != before["EndpointConfigName"]
            assert new_tag.replace(".", "-") in after["EndpointConfigName"] or len(after["EndpointConfigName"]) == 63
    finally:
        pushed_refs = [f"{registry.host}/xgboost-inference:{t}" for t in (tag, new_tag)]
        subprocess.run(["docker", "rmi", f"xgboost-inference:{new_tag}", *pushed_refs], capture_output=True)
