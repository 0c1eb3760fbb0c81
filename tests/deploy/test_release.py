"""build.sh push, register and deploy with one-file images, against the local registry and moto."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import ACCOUNT, REGION, TINY_IMAGES, platform_outputs, stage_config

pytestmark = [pytest.mark.deploy, pytest.mark.docker]


def state(build_sh, stage: str, name: str) -> dict:
    return json.loads((Path(build_sh.env["DEPLOY_STATE_DIR"]) / stage / name).read_text())


def release(build_sh, tiny_images, config, tag: str, *commands: str):
    tiny_images(tag)
    return build_sh(*commands, DEPLOY_CONFIG=str(config), IMAGE_TAG=tag)


def test_push_creates_the_repository_once_and_the_digest_pulls_back(build_sh, tiny_images, moto, registry,
                                                                     tmp_path):
    config = stage_config(tmp_path)
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push")

    create = moto.requests("CreateRepository")
    assert sorted(request["repositoryName"] for request in create) == ["pat-inference", "xgboost-inference"]
    for request in create:
        assert request["imageTagMutability"] == "IMMUTABLE"
        assert request["imageScanningConfiguration"] == {"scanOnPush": True}
        assert request["encryptionConfiguration"] == {
            "encryptionType": "KMS", "kmsKey": platform_outputs("dev")["KeyArn"]}
    assert moto.operations().count("GetAuthorizationToken") >= 2  # the CLI's login, then the digest read-back

    images = state(build_sh, "dev", "images.json")
    xgboost = images["families"]["xgboost"]
    assert xgboost["uri"] == f"{registry.host}/xgboost-inference@{xgboost['digest']}"
    assert images["families"]["pat"]["digest"] != xgboost["digest"]
    # The digest is the registry's: pull it back by digest, into an engine that does not have it.
    subprocess.run(["docker", "rmi", f"{TINY_IMAGES['xgboost']}:1.0.0-aaaaaaa",
                    f"{registry.host}/xgboost-inference:1.0.0-aaaaaaa"], check=True, capture_output=True)
    pull = subprocess.run(["docker", "pull", xgboost["uri"]], capture_output=True, text=True,
                          env=build_sh.env)
    assert pull.returncode == 0, pull.stderr
    subprocess.run(["docker", "rmi", xgboost["uri"]], capture_output=True)

    # A second push of the same stage finds the repositories and creates none.
    moto.journal.write_text("")
    release(build_sh, tiny_images, config, "1.0.1-bbbbbbb", "push")
    assert moto.requests("CreateRepository") == []
    assert len(moto.requests("DescribeRepositories")) == 2


def test_register_pins_models_to_the_digests_with_vpc_kms_and_isolation(build_sh, tiny_images, moto, registry,
                                                                         execution_role, tmp_path):
    """dev: XGBoost as one multi-model endpoint, PAT alone on a g4dn."""
    config = stage_config(tmp_path)
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register")
    images = state(build_sh, "dev", "images.json")["families"]
    sagemaker = moto.client("sagemaker")

    models = {model["ModelName"]: sagemaker.describe_model(ModelName=model["ModelName"])
              for model in sagemaker.list_models()["Models"]}
    assert len(models) == 2
    for name, model in models.items():
        assert len(name) <= 63 and "1-0-0-aaaaaaa" in name
        family = "xgboost" if name.startswith("xgboost") else "pat"
        container = model["PrimaryContainer"]
        assert container["Image"] == images[family]["uri"] and "@sha256:" in container["Image"]
        assert container["ImageConfig"] == {"RepositoryAccessMode": "Vpc"}  # not ECR: a private registry
        assert model["ExecutionRoleArn"] == execution_role["dev"]
        assert model["VpcConfig"] == {"Subnets": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
                                      "SecurityGroupIds": ["sg-0123456789abcdef0"]}
    xgboost = next(model for name, model in models.items() if name.startswith("xgboost"))["PrimaryContainer"]
    assert xgboost["Mode"] == "MultiModel"
    assert xgboost["ModelDataUrl"] == f"s3://clinical-inference-dev-models-{ACCOUNT}-{REGION}/models/"
    assert xgboost["Environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    # moto drops EnableNetworkIsolation: check what was sent.
    assert [request["EnableNetworkIsolation"] for request in moto.requests("CreateModel")] == [True, True]

    kms = platform_outputs("dev")["KeyArn"]
    configs = {config["EndpointConfigName"]: sagemaker.describe_endpoint_config(
        EndpointConfigName=config["EndpointConfigName"]) for config in sagemaker.list_endpoint_configs()["EndpointConfigs"]}
    assert len(configs) == 2
    for name, endpoint_config in configs.items():
        variant = endpoint_config["ProductionVariants"][0]
        assert len(name) <= 63 and variant["ModelName"] in models
        assert endpoint_config["DataCaptureConfig"]["KmsKeyId"] == kms
        capture_uri = endpoint_config["DataCaptureConfig"]["DestinationS3Uri"]
        assert capture_uri == f"s3://clinical-inference-dev-capture-{ACCOUNT}-{REGION}/"
        if variant["InstanceType"] == "ml.g4dn.xlarge":  # NVMe instance storage: SageMaker refuses a volume key
            assert "KmsKeyId" not in endpoint_config
        else:
            assert variant["InstanceType"] == "ml.m5.large" and endpoint_config["KmsKeyId"] == kms

    # The host AMI comes from the labels push read off the local images (docker image inspect).
    assert images["pat"]["labels"]["sagemaker-clinical-inference.cuda.version"] == "12.8"
    assert images["xgboost"]["labels"] == {"sagemaker-clinical-inference.cuda.version": "none"}
    sent = {request["ProductionVariants"][0]["InstanceType"]: request["ProductionVariants"][0]
            for request in moto.requests("CreateEndpointConfig")}
    assert sent["ml.g4dn.xlarge"]["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-2"
    assert "InferenceAmiVersion" not in sent["ml.m5.large"]

    env = (Path(build_sh.env["DEPLOY_STATE_DIR"]) / "dev" / "endpoints.env").read_text().splitlines()
    assert "XGBOOST_RISK_ENDPOINT=xgboost-endpoint" in env and "XGBOOST_RISK_TARGET_MODEL=xgboost-risk.tar.gz" in env
    assert "PAT_ENDPOINT=pat-endpoint" in env
    summary = state(build_sh, "dev", "registration.json")
    assert summary["version"] == "1.0.0-aaaaaaa" and all(model["created"] for model in summary["models"])

    # Nothing changed: registering again creates nothing.
    moto.journal.write_text("")
    build_sh("register", DEPLOY_CONFIG=str(config), IMAGE_TAG="1.0.0-aaaaaaa")
    assert moto.requests("CreateModel") == [] and moto.requests("CreateEndpointConfig") == []
    assert not any(model["created"] for model in state(build_sh, "dev", "registration.json")["models"])


def endpoint_configs(sagemaker) -> dict[str, str]:
    return {endpoint["EndpointName"]: sagemaker.describe_endpoint(EndpointName=endpoint["EndpointName"])
            ["EndpointConfigName"] for endpoint in sagemaker.list_endpoints()["Endpoints"]}


def test_deploy_creates_endpoints_then_a_new_tag_updates_them_blue_green(build_sh, tiny_images, moto, registry,
                                                                         execution_role, tmp_path):
    """prod: three single-model XGBoost endpoints and PAT, canary updates, autoscaling."""
    config = stage_config(tmp_path, stage="prod")
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register", "deploy")
    sagemaker, autoscaling = moto.client("sagemaker"), moto.client("application-autoscaling")
    first = endpoint_configs(sagemaker)
    assert sorted(first) == ["pat-endpoint", "xgboost-outcome-endpoint", "xgboost-risk-endpoint",
                             "xgboost-treatment-endpoint"]
    assert all(sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService" for name in first)
    targets = {target["ResourceId"]: target for target in
               autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]}
    assert targets["endpoint/xgboost-risk-endpoint/variant/AllTraffic"]["MinCapacity"] == 2
    assert targets["endpoint/xgboost-risk-endpoint/variant/AllTraffic"]["MaxCapacity"] == 6
    assert targets["endpoint/pat-endpoint/variant/AllTraffic"]["MaxCapacity"] == 4
    policies = autoscaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert len(policies) == 4
    for policy in policies:
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == \
            "SageMakerVariantInvocationsPerInstance"

    # The same release again changes nothing.
    moto.journal.write_text("")
    build_sh("deploy", DEPLOY_CONFIG=str(config), IMAGE_TAG="1.0.0-aaaaaaa")
    assert moto.requests("UpdateEndpoint") == [] and moto.requests("CreateEndpoint") == []

    # A new image tag: new models and configs, and every endpoint updated to them, blue/green with a canary.
    moto.journal.write_text("")
    release(build_sh, tiny_images, config, "1.1.0-bbbbbbb", "push", "register", "deploy")
    second = endpoint_configs(sagemaker)
    assert sorted(second) == sorted(first)
    assert all(second[name] != first[name] and "1-1-0-bbbbbbb" in second[name] for name in first)
    updates = moto.requests("UpdateEndpoint")
    assert sorted(update["EndpointName"] for update in updates) == sorted(first)
    assert updates[0]["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}}
    assert all(update["RetainAllVariantProperties"] is True for update in updates)
    new_images = state(build_sh, "prod", "images.json")["families"]
    risk_model = sagemaker.describe_endpoint_config(EndpointConfigName=second["xgboost-risk-endpoint"])
    image = sagemaker.describe_model(ModelName=risk_model["ProductionVariants"][0]["ModelName"])["PrimaryContainer"]
    assert image["Image"] == new_images["xgboost"]["uri"]
    assert state(build_sh, "prod", "deployment.json")["endpoints"][0]["action"] == "updated"


def test_a_failed_update_leaves_the_old_config_serving_and_fails_the_build(build_sh, tiny_images, moto, registry,
                                                                           execution_role, tmp_path):
    config = stage_config(tmp_path, families=("xgboost",))
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register", "deploy")
    sagemaker = moto.client("sagemaker")
    serving = endpoint_configs(sagemaker)["xgboost-endpoint"]

    release(build_sh, tiny_images, config, "1.1.0-bbbbbbb", "push", "register")
    broken = state(build_sh, "dev", "images.json")["families"]["xgboost"]
    assert registry.manifest("xgboost-inference", broken["digest"], method="DELETE") == 202  # the image is gone
    result = build_sh("deploy", DEPLOY_CONFIG=str(config), IMAGE_TAG="1.1.0-bbbbbbb", check=False)

    assert result.returncode != 0
    assert "the update of endpoint xgboost-endpoint" in result.stderr
    assert f"still serves the previous config {serving}" in result.stderr
    endpoint = sagemaker.describe_endpoint(EndpointName="xgboost-endpoint")
    assert endpoint["EndpointStatus"] == "InService" and endpoint["EndpointConfigName"] == serving
    assert len(moto.requests("UpdateEndpoint")) == 1
    assert len(moto.requests("RegisterScalableTarget")) == 1  # only the first, successful deploy got that far


def test_batch_scores_an_s3_prefix_with_the_model_alone_in_the_vpc(build_sh, tiny_images, moto, registry,
                                                                    execution_role, tmp_path):
    """dev serves XGBoost multi-model, so batch registers the risk model on its own first."""
    config = stage_config(tmp_path)
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register")
    result = build_sh("batch", "--model", "xgboost-risk", "--input", "s3://scoring-in/2026-11/", "--wait",
                      DEPLOY_CONFIG=str(config), IMAGE_TAG="1.0.0-aaaaaaa")
    job = json.loads(result.stdout.splitlines()[-1])
    assert job["status"] == "Completed"

    kms = platform_outputs("dev")["KeyArn"]
    request = moto.requests("CreateTransformJob")[0]
    assert request["ModelName"] == job["model"] and len(job["job"]) <= 63
    assert request["BatchStrategy"] == "MultiRecord" and request["MaxPayloadInMB"] == 6
    assert request["MaxConcurrentTransforms"] == 2
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformInput"]["DataSource"]["S3DataSource"] == {"S3DataType": "S3Prefix",
                                                                       "S3Uri": "s3://scoring-in/2026-11/"}
    assert request["TransformOutput"]["KmsKeyId"] == kms and request["TransformResources"]["VolumeKmsKeyId"] == kms
    assert request["TransformOutput"]["S3OutputPath"] == f"s3://clinical-inference-dev-batch-{ACCOUNT}-{REGION}/output/"

    model = moto.client("sagemaker").describe_model(ModelName=job["model"])
    images = state(build_sh, "dev", "images.json")["families"]
    assert model["PrimaryContainer"]["Mode"] == "SingleModel"
    assert model["PrimaryContainer"]["Image"] == images["xgboost"]["uri"]
    assert model["PrimaryContainer"]["ModelDataUrl"].endswith("/models/xgboost-risk.tar.gz")
    assert model["VpcConfig"]["Subnets"] == ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    assert moto.requests("CreateModel")[-1]["EnableNetworkIsolation"] is True

    unknown = build_sh("batch", "--model", "xgboost-unknown", DEPLOY_CONFIG=str(config), check=False)
    assert unknown.returncode != 0 and "no model 'xgboost-unknown'" in unknown.stderr
    assert "xgboost-risk" in unknown.stderr


def test_a_new_instance_type_deregisters_autoscaling_before_the_update_and_registers_it_after(
        build_sh, tiny_images, moto, registry, execution_role, tmp_path):
    """Application Auto Scaling refuses an update that changes a scaled variant's instance type."""
    config = stage_config(tmp_path, families=("xgboost",))
    release(build_sh, tiny_images, config, "1.0.0-aaaaaaa", "push", "register", "deploy")
    spec = json.loads(config.read_text())
    spec["families"]["xgboost"]["instance_type"] = "ml.m5.xlarge"
    config.write_text(json.dumps(spec))
    moto.journal.write_text("")
    build_sh("register", "deploy", DEPLOY_CONFIG=str(config), IMAGE_TAG="1.0.0-aaaaaaa")

    calls = [operation for operation in moto.operations() if operation in (
        "DeregisterScalableTarget", "UpdateEndpoint", "RegisterScalableTarget")]
    assert calls == ["DeregisterScalableTarget", "UpdateEndpoint", "RegisterScalableTarget"]
    sagemaker = moto.client("sagemaker")
    serving = sagemaker.describe_endpoint(EndpointName="xgboost-endpoint")["EndpointConfigName"]
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=serving)["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m5.xlarge"
    targets = moto.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")
    assert [target["ResourceId"] for target in targets["ScalableTargets"]] == [
        "endpoint/xgboost-endpoint/variant/AllTraffic"]
