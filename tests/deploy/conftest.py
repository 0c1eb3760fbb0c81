"""Deployment tests: build.sh against a real local registry (Debian's docker-registry) and moto's server.

The registry asks for the password that moto's GetAuthorizationToken hands out, so a push only works after the
real `aws ecr get-login-password | docker login` step. Tests marked `deploy` or `docker` fail in CI (CI=true)
when the registry program or the Docker engine is missing, and skip loudly elsewhere.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.conftest import IN_CI, engine_problem
from serve.process import free_port

from . import immutable_registry
from .immutable_registry import ImmutableTags

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_CONFIGS = ROOT / "containers" / "deploy"
ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
ECR_PASSWORD = f"{ACCOUNT}-auth-token"  # what moto's GetAuthorizationToken returns for ACCOUNT
SAGEMAKER_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
STARTUP_SECONDS = 30
MISSING: list[str] = []


def missing(reason: str) -> None:
    """Fails in CI, skips loudly elsewhere."""
    message = f"DEPLOYMENT TEST NOT RUN: {reason}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    MISSING.append(message)
    pytest.skip(message)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is not None and engine_problem() is not None:
        missing(f"no Docker engine ({engine_problem()}); start one with `./build.sh engine --install` as root")


def pytest_terminal_summary(terminalreporter) -> None:
    for message in sorted(set(MISSING)):
        terminalreporter.write_sep("!", message, red=True)


def wait_until(answers, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if answers():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --- moto ------------------------------------------------------------------------------------------------------


@dataclass
class Moto:
    url: str
    journal: Path

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10)
        self.journal.write_text("")

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def requests(self, operation: str) -> list[dict]:
        """Parameters of every request for one operation, as sent (moto drops some fields)."""
        entries = [json.loads(line) for line in self.journal.read_text().splitlines()]
        return [entry["params"] for entry in entries if entry["operation"] == operation]

    def operations(self) -> list[str]:
        return [json.loads(line)["operation"] for line in self.journal.read_text().splitlines()]


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Moto:
    work = tmp_path_factory.mktemp("moto")
    port, log = free_port(), work / "moto.log"
    journal = work / "journal.jsonl"
    journal.touch()
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("moto_server.py")),
                                    "--journal", str(journal), "--port", str(port)],
                                   stdout=output, stderr=subprocess.STDOUT, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(f"{url}/moto-api/data.json") == 200, "moto server", process, log)
        yield Moto(url, journal)
    finally:
        stop(process)


@pytest.fixture
def moto(moto_server) -> Moto:
    """The moto server, emptied before each test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def execution_role(moto) -> str:
    """The dev and prod configs' execution role, trusting SageMaker, in moto's IAM."""
    arns = {}
    for stage in ("dev", "prod"):
        role = moto.client("iam").create_role(RoleName=f"clinical-inference-{stage}-sagemaker",
                                              AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST))
        arns[stage] = role["Role"]["Arn"]
    moto.journal.write_text("")
    return arns


# --- registry --------------------------------------------------------------------------------------------------


@dataclass
class Registry:
    host: str
    immutable: ImmutableTags

    def manifest(self, repository: str, reference: str, method: str = "HEAD") -> int:
        """HEAD (or DELETE) a manifest by tag or digest; returns the HTTP status."""
        credentials = base64.b64encode(f"AWS:{ECR_PASSWORD}".encode()).decode()
        request = urllib.request.Request(f"http://{self.host}/v2/{repository}/manifests/{reference}", method=method,
                                         headers={"Accept": "*/*", "Authorization": f"Basic {credentials}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Registry:
    """Debian's docker-registry on 127.0.0.1, with its own config and an htpasswd for ECR's user and token,
    behind a proxy that refuses to overwrite a tag, as ECR's immutable repositories do (docker-registry and moto
    do not)."""
    program = shutil.which("docker-registry")
    if program is None:
        missing("Debian's docker-registry is not installed (apt-get install -y docker-registry)")
    import bcrypt

    work = tmp_path_factory.mktemp("registry")
    port, log = free_port(), work / "registry.log"
    (work / "htpasswd").write_text(f"AWS:{bcrypt.hashpw(ECR_PASSWORD.encode(), bcrypt.gensalt(5)).decode()}\n")
    (work / "config.yml").write_text(f"""\
version: 0.1
log: {{level: warn}}
storage:
  filesystem: {{rootdirectory: {work / "data"}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{port}
  secret: deployment-tests-only
auth:
  htpasswd: {{realm: deployment-tests, path: {work / "htpasswd"}}}
""")
    with open(log, "w") as output:
        process = subprocess.Popen([program, "serve", str(work / "config.yml")], stdout=output,
                                   stderr=subprocess.STDOUT)
    proxy = None
    try:
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/v2/") == 401, "docker-registry", process, log)
        immutable, proxy = immutable_registry.start(f"127.0.0.1:{port}", free_port())
        yield Registry(f"127.0.0.1:{proxy.server_port}", immutable)
    finally:
        if proxy is not None:
            proxy.shutdown()
            untag_all(f"127.0.0.1:{proxy.server_port}/")
        stop(process)


def untag_all(prefix: str) -> None:
    """Removes the local references to a registry's images (by tag or digest, never by image id)."""
    listing = subprocess.run(["docker", "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"],
                             capture_output=True, text=True)
    references = []
    for repository, tag, digest in (line.split() for line in listing.stdout.splitlines()):
        if repository.startswith(prefix):
            references.append(f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}")
    if references:
        subprocess.run(["docker", "rmi", *references], capture_output=True)


# --- images ----------------------------------------------------------------------------------------------------

TINY_IMAGES = {"xgboost": "deploytest-xgboost-cpu", "pat": "deploytest-pat-cuda12"}
# The lock each family's image is built from: the tiny images carry the labels build.sh gives the real ones.
FAMILY_LOCKS = {"xgboost": ROOT / "containers/xgboost/requirements.lock",
                "pat": ROOT / "containers/pat/requirements-cuda.lock"}


def family_labels(family: str) -> dict[str, str]:
    sys.path.insert(0, str(DEPLOY_CONFIGS))
    from sagemaker_deploy.gpu_hosts import lock_labels

    return lock_labels(FAMILY_LOCKS[family])


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory):
    """make(tag) imports a one-file image per family as deploytest-<family>:<tag>, distinct per tag, with the
    family's torch/CUDA labels; it stands in for the product images where building them would only slow the test
    down."""
    work = tmp_path_factory.mktemp("tiny-images")
    made: list[str] = []

    def make(tag: str) -> None:
        for family, name in TINY_IMAGES.items():
            labels = family_labels(family)
            existing = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}",
                                       f"{name}:{tag}"], capture_output=True, text=True)
            if existing.returncode == 0 and json.loads(existing.stdout) == labels:
                continue
            content = work / f"{family}-{tag}"
            content.write_text(f"{family} {tag}\n")
            archive = work / f"{family}-{tag}.tar"
            with tarfile.open(archive, "w") as tar:
                tar.add(content, arcname="release")
            changes = [arg for key, value in labels.items() for arg in ("--change", f"LABEL {key}={value}")]
            subprocess.run(["docker", "import", *changes, str(archive), f"{name}:{tag}"], check=True,
                           capture_output=True)
            made.append(f"{name}:{tag}")

    yield make
    if made:
        subprocess.run(["docker", "rmi", "--force", *made], capture_output=True)


STAND_IN_KEY_IDS = {"dev": "0d5e7a3c-1111-4a4a-9b9b-000000000001", "prod": "0d5e7a3c-2222-4a4a-9b9b-000000000002"}


def platform_outputs(stage: str) -> dict[str, str]:
    """What the platform stack outputs (the names in containers/infra/platform.yaml), for the tests that are not
    about the stack: stage_config writes them into the config instead of deploying the stack
    (test_platform_stack.py deploys it)."""
    return {"ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/clinical-inference-{stage}-sagemaker",
            "KeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{STAND_IN_KEY_IDS[stage]}",
            "KeyAliasArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/clinical-inference-{stage}",
            "ModelBucket": f"clinical-inference-{stage}-models-{ACCOUNT}-{REGION}",
            "CaptureBucket": f"clinical-inference-{stage}-capture-{ACCOUNT}-{REGION}",
            "BatchBucket": f"clinical-inference-{stage}-batch-{ACCOUNT}-{REGION}",
            "AlertTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:clinical-inference-{stage}-alerts"}


def stage_config(tmp_path: Path, stage: str = "dev", tiny: bool = True, families: tuple[str, ...] = ("xgboost", "pat"),
                 sources: dict[str, Path] | None = None, **changes) -> Path:
    """containers/deploy/<stage>.json as shipped, with the platform stack's outputs filled in and the tiny images
    (or only some families) swapped in. Each model's source directory becomes sources[name] when given, else an
    artifact already in S3 under the multi-model prefix (s3://MODEL_BUCKET/models/<name>.tar.gz), so that register
    needs no upload."""
    text = (DEPLOY_CONFIGS / f"{stage}.json").read_text()
    for name, value in platform_outputs(stage).items():
        text = text.replace(f"{{platform.{name}}}", value)
    config = json.loads(text)
    config["families"] = {name: family for name, family in config["families"].items() if name in families}
    for name, family in config["families"].items():
        if tiny:
            family["image"] = {"repository": family["image"]["repository"], "local_image": TINY_IMAGES[name]}
        for model in family["models"]:
            if sources is not None:
                model["source"] = str(sources[model["name"]])
            else:
                del model["source"]
                model["model_data_url"] = f"s3://{config['model_bucket']}/models/{model['name']}.tar.gz"
    config.update(changes)
    config.pop("$schema")
    path = tmp_path / f"{stage}.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class BuildSh:
    env: dict

    def __call__(self, *args: str, check: bool = True, timeout: float = 1800, **env: str):
        result = subprocess.run([str(ROOT / "build.sh"), *args], cwd=ROOT, env={**self.env, **env},
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"./build.sh {' '.join(args)} failed ({result.returncode}):\n"
                        f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}", pytrace=False)
        return result


def build_sh_env(moto: Moto, tmp_path: Path, registry_host: str) -> dict:
    """The environment of ./build.sh: the AWS CLI and boto3 pointed at moto, pushes to registry_host, the state
    and Docker's login in tmp_path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    (tmp_path / "docker").mkdir(exist_ok=True)
    env.update(
        AWS_ENDPOINT_URL=moto.url, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION, AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-aws-config"),
        DOCKER_CONFIG=str(tmp_path / "docker"), REGISTRY=registry_host, PYTHON=sys.executable,
        DEPLOY_STATE_DIR=str(tmp_path / "state"),
    )
    return env


@pytest.fixture
def build_sh(moto, registry, tmp_path) -> BuildSh:
    return BuildSh(build_sh_env(moto, tmp_path, registry.host))


# --- the recorder of AWS calls (the access check, test_access.py) ----------------------------------------------


@dataclass
class CallLog:
    """Every AWS call build.sh makes while its env is in effect: sagemaker_deploy's (--call-log, through
    DEPLOY_CALL_LOG) and the AWS CLI's (a plugin named in the CLI's config file), one JSON object a line."""
    path: Path

    @property
    def env(self) -> dict[str, str]:
        cli_config = self.path.with_suffix(".aws-config")
        cli_config.write_text("[plugins]\ncall_recorder = tests.deploy.access.cli_recorder\n")
        python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {"DEPLOY_CALL_LOG": str(self.path), "AWS_CONFIG_FILE": str(cli_config), "PYTHONPATH": python_path}

    def calls(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]


@pytest.fixture(scope="session")
def call_logs(tmp_path_factory):
    """make(name) -> a CallLog of its own."""
    work = tmp_path_factory.mktemp("calls")
    return lambda name: CallLog(work / f"{name}.jsonl")
