"""build.sh fails early and clearly, and leaves nothing half-registered."""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile

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
    role = f"arn:aws:iam::{ACCOUNT}:role/clinical-inference-dev-sagemaker"
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
@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_dry_run_refuses_the_cpu_built_pat_image_for_the_g4dn_before_any_push(moto, tmp_path, stage):
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    result = build_sh("--dry-run", "push", "register", DEPLOY_CONFIG=str(DEPLOY_CONFIGS / f"{stage}.json"),
                      IMAGE_TAG=TAG, PAT_TORCH_VARIANT="cpu", check=False)

    assert result.returncode != 0
    assert (f"families.pat: image pat-inference:{TAG}-cpu is a CPU build (torch 2.13.0+cpu, no CUDA) but "
            "ml.g4dn.xlarge is a GPU instance") in result.stderr
    assert "nothing was pushed" in result.stderr
    assert not any(line.startswith(("+ docker push", "+ docker tag", "+ aws ecr create-repository"))
                   for line in result.stderr.splitlines())
    assert moto.operations() == []


@pytest.mark.deploy
def test_dry_run_prints_every_aws_call_and_docker_command_and_sends_nothing(moto, tmp_path):
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    result = build_sh("--dry-run", "all", DEPLOY_CONFIG=str(DEPLOY_CONFIGS / "dev.json"), IMAGE_TAG=TAG,
                      PAT_TORCH_VARIANT="cuda")

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
    # The CUDA 12 build's labels (read from its lock: it is not built) choose the g4dn endpoint's host AMI.
    config = next(line for line in printed if line.startswith("+ aws sagemaker create-endpoint-config")
                  and "ml.g4dn.xlarge" in line)
    assert '"InferenceAmiVersion": "al2-ami-sagemaker-inference-gpu-2"' in config
    assert f"pat-inference:{TAG}-cuda is not built; its labels are read from " \
           "containers/pat/requirements-cuda.lock" in result.stderr
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
    env["PAT_TORCH_VARIANT"] = "cuda"  # the cpu build is refused on pat's g4dn before any push (check-images)
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
    assert '"Bucket": "<platform.ModelBucket>"' in printed  # the stack's output, not a typed name
    assert '"AlarmActions": ["<platform.AlertTopicArn>"]' in printed
    assert moto.operations() == [] and not (clone / "build").exists()


@pytest.mark.docker
def test_push_refuses_a_cpu_built_image_for_a_gpu_instance_before_pushing_anything(build_sh, moto, registry,
                                                                                    tmp_path):
    """A real run reads the local image's labels (docker image inspect) and stops before the first AWS call."""
    tag = "1.0.0-cpubuilt"  # pushed by no other test of this session's registry
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        (tmp_path / "release").write_text("cpu build\n")
        tar.add(tmp_path / "release", arcname="release")
    image = f"deploytest-pat-cpu:{tag}"
    subprocess.run(["docker", "import", "--change", "LABEL sagemaker-clinical-inference.torch.version=2.13.0+cpu",
                    "--change", "LABEL sagemaker-clinical-inference.cuda.version=none", str(archive), image],
                   check=True, capture_output=True)
    try:
        config = stage_config(tmp_path, families=("pat",))
        spec = json.loads(config.read_text())
        spec["families"]["pat"]["image"]["local_image"] = "deploytest-pat-cpu"
        config.write_text(json.dumps(spec))
        result = build_sh("push", "register", DEPLOY_CONFIG=str(config), IMAGE_TAG=tag, check=False)
    finally:
        subprocess.run(["docker", "rmi", image], capture_output=True)

    assert result.returncode != 0
    assert (f"families.pat: image pat-inference:{tag} is a CPU build (torch 2.13.0+cpu, no CUDA) but "
            "ml.g4dn.xlarge is a GPU instance") in result.stderr
    assert "nothing was pushed" in result.stderr and "docker push" not in result.stderr
    assert moto.operations() == [] and registry.manifest("pat-inference", tag) == 404
