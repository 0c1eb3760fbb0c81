"""The deploy against our stand-in for AWS (moto plus the rules in moto_server.py and immutable_registry.py), for
what plain moto does not check; real AWS is not called. Each test failed on the deploy code before it handled the
case. What the stand-in enforces, each rule with the AWS page it follows:

- UpdateEndpoint takes instance counts and weights from the new endpoint config unless RetainAllVariantProperties
  is true: a redeploy would shrink an endpoint that autoscaling scaled out.
- ECR's immutable repositories refuse a second push of a tag: a retried build of the same commit failed.
- An alarm `Invocations Sum < 0` can never fire: "no traffic" is `Sum < 1` with missing data breaching.
- A canary must be at most 50% of the variant's instance count: prod's one-instance PAT endpoint could not be
  updated with a 10% canary (a canary is at least one whole instance).
("UpdateEndpoint", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html;
"Image tag mutability", https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html;
"Using Amazon CloudWatch alarms", https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html;
"TrafficRoutingConfig", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html)
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from .conftest import TINY_IMAGES, stage_config

pytestmark = [pytest.mark.deploy, pytest.mark.docker]


def state(build_sh, stage: str, name: str) -> dict:
    return json.loads((Path(build_sh.env["DEPLOY_STATE_DIR"]) / stage / name).read_text())


def release(build_sh, tiny_images, config, tag: str, *commands: str, **env: str):
    tiny_images(tag)
    return build_sh(*commands, DEPLOY_CONFIG=str(config), IMAGE_TAG=tag, **env)


def test_a_redeploy_keeps_the_instance_count_that_autoscaling_set(build_sh, tiny_images, moto, registry,
                                                                  execution_role, tmp_path):
    config = stage_config(tmp_path, families=("xgboost",))
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register", "deploy")
    sagemaker = moto.client("sagemaker")
    # What Application Auto Scaling does when the load rises.
    sagemaker.update_endpoint_weights_and_capacities(EndpointName="xgboost-endpoint", DesiredWeightsAndCapacities=[
        {"VariantName": "AllTraffic", "DesiredInstanceCount": 2}])

    spec = json.loads(config.read_text())
    spec["data_capture"]["sampling_percentage"] = 50  # a new config whose data capture must take effect
    config.write_text(json.dumps(spec))
    release(build_sh, tiny_images, config, "1.1.0-bbbbbbb", "push", "register", "deploy")

    endpoint = sagemaker.describe_endpoint(EndpointName="xgboost-endpoint")
    assert "1-1-0-bbbbbbb" in endpoint["EndpointConfigName"]
    variant = endpoint["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 2 and variant["DesiredInstanceCount"] == 2
    update = moto.requests("UpdateEndpoint")[-1]
    assert update["RetainAllVariantProperties"] is True
    assert update["ExcludeRetainedVariantProperties"] == [{"VariantPropertyType": "DataCaptureConfig"}]
    # Data capture is excluded from what is retained, so the new config's 50% applies (moto's DescribeEndpoint
    # leaves the sampling percentage out: read the serving config).
    serving = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert serving["DataCaptureConfig"]["InitialSamplingPercentage"] == 50


def retag_tiny_image(tmp_path: Path, name: str, tag: str, content: str) -> None:
    """Replaces NAME:TAG with a different one-file image (a rebuild whose bits differ)."""
    file, archive = tmp_path / "release", tmp_path / f"{content}.tar"
    file.write_text(content)
    with tarfile.open(archive, "w") as tar:
        tar.add(file, arcname="release")
    subprocess.run(["docker", "import", str(archive), f"{name}:{tag}"], check=True, capture_output=True)


def test_pushing_a_tag_again_reuses_the_same_build_and_gives_a_different_build_its_own_tag(
        build_sh, tiny_images, moto, registry, execution_role, tmp_path):
    tag = "1.0.0-ccccccc"
    config = stage_config(tmp_path, families=("xgboost",))
    release(build_sh, tiny_images, config, tag, "push")
    first = state(build_sh, "dev", "images.json")["families"]["xgboost"]

    # CodeBuild retries the build: the same image is pushed again to the immutable repository.
    retry = release(build_sh, tiny_images, config, tag, "push")
    again = state(build_sh, "dev", "images.json")["families"]["xgboost"]
    assert again["digest"] == first["digest"] and again["tag"] == tag
    assert f"{registry.host}/xgboost-inference:{tag} already holds this build" in retry.stderr
    assert f"xgboost-inference:{tag}" not in registry.immutable.refused

    # A different build under the same tag: pushed under a tag of its own, never over the first.
    try:
        retag_tiny_image(tmp_path, TINY_IMAGES["xgboost"], tag, "rebuilt with other bits")
        build_sh("push", "register", DEPLOY_CONFIG=str(config), IMAGE_TAG=tag)
        rebuilt = state(build_sh, "dev", "images.json")["families"]["xgboost"]
        assert rebuilt["tag"].startswith(f"{tag}-") and rebuilt["digest"] != first["digest"]
        assert registry.manifest("xgboost-inference", tag) == 200
        assert registry.manifest("xgboost-inference", rebuilt["tag"]) == 200
        assert registry.immutable.refused == []
        models = moto.client("sagemaker").list_models()["Models"]
        assert [model["ModelName"] for model in models if rebuilt["tag"].replace(".", "-") in model["ModelName"]]
    finally:
        subprocess.run(["docker", "rmi", f"{TINY_IMAGES['xgboost']}:{tag}"], capture_output=True)


def test_the_stand_in_registry_refuses_to_overwrite_a_tag_as_ecr_does(build_sh, tiny_images, registry, tmp_path):
    """The stand-in itself: a plain docker push over an existing tag fails."""
    tag = "1.0.0-ddddddd"
    tiny_images(tag)
    target = f"{registry.host}/immutability-check:{tag}"
    env = build_sh.env
    subprocess.run(["docker", "login", "--username", "AWS", "--password-stdin", registry.host],
                   input="123456789012-auth-token", text=True, check=True, capture_output=True, env=env)
    try:
        subprocess.run(["docker", "tag", f"{TINY_IMAGES['xgboost']}:{tag}", target], check=True)
        assert subprocess.run(["docker", "push", target], capture_output=True, env=env).returncode == 0
        second = subprocess.run(["docker", "push", target], capture_output=True, text=True, env=env)
        assert second.returncode != 0 and "cannot be overwritten because the repository is immutable" in \
            second.stderr
    finally:
        subprocess.run(["docker", "rmi", target], capture_output=True)


def test_deploy_creates_the_alarms_and_the_no_traffic_alarm_can_fire(build_sh, tiny_images, moto, registry,
                                                                      execution_role, tmp_path):
    config = stage_config(tmp_path)
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register", "deploy")
    alarms = {alarm["AlarmName"]: alarm for alarm in
              moto.client("cloudwatch").describe_alarms()["MetricAlarms"]}

    no_traffic = alarms["xgboost-endpoint-no-invocations"]
    assert (no_traffic["MetricName"], no_traffic["Statistic"]) == ("Invocations", "Sum")
    assert no_traffic["ComparisonOperator"] == "LessThanThreshold" and no_traffic["Threshold"] == 1
    assert no_traffic["TreatMissingData"] == "breaching"  # no datapoint at all is no traffic
    assert {d["Name"]: d["Value"] for d in no_traffic["Dimensions"]} == {
        "EndpointName": "xgboost-endpoint", "VariantName": "AllTraffic"}

    errors = alarms["xgboost-endpoint-5xx-errors"]
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/SageMaker", "Invocation5XXErrors")
    latency = alarms["xgboost-endpoint-model-latency-p99"]
    assert latency["MetricName"] == "ModelLatency" and latency["ExtendedStatistic"] == "p99"
    assert "xgboost-endpoint-gpu-memory" not in alarms  # ml.m5: no GPU
    gpu = alarms["pat-endpoint-gpu-memory"]  # ml.g4dn
    assert (gpu["Namespace"], gpu["MetricName"]) == ("/aws/sagemaker/Endpoints", "GPUMemoryUtilization")
    assert set(alarms) == {f"{endpoint}-{kind}" for endpoint in ("xgboost-endpoint", "pat-endpoint")
                           for kind in ("no-invocations", "5xx-errors", "model-latency-p99")} | {
        "pat-endpoint-gpu-memory"}

    # The next release's blue/green update rolls back on the 5XX and latency alarms.
    release(build_sh, tiny_images, config, "1.1.0-bbbbbbb", "push", "register", "deploy")
    for update in moto.requests("UpdateEndpoint"):
        rollback = update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
        name = update["EndpointName"]
        assert {"AlarmName": f"{name}-5xx-errors"} in rollback
        assert {"AlarmName": f"{name}-model-latency-p99"} in rollback


def test_a_canary_update_of_a_one_instance_endpoint_shifts_all_at_once_with_the_bake_and_rollback(
        build_sh, tiny_images, moto, registry, execution_role, tmp_path):
    """prod: 10% canary. XGBoost runs 2 instances (a canary of 1 fits), PAT 1 (it does not)."""
    config = stage_config(tmp_path, stage="prod")
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register", "deploy")
    release(build_sh, tiny_images, config, "1.1.0-bbbbbbb", "push", "register", "deploy")

    routing = {update["EndpointName"]: update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
               ["TrafficRoutingConfiguration"] for update in moto.requests("UpdateEndpoint")}
    assert routing["xgboost-risk-endpoint"] == {
        "Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}
    assert routing["pat-endpoint"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}
    sagemaker = moto.client("sagemaker")
    assert "1-1-0-bbbbbbb" in sagemaker.describe_endpoint(EndpointName="pat-endpoint")["EndpointConfigName"]
