"""Model artifacts (package, upload), the smoke test and destroy."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

from .conftest import ACCOUNT, DEPLOY_CONFIGS, REGION, BuildSh, build_sh_env, platform_outputs, stage_config

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import artifacts  # noqa: E402

BUCKET = platform_outputs("dev")["ModelBucket"]
KMS = platform_outputs("dev")["KeyArn"]
TAG = "1.0.0-aaaaaaa"
FEATURES = ["age", "bmi", "hba1c"]
CLASSES = {"xgboost-risk": [0, 1], "xgboost-treatment": ["lifestyle", "oral_agent", "insulin"],
           "xgboost-outcome": []}


def model_dir(root: Path, name: str, order: list[str] | None = None, mode: int = 0o600) -> Path:
    """A small model directory (the bytes do not matter to packaging), files written in the given order."""
    directory = root / name
    (directory / "extra").mkdir(parents=True, exist_ok=True)
    files = {"xgboost-model": b"\x00booster-bytes",
             "metadata.json": json.dumps({"feature_names": FEATURES, "class_labels": CLASSES.get(name, [])}).encode(),
             "extra/notes.txt": b"trained on synthetic data\n"}
    for relative in order or list(files):
        path = directory / relative
        path.write_bytes(files[relative])
        path.chmod(mode)
    return directory


def test_packaging_is_reproducible_byte_for_byte(tmp_path):
    first = model_dir(tmp_path / "a", "m")
    second = model_dir(tmp_path / "b", "m", order=["extra/notes.txt", "metadata.json", "xgboost-model"], mode=0o640)
    os.utime(second / "metadata.json", (1, 1))  # other mtimes, modes and creation order: the same archive
    one = artifacts.package("m", first, tmp_path / "out1")
    two = artifacts.package("m", second, tmp_path / "out2")
    assert one.archive.read_bytes() == two.archive.read_bytes() and one.sha256 == two.sha256
    assert one.key() == f"models/m/{one.sha256}/model.tar.gz"

    data = one.archive.read_bytes()
    assert data[4:8] == b"\0\0\0\0" and not data[3] & 0x08  # gzip: no timestamp, no file name
    with tarfile.open(one.archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["extra", "extra/notes.txt", "metadata.json", "xgboost-model"]
    for member in members:
        assert (member.mtime, member.uid, member.gid, member.uname, member.gname) == (0, 0, 0, "", "")
        assert member.mode == (0o755 if member.isdir() else 0o644)

    (second / "metadata.json").write_text("{}")  # a changed model: another key
    assert artifacts.package("m", second, tmp_path / "out3").sha256 != one.sha256


def sourced_config(tmp_path: Path, families=("xgboost",)) -> Path:
    names = ["xgboost-risk", "xgboost-treatment", "xgboost-outcome", "pat"]
    sources = {name: model_dir(tmp_path / "models", name) for name in names}
    return stage_config(tmp_path, families=families, sources=sources)


def write_images(build_sh: BuildSh, families=("xgboost",)) -> None:
    """What push records, for an image on a registry the SageMaker stand-in takes as pullable."""
    host = "registry.example.internal"
    images = {"version": TAG, "account": ACCOUNT, "region": REGION, "families": {
        family: {"repository": f"{family}-inference", "tag": TAG, "digest": "sha256:" + "a" * 64, "registry": host,
                 "uri": f"{host}/{family}-inference@sha256:{'a' * 64}"} for family in families}}
    state = Path(build_sh.env["DEPLOY_STATE_DIR"]) / "dev"
    state.mkdir(parents=True, exist_ok=True)
    (state / "images.json").write_text(json.dumps(images))


@pytest.mark.deploy
def test_upload_puts_each_artifact_once_under_its_content_address_with_kms_and_register_uses_it(
        moto, execution_role, tmp_path):
    moto.client("s3").create_bucket(Bucket=BUCKET)
    config = sourced_config(tmp_path)
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    build_sh("upload", DEPLOY_CONFIG=str(config))
    uploaded = json.loads((Path(build_sh.env["DEPLOY_STATE_DIR"]) / "dev" / "artifacts.json").read_text())
    s3 = moto.client("s3")
    for name in ("xgboost-risk", "xgboost-treatment", "xgboost-outcome"):
        # The documented layout, models/<name>/<sha256 of the archive>/model.tar.gz, from the archive that package
        # wrote, read back with tarfile: the model directory's files at its root.
        archive = Path(build_sh.env["DEPLOY_STATE_DIR"]) / "dev" / "artifacts" / name / "model.tar.gz"
        with tarfile.open(archive) as tar:
            members = {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}
        source = tmp_path / "models" / name
        assert members == {path.relative_to(source).as_posix(): path.read_bytes()
                           for path in source.rglob("*") if path.is_file()}
        key = f"models/{name}/{hashlib.sha256(archive.read_bytes()).hexdigest()}/model.tar.gz"
        assert uploaded[name]["uri"] == f"s3://{BUCKET}/{key}"
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == KMS
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == archive.read_bytes()

    again = build_sh("upload", DEPLOY_CONFIG=str(config))
    assert again.stderr.count("already present, not uploaded") == 3

    write_images(build_sh)
    build_sh("register", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG)
    model = moto.requests("CreateModel")[0]["PrimaryContainer"]
    assert model["Mode"] == "MultiModel" and model["ModelDataUrl"] == f"s3://{BUCKET}/models/"
    env = (Path(build_sh.env["DEPLOY_STATE_DIR"]) / "dev" / "endpoints.env").read_text()
    assert f"XGBOOST_RISK_TARGET_MODEL={uploaded['xgboost-risk']['uri'][len(f's3://{BUCKET}/models/'):]}" in env


def queue_answers(moto, bodies: list[dict]) -> None:
    results = {"results": [{"Body": json.dumps(body), "ContentType": "application/json"} for body in bodies]}
    request = urllib.request.Request(f"{moto.url}/moto-api/static/sagemaker/endpoint-results",
                                     data=json.dumps(results).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


@pytest.mark.deploy
def test_smoke_invokes_each_model_once_and_checks_the_answer_shape(
        moto, execution_role, tmp_path):
    """moto answers invocations with canned bodies: this proves the routing (one call per model, the
    multi-model target) and that a wrong shape fails; test_smoke_shapes.py proves the real handler's answers pass."""
    moto.client("s3").create_bucket(Bucket=BUCKET)
    config = sourced_config(tmp_path)
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    write_images(build_sh)
    build_sh("upload", "register", "deploy", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG)

    right = [{"predictions": [{"score": 0.2}, {"score": 0.7}]},
             {"predictions": [{"score": [0.2, 0.3, 0.5]}, {"score": [0.1, 0.1, 0.8]}]},
             {"predictions": [{"score": 4.5}, {"score": 3.0}]}]
    queue_answers(moto, right)
    result = build_sh("smoke", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG)
    assert result.stderr.count("answer has the expected shape") == 3
    for name in ("xgboost-risk", "xgboost-treatment", "xgboost-outcome"):
        assert f"xgboost-endpoint (TargetModel {name}/" in result.stderr

    moto.reset()  # moto repeats an answer for the same request: start afresh, the artifacts uploaded again
    moto.client("s3").create_bucket(Bucket=BUCKET)
    build_sh("upload", DEPLOY_CONFIG=str(config))
    queue_answers(moto, [right[0], {"predictions": [{"score": [0.2, 0.8]}, {"score": [0.1, 0.9]}]}, right[2]])
    wrong = build_sh("smoke", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG, check=False)
    assert wrong.returncode != 0
    assert "does not hold one score per class (3 classes)" in wrong.stderr


@pytest.mark.deploy
def test_destroy_removes_the_stages_endpoints_configs_models_and_alarms_and_nothing_else(
        moto, execution_role, tmp_path):
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    config = sourced_config(tmp_path)
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    write_images(build_sh)
    build_sh("upload", "register", "deploy", DEPLOY_CONFIG=str(config), IMAGE_TAG=TAG)
    sagemaker, cloudwatch = moto.client("sagemaker"), moto.client("cloudwatch")
    sagemaker.create_model(ModelName="someone-elses-model", ExecutionRoleArn=execution_role["dev"],
                           PrimaryContainer={"Image": "registry.example.internal/other@sha256:" + "b" * 64})
    assert cloudwatch.describe_alarms()["MetricAlarms"]
    # An endpoint that the config names but another stage owns (its stage tag says so) stays.
    sagemaker.create_endpoint_config(EndpointConfigName="pat-endpoint-prod", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "someone-elses-model", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    sagemaker.create_endpoint(EndpointName="pat-endpoint", EndpointConfigName="pat-endpoint-prod",
                              Tags=[{"Key": "stage", "Value": "prod"}])
    config = sourced_config(tmp_path / "both", families=("xgboost", "pat"))

    result = build_sh("destroy", DEPLOY_CONFIG=str(config))
    assert "endpoint pat-endpoint is not tagged stage=dev: left alone" in result.stderr
    assert [e["EndpointName"] for e in sagemaker.list_endpoints()["Endpoints"]] == ["pat-endpoint"]
    assert [c["EndpointConfigName"] for c in sagemaker.list_endpoint_configs()["EndpointConfigs"]] == [
        "pat-endpoint-prod"]
    assert [model["ModelName"] for model in sagemaker.list_models()["Models"]] == ["someone-elses-model"]
    assert cloudwatch.describe_alarms()["MetricAlarms"] == []
    assert moto.client("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert len(s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == 3  # the artifacts stay
    build_sh("destroy", DEPLOY_CONFIG=str(config))  # again: nothing left to do, no error
