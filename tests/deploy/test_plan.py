"""The stage configs and what they mean in SageMaker requests (no AWS, no registry)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

import jsonschema
import pytest

from .conftest import DEPLOY_CONFIGS, family_labels, platform_outputs

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import DeployError, alarms, artifacts, batch, config as configs, endpoints, gpu_hosts  # noqa: E402
from sagemaker_deploy import plan as plans  # noqa: E402
from sagemaker_deploy.aws import Aws  # noqa: E402

IMAGE = {"uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/xgboost-inference@sha256:" + "a" * 64,
         "registry": "123456789012.dkr.ecr.us-east-1.amazonaws.com", "tag": "0.1.0-abcdef0"}


SHA = "f" * 64


def filled(stage: str, **changes) -> dict:
    """The stage's config as register sees it after an upload: each model's source at its content-addressed URI."""
    config = configs.load(DEPLOY_CONFIGS / f"{stage}.json")
    config.update(changes)
    config = configs.fill(config, "123456789012", "us-east-1", stage, platform_outputs(stage))
    return artifacts.apply(config, {model["name"]: {"uri": f"s3://{config['model_bucket']}/models/{model['name']}/"
                                                           f"{SHA}/model.tar.gz"}
                                    for family in config["families"].values() for model in family["models"]})


def build(config: dict, image: dict = IMAGE) -> plans.Plan:
    return plans.build(config, {name: {"labels": family_labels(name), **image} for name in config["families"]})


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_shipped_configs_follow_the_schema_and_the_deployment_guides(stage):
    schema = json.loads(configs.SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    config = filled(stage)
    assert config["families"]["pat"]["instance_type"] == "ml.g4dn.xlarge"
    assert config["families"]["xgboost"]["instance_type"] == "ml.m5.large"
    assert [model["env_name"] for model in config["families"]["xgboost"]["models"]] == [
        "XGBOOST_RISK_ENDPOINT", "XGBOOST_TREATMENT_ENDPOINT", "XGBOOST_OUTCOME_ENDPOINT"]
    assert config["network_isolation"] is True and config["vpc"]["subnets"] and config["vpc"]["security_groups"]
    assert config["kms_key_arn"] == platform_outputs(stage)["KeyArn"]
    text = (DEPLOY_CONFIGS / f"{stage}.json").read_text()
    assert "123456789012" not in text and "secret" not in text.lower()  # accounts come from STS


def test_xgboost_is_three_single_model_endpoints_or_one_multi_model_endpoint_by_the_mode_field():
    single = build(filled("prod"))
    assert single.env() == {"XGBOOST_RISK_ENDPOINT": "xgboost-risk-endpoint",
                            "XGBOOST_TREATMENT_ENDPOINT": "xgboost-treatment-endpoint",
                            "XGBOOST_OUTCOME_ENDPOINT": "xgboost-outcome-endpoint", "PAT_ENDPOINT": "pat-endpoint"}
    assert [model.request["PrimaryContainer"]["Mode"] for model in single.models] == ["SingleModel"] * 4

    config = filled("prod")
    config["families"]["xgboost"]["mode"] = "MultiModel"
    multi = build(config)
    assert [endpoint.endpoint_name for endpoint in multi.endpoints] == ["xgboost-endpoint", "pat-endpoint"]
    container = multi.models[0].request["PrimaryContainer"]
    assert container["Mode"] == "MultiModel" and container["ModelDataUrl"].endswith("/models/")
    assert container["Environment"]["SAGEMAKER_MULTI_MODEL"] == "true"
    assert multi.env()["XGBOOST_TREATMENT_ENDPOINT"] == "xgboost-endpoint"
    assert multi.env()["XGBOOST_TREATMENT_TARGET_MODEL"] == f"xgboost-treatment/{SHA}/model.tar.gz"


def test_names_fit_63_characters_are_unique_per_version_and_stable_when_nothing_changed():
    config = filled("prod")
    first, again = build(config), build(config)
    later = build(config, {**IMAGE, "tag": "0.2.0-1234567"})
    names = [model.name for model in first.models] + [endpoint.config_name for endpoint in first.endpoints]
    assert names == [model.name for model in again.models] + [endpoint.config_name for endpoint in again.endpoints]
    later_names = [model.name for model in later.models] + [e.config_name for e in later.endpoints]
    assert not set(names) & set(later_names)
    assert len(set(names)) == len(names)
    long = plans.resource_name("x" * 80, "9.9.9-" + "f" * 40, {"a": 1})
    assert len(long) == 63 and long[0].isalnum() and long[-1].isalnum()
    for name in names + later_names + [long]:
        assert len(name) <= 63 and all(char.isalnum() or char == "-" for char in name)
    # A different image digest under the same tag is a different model.
    other = build(config, {**IMAGE, "uri": IMAGE["uri"][:-1] + "b"})
    assert other.models[0].name != first.models[0].name


def test_the_requests_carry_the_vpc_isolation_and_kms_except_where_the_instance_has_local_storage():
    plan = build(filled("prod"))
    for model in plan.models:
        assert model.request["EnableNetworkIsolation"] is True
        assert model.request["VpcConfig"]["SecurityGroupIds"] == ["sg-0fedcba9876543210"]
        assert "ImageConfig" not in model.request["PrimaryContainer"]  # ECR needs no VPC access mode
    by_type = {endpoint.instance_type: endpoint.config_request for endpoint in plan.endpoints}
    assert by_type["ml.m5.large"]["KmsKeyId"] == platform_outputs("prod")["KeyArn"]
    assert "KmsKeyId" not in by_type["ml.g4dn.xlarge"]
    assert by_type["ml.g4dn.xlarge"]["DataCaptureConfig"]["KmsKeyId"] == platform_outputs("prod")["KeyArn"]
    assert by_type["ml.g4dn.xlarge"]["DataCaptureConfig"]["InitialSamplingPercentage"] == 20
    assert [plans.has_local_storage(t) for t in ("ml.g4dn.xlarge", "ml.m5d.large", "ml.g5.2xlarge",
                                                  "ml.m5.large", "ml.c5.xlarge", "ml.p3.2xlarge")] == \
        [True, True, True, False, False, False]


def test_the_update_policy_is_blue_green_all_at_once_or_canary_with_alarm_rollback():
    assert endpoints.deployment_config({}) == {"BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
        "TerminationWaitInSeconds": 0}}
    canary = endpoints.deployment_config({**filled("prod")["deployment"], "rollback_alarms": ["p99-latency"]})
    assert canary["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["CanarySize"] == {
        "Type": "CAPACITY_PERCENT", "Value": 10}
    assert canary["BlueGreenUpdatePolicy"]["TerminationWaitInSeconds"] == 600
    assert canary["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "p99-latency"}]}


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_stage_bakes_long_enough_for_its_rollback_alarms_to_be_evaluated(stage):
    """SageMaker watches the AutoRollbackConfiguration alarms during the baking period only ("Use all at once
    traffic shifting", https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-all-at-once.html;
    "Auto-Rollback Configuration and Monitoring",
    https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html): a 0 s bake
    evaluates none. The bake must cover each rollback alarm's evaluation window."""
    config = filled(stage)
    rollback = [alarm for family in config["families"] for alarm in alarms.requests(config, family, "e", [])
                if alarm["AlarmName"].removeprefix("e-") in alarms.ROLLBACK_KINDS]
    window = max(alarm["Period"] * alarm["EvaluationPeriods"] for alarm in rollback)
    for count in (1, 2):  # a one-instance variant shifts all at once even where the stage asks for a canary
        policy = endpoints.deployment_config({**config["deployment"], "rollback_alarms": ["a"]}, count)
        assert policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["WaitIntervalInSeconds"] >= window
        assert policy["AutoRollbackConfiguration"] == {"Alarms": [{"AlarmName": "a"}]}


def test_a_bake_shorter_than_the_rollback_alarms_window_is_refused_in_one_line(tmp_path):
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    config["deployment"]["wait_seconds"] = 0
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    with pytest.raises(DeployError) as error:
        configs.load(path)
    assert "\n" not in str(error.value)
    assert "deployment.wait_seconds: 0 s is shorter than the rollback alarms' evaluation window (180 s)" in \
        str(error.value)


def test_a_pat_batch_job_on_a_gpu_instance_keeps_kms_on_the_output_only_and_sets_the_host_ami():
    config = filled("dev")
    request = batch.job_request(config, "pat", "pat-model", "pat", "s3://in/", "s3://out/", "v1",
                                now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
                                image_labels=family_labels("pat"))
    assert request["TransformJobName"] == "pat-20260102-030405"
    assert request["TransformResources"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1,
                                             "TransformAmiVersion": "al2-ami-sagemaker-batch-gpu-535"}
    assert request["TransformOutput"]["KmsKeyId"] == platform_outputs("dev")["KeyArn"]
    # PAT answers JSON (one prediction per line here), never CSV; XGBoost keeps the stage's CSV.
    assert request["TransformInput"]["ContentType"] == request["TransformOutput"]["Accept"] == "application/jsonlines"
    risk = batch.job_request(config, "xgboost", "risk-model", "risk", "s3://in/", "s3://out/", "v1",
                             image_labels=family_labels("xgboost"))
    assert risk["TransformInput"]["ContentType"] == risk["TransformOutput"]["Accept"] == "text/csv"
    assert "TransformAmiVersion" not in risk["TransformResources"]


@pytest.mark.parametrize("change, message", [
    (lambda c: c["families"]["xgboost"].update(instance_count=5), "outside the autoscaling bounds [1, 2]"),
    (lambda c: c["batch"].update(max_payload_mb=50, max_concurrent_transforms=3), "must not exceed 100"),
    (lambda c: c.update(kms_key_arn="arn:aws:kms:{regoin}:{account}:key/x"), "unknown placeholder {regoin}"),
    (lambda c: c["families"]["pat"]["models"][0].update(endpoint_name="xgboost-endpoint"),
     "endpoint name 'xgboost-endpoint' is also used by families.xgboost.multi_model_endpoint"),
    (lambda c: c["families"]["pat"]["models"][0].update(name="xgboost-risk"), "model name 'xgboost-risk'"),
    (lambda c: c["families"]["xgboost"].pop("multi_model_endpoint"), "'multi_model_endpoint' is a required"),
    (lambda c: c["families"]["xgboost"]["models"][1].update(environment={"A": "1"}), "share one container"),
    (lambda c: c["deployment"].update(traffic="CANARY"), "'canary_percent' is a required property"),
    (lambda c: c["vpc"].update(subnets=["subnet-1"]), "vpc.subnets.0"),
    # Metric dimensions the runtime would refuse at start-up.
    (lambda c: c["families"]["pat"]["environment"].update(SERVE_METRICS_MODEL="x"),
     "families.pat.environment.SERVE_METRICS_MODEL: register sets the metric variables"),
    (lambda c: c["families"]["pat"]["models"][0].update(metrics={"endpoint": ":pat"}),
     "families.pat.models.0.metrics.endpoint: ':pat' does not match"),
    (lambda c: c.update(metrics={"namespace": "AWS/SageMaker"}), "metrics.namespace: 'AWS/SageMaker' does not match"),
    (lambda c: c["families"]["pat"].update(instance_type="ml.m7z.xlarge"), "families.pat.instance_type: "
     "ml.m7z.xlarge is not a SageMaker endpoint instance type (botocore's ProductionVariantInstanceType)"),
    (lambda c: c["batch"].update(instance_type="ml.c5.large"), "batch.instance_type: ml.c5.large is not a "
     "SageMaker transform job instance type (botocore's TransformInstanceType)"),
])
def test_config_mistakes_are_reported_with_their_place(tmp_path, change, message):
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    change(config)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    with pytest.raises(DeployError) as error:
        configs.load(path)
    assert f"config {path} is invalid" in str(error.value) and message in str(error.value)


def test_a_dry_run_client_validates_and_prints_calls_without_credentials(monkeypatch, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    aws = Aws("us-east-1", dry_run=True)
    sagemaker = aws.client("sagemaker")
    assert aws.account() == "<account>"
    assert sagemaker.create_endpoint(EndpointName="e", EndpointConfigName="c") == {}
    assert "+ aws sagemaker create-endpoint --cli-input-json" in capsys.readouterr().err
    with pytest.raises(Exception, match="Parameter validation failed"):
        sagemaker.create_endpoint(EndpointName="e")


CUDA_12 = {gpu_hosts.TORCH_LABEL: "2.10.0", gpu_hosts.CUDA_LABEL: "12.8"}
CUDA_13 = {gpu_hosts.TORCH_LABEL: "2.13.0", gpu_hosts.CUDA_LABEL: "13.0"}
CPU = {gpu_hosts.TORCH_LABEL: "2.13.0+cpu", gpu_hosts.CUDA_LABEL: "none"}


def test_every_gpu_variant_gets_the_host_ami_that_runs_its_cuda_and_cpu_variants_none():
    for stage in ("dev", "prod"):
        variants = {endpoint.family: endpoint.config_request["ProductionVariants"][0]
                    for endpoint in build(filled(stage)).endpoints}
        assert variants["pat"]["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-2"
        assert "InferenceAmiVersion" not in variants["xgboost"]
    assert gpu_hosts.choose("ml.g4dn.xlarge", CUDA_12, gpu_hosts.BATCH, "i") == "al2-ami-sagemaker-batch-gpu-535"
    assert gpu_hosts.choose("ml.m5.large", CPU, gpu_hosts.ENDPOINT, "i") is None
    # An old CUDA 11 build runs on the 470 batch host.
    assert gpu_hosts.choose("ml.g4dn.xlarge", {gpu_hosts.CUDA_LABEL: "11.8"}, gpu_hosts.BATCH, "i") == \
        "al2-ami-sagemaker-batch-gpu-470"
    assert [plans.is_gpu(kind) for kind in ("ml.g4dn.xlarge", "ml.p3.2xlarge", "ml.m5.large", "ml.c7i.xlarge")] == [
        True, True, False, False]


def test_the_ami_table_has_the_api_references_figures():
    table = {ami.name: (ami.job, ami.driver, ami.cuda) for ami in gpu_hosts.AMIS}
    assert table == {
        "al2-ami-sagemaker-inference-gpu-2": ("endpoint", 535, "12.2"),
        "al2-ami-sagemaker-inference-gpu-2-1": ("endpoint", 535, "12.2"),
        "al2-ami-sagemaker-inference-gpu-3-1": ("endpoint", 550, "12.4"),
        "al2-ami-sagemaker-batch-gpu-470": ("batch", 470, "11.4"),
        "al2-ami-sagemaker-batch-gpu-535": ("batch", 535, "12.2"),
    }
    for ami in gpu_hosts.AMIS:  # each host runs its native CUDA, and no CUDA 13 build
        assert gpu_hosts.runs(ami, ami.cuda) and not gpu_hosts.runs(ami, "13.0")


@pytest.mark.parametrize("labels, message", [
    (CPU, "families.pat: image pat-inference:0.1.0-abcdef0 is a CPU build (torch 2.13.0+cpu, no CUDA) but "
          "ml.g4dn.xlarge is a GPU instance: build it with PAT_TORCH_VARIANT=cuda"),
    (CUDA_13, "families.pat: image pat-inference:0.1.0-abcdef0 (torch 2.13.0, CUDA 13.0) needs NVIDIA driver >= 580, "
              "which no SageMaker endpoint AMI for ml.g4dn.xlarge has (al2-ami-sagemaker-inference-gpu-2 (driver 535"),
    ({}, "families.pat: image pat-inference:0.1.0-abcdef0 has no sagemaker-clinical-inference.cuda.version label"),
])
def test_an_image_its_gpu_host_cannot_run_is_refused_in_one_line(labels, message):
    config = filled("dev")
    images = {"xgboost": {**IMAGE, "labels": family_labels("xgboost")}, "pat": {**IMAGE, "labels": labels}}
    with pytest.raises(DeployError) as error:
        plans.build(config, images)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    with pytest.raises(DeployError, match="families.pat: image pat-inference"):
        batch.job_request(config, "pat", "m", "pat", "s3://in/", "s3://out/", "v1", image_labels=labels)


def test_the_labels_come_from_the_locks(tmp_path):
    assert family_labels("pat") == {gpu_hosts.TORCH_LABEL: "2.10.0", gpu_hosts.CUDA_LABEL: "12.8"}
    assert gpu_hosts.lock_labels(DEPLOY_CONFIGS.parent / "pat/requirements-cpu.lock") == CPU
    assert family_labels("xgboost") == {gpu_hosts.CUDA_LABEL: "none"}
    # The CUDA 13 lock this branch replaced: torch 2.13.0 with nvidia-cuda-runtime 13.0.
    old = tmp_path / "requirements-cuda.lock"
    old.write_text("nvidia-cuda-runtime==13.0.96 \\\n    --hash=sha256:00\ntorch==2.13.0 \\\n    --hash=sha256:00\n")
    assert gpu_hosts.lock_labels(old) == CUDA_13
    old.write_text("torch==2.13.0 \\\n    --hash=sha256:00\n")
    with pytest.raises(DeployError, match="pins torch==2.13.0 but no nvidia-cuda-runtime wheel"):
        gpu_hosts.lock_labels(old)


def test_register_refuses_a_cpu_pat_image_on_a_gpu_instance_before_any_aws_call(tmp_path, monkeypatch, capsys):
    from sagemaker_deploy.__main__ import main
    # Any AWS call would fail on this endpoint with a different message.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    state = tmp_path / "dev"
    state.mkdir()
    images = {"xgboost": {**IMAGE, "labels": family_labels("xgboost")},
              "pat": {**IMAGE, "tag": "0.1.0-abcdef0-cpu", "labels": CPU}}
    (state / "images.json").write_text(json.dumps({"version": "0.1.0-abcdef0", "account": "123456789012",
                                                   "families": images}))
    status = main(["--config", str(DEPLOY_CONFIGS / "dev.json"), "--state-dir", str(tmp_path), "register"])
    assert status == 1
    assert "families.pat: image pat-inference:0.1.0-abcdef0-cpu is a CPU build" in capsys.readouterr().err


METRIC_VARIABLES = ("SERVE_METRICS_NAMESPACE", "SERVE_METRICS_ENDPOINT", "SERVE_METRICS_VARIANT", "SERVE_METRICS_MODEL")


def test_every_model_container_gets_its_endpoints_metric_dimensions_from_the_config():
    config = filled("prod")
    single = build(config)
    environments = {model.request["PrimaryContainer"]["ModelDataUrl"].split("/")[4]:
                    model.request["PrimaryContainer"]["Environment"] for model in single.models}
    assert {name: {key: env[key] for key in METRIC_VARIABLES} for name, env in environments.items()} == {
        name: {"SERVE_METRICS_NAMESPACE": "ClinicalInference", "SERVE_METRICS_ENDPOINT": f"{name}-endpoint",
               "SERVE_METRICS_VARIANT": "AllTraffic", "SERVE_METRICS_MODEL": name}
        for name in ("xgboost-risk", "xgboost-treatment", "xgboost-outcome", "pat")}
    # The variant dimension is the endpoint config's variant, the one SageMaker's own metrics carry.
    assert {endpoint.config_request["ProductionVariants"][0]["VariantName"] for endpoint in single.endpoints} == \
        {environments["pat"]["SERVE_METRICS_VARIANT"]}
    # The config's values win over the names; a multi-model endpoint's container names the endpoint.
    config["metrics"] = {"namespace": "Clinical/Dev"}
    config["families"]["xgboost"]["models"][0]["metrics"] = {"endpoint": "risk", "model": "risk-v2"}
    risk = build(config).models[0].request["PrimaryContainer"]["Environment"]
    assert (risk["SERVE_METRICS_NAMESPACE"], risk["SERVE_METRICS_ENDPOINT"], risk["SERVE_METRICS_MODEL"]) == \
        ("Clinical/Dev", "risk", "risk-v2")
    multi = build(filled("dev")).models[0].request["PrimaryContainer"]["Environment"]
    assert (multi["SERVE_METRICS_ENDPOINT"], multi["SERVE_METRICS_MODEL"]) == ("xgboost-endpoint", "xgboost")


def test_a_bogus_instance_type_is_refused_in_one_line_and_every_shipped_one_is_botocores(tmp_path):
    config = json.loads((DEPLOY_CONFIGS / "prod.json").read_text())
    config["families"]["xgboost"]["instance_type"] = "ml.bogus.xlarge"
    path = tmp_path / "prod.json"
    path.write_text(json.dumps(config))
    with pytest.raises(DeployError) as error:
        configs.load(path)
    assert "families.xgboost.instance_type: ml.bogus.xlarge is not a SageMaker endpoint instance type" in \
        str(error.value) and "\n" not in str(error.value)
    endpoint_types = configs.instance_types("ProductionVariantInstanceType")
    for name in ("dev", "prod", "dev-pat-cpu"):
        shipped = configs.load(DEPLOY_CONFIGS / f"{name}.json")
        assert all(family["instance_type"] in endpoint_types for family in shipped["families"].values())
    assert {"ml.m7i.large", "ml.m7i.xlarge", "ml.c7i.large", "ml.c7i.xlarge", "ml.g4dn.xlarge"} <= endpoint_types


def test_the_low_traffic_pat_variant_runs_the_cpu_image_in_bf16_on_an_m7i_and_the_gpu_checks_accept_it():
    """dev-pat-cpu.json: PAT alone on ml.m7i.large (AMX), SERVE_PRECISION=bf16, with the CPU build."""
    from models.pat.settings import read_precision

    config = configs.fill(configs.load(DEPLOY_CONFIGS / "dev-pat-cpu.json"), "123456789012", "us-east-1", "dev",
                          platform_outputs("dev"))
    config = artifacts.apply(config, {"pat": {"uri": f"s3://{config['model_bucket']}/models/pat/{SHA}/model.tar.gz"}})
    plan = plans.build(config, {"pat": {**IMAGE, "tag": "0.1.0-abcdef0-cpu", "labels": CPU}})
    [endpoint] = plan.endpoints
    variant = endpoint.config_request["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.m7i.large" and "InferenceAmiVersion" not in variant
    environment = plan.models[0].request["PrimaryContainer"]["Environment"]
    assert environment["SERVE_PRECISION"] == "bf16" and environment["SERVE_DEVICE"] == "cpu"
    job = batch.job_request(config, "pat", "m", "pat", "s3://in/", "s3://out/", "v1", image_labels=CPU)
    assert job["TransformResources"]["InstanceType"] == "ml.m7i.large"
    assert "TransformAmiVersion" not in job["TransformResources"]
    amx = {"amx_bf16", "avx512_bf16"}  # what an ml.m7i's Sapphire Rapids reports
    assert read_precision(environment, environment["SERVE_DEVICE"], amx, nvidia_driver=False) == "bf16"
    for stage in ("dev", "prod"):  # the GPU stages ask for fp16, which the T4 runs
        gpu_env = configs.load(DEPLOY_CONFIGS / f"{stage}.json")["families"]["pat"]["environment"]
        assert read_precision(gpu_env, gpu_env["SERVE_DEVICE"], set(), nvidia_driver=True) == "fp16"
