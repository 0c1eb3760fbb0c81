"""build.sh fails early and clearly, and leaves nothing half-registered."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from .conftest import ACCOUNT, DEPLOY_CONFIGS, ROOT, BuildSh, build_sh_env, free_port, stage_config

TAG = "1.0.0-aaaaaaa"


@pytest.mark.deploy
@pytest.mark.docker
def test_a_missing_execution_role_stops_registration_before_anything_is_created(build_sh, tiny_images, moto,
                                                                                 registry, tmp_path):
    config = stage_config(tmp_path)
    tiny_images(TAG)
    result = build_sh("push", "register", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG, check=False)

    assert result.returncode != 0
    role = f"arn:aws:iam::{ACCOUNT}:role/clinical-inference-sagemaker-dev"
    assert f"the execution role {role} does not exist" in result.stderr
    assert "Nothing was registered" in result.stderr
    assert moto.requests("CreateModel") == [] and moto.requests("CreateEndpointConfig") == []
    assert moto.client("sagemaker").list_models()["Models"] == []


@pytest.mark.deploy
@pytest.mark.docker
def test_a_registry_that_is_down_fails_the_push_and_nothing_is_registered(build_sh, tiny_images, moto,
                                                                          execution_role, tmp_path):
    config = stage_config(tmp_path)
    tiny_images(TAG)
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = build_sh("push", "register", "deploy", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG, REGISTRY=down,
                      check=False)

    assert result.returncode != 0
    assert f"docker login to {down} failed" in result.stderr
    assert moto.requests("CreateModel") == [] and moto.requests("CreateEndpoint") == []
    assert moto.client("sagemaker").list_models()["Models"] == []


@pytest.mark.deploy
@pytest.mark.parametrize("change, message", [
    (lambda c: c["families"]["xgboost"].update(instance_type="m5.large"), "families.xgboost.instance_type: 'm5.large'"),
    (lambda c: c["families"]["pat"]["models"][0].update(env_name="XGBOOST_RISK_ENDPOINT"),
     "families.pat.models.0: env_name 'XGBOOST_RISK_ENDPOINT' is also used by families.xgboost.models.0"),
    (lambda c: c.pop("execution_role_arn"), "'execution_role_arn' is a required property"),
    (lambda c: c["families"]["xgboost"]["multi_model_endpoint"].update(model_data_prefix="s3://elsewhere/"),
     "a multi-model endpoint loads models from under"),
    (lambda c: c.pop("model_bucket"), "upload needs \"model_bucket\""),
])
def test_a_bad_config_fails_with_a_clear_error_before_any_aws_call_or_build(moto, tmp_path, change, message):
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    change(config)
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    result = build_sh("all", DEPLOY_CONFIG=str(path), check=False)

    assert result.returncode != 0
    assert f"config {path} is invalid" in result.stderr and message in result.stderr
    assert "docker build" not in result.stderr
    assert moto.operations() == []


@pytest.mark.deploy
def test_dry_run_prints_every_aws_call_and_docker_command_and_sends_nothing(moto, tmp_path):
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    result = build_sh("--dry-run", "all", DEPLOY_CONFIG=str(DEPLOY_CONFIGS / "dev.json"), IMAGE_TAG=TAG)

    assert moto.operations() == []
    assert not (tmp_path / "state").exists()
    printed = result.stderr.splitlines()
    for expected in ["+ docker build", "+ aws sts get-caller-identity", "+ aws ecr describe-repositories",
                     "+ aws ecr create-repository", f"+ aws ecr get-login-password --region us-east-1 | docker login",
                     "+ docker tag xgboost-inference:", "+ docker push",
                     "+ aws ecr get-authorization-token", "+ aws iam get-role", "+ aws sagemaker create-model",
                     "+ aws sagemaker create-endpoint-config", "+ aws sagemaker create-endpoint ",
                     "+ aws sagemaker wait endpoint-in-service",
                     "+ aws application-autoscaling register-scalable-target",
                     "+ aws application-autoscaling put-scaling-policy"]:
        assert any(line.startswith(expected) for line in printed), expected
    # The printed calls are AWS CLI commands that run as printed.
    create = next(line for line in printed if line.startswith("+ aws ecr create-repository"))
    cli = subprocess.run(shlex.split(create[2:]), env=build_sh.env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    repository = moto.client("ecr").describe_repositories()["repositories"][0]
    assert repository["repositoryName"] == "xgboost-inference" and repository["imageTagMutability"] == "IMMUTABLE"


@pytest.mark.deploy
def test_dry_run_all_on_a_fresh_clone_prints_the_guides_whole_plan(moto, tmp_path):
    """No trained models, no build/ directory: train, package, upload, build, push, register, alarms, deploy."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, capture_output=True)
    env = build_sh_env(moto, tmp_path, "127.0.0.1:1")
    result = subprocess.run([str(clone / "build.sh"), "--dry-run", "all"], cwd=clone, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stderr
    steps = ["-m models.xgboost.examples --out build/models/xgboost", "-m models.pat.examples --out build/models/pat",
             "+ package build/models/xgboost/risk/", "+ aws s3 head-object", "+ aws s3 put-object", "+ docker build",
             "+ aws ecr create-repository", "+ docker push", "+ aws sagemaker create-model",
             "+ aws cloudwatch put-metric-alarm", "+ aws sagemaker create-endpoint "]
    positions = [printed.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), dict(zip(steps, positions))
    assert '"ServerSideEncryption": "aws:kms"' in printed and "models/xgboost-risk/<sha256>/model.tar.gz" in printed
    assert moto.operations() == [] and not (clone / "build").exists()
