"""What a config plus the pushed image digests mean in SageMaker requests: models, endpoint configs, endpoints.

Pure functions, no AWS calls. Resource names end in a hash of the version and of the request, so they are
unique per version, stay within SageMaker's 63 characters, and are identical when nothing changed (which is
what makes registration idempotent).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from . import DeployError
from .gpu_hosts import BATCH, ENDPOINT, choose, is_gpu  # noqa: F401  (is_gpu: plans.is_gpu)

MAX_NAME = 63
HASH_LENGTH = 10
VARIANT = "AllTraffic"
METRICS_NAMESPACE = "ClinicalInference"  # the runtime's default too
CAPTURE_CONTENT_TYPES = {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}
# Instance types with local NVMe storage (hardware-encrypted) reject a KMS key for the ML storage volume.
_LOCAL_STORAGE_FAMILIES = {"g5", "g6", "g6e", "gr6", "p5", "p5e", "p5en", "trn1", "trn1n"}
_ECR_HOST = re.compile(r"^[^./]+\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


@dataclass(frozen=True)
class ModelPlan:
    name: str
    family: str
    request: dict  # CreateModel parameters


@dataclass(frozen=True)
class EndpointPlan:
    endpoint_name: str
    config_name: str
    family: str
    instance_type: str
    config_request: dict  # CreateEndpointConfig parameters
    autoscaling: dict | None
    models: list[str]
    env: dict[str, str] = field(default_factory=dict)  # what client apps set: XGBOOST_RISK_ENDPOINT=...


@dataclass(frozen=True)
class Plan:
    models: list[ModelPlan]
    endpoints: list[EndpointPlan]

    def env(self) -> dict[str, str]:
        return {key: value for endpoint in self.endpoints for key, value in endpoint.env.items()}


def resource_name(stem: str, version: str, request: dict) -> str:
    """`<stem>-<version>-<hash>`, the readable part shortened so that the whole fits in 63 characters."""
    digest = hashlib.sha256(json.dumps([version, request], sort_keys=True).encode()).hexdigest()[:HASH_LENGTH]
    readable = re.sub(r"[^a-zA-Z0-9]+", "-", f"{stem}-{version}").strip("-")
    return f"{readable[:MAX_NAME - HASH_LENGTH - 1].rstrip('-')}-{digest}"


def target_model_env_name(model: dict) -> str:
    """XGBOOST_RISK_ENDPOINT -> XGBOOST_RISK_TARGET_MODEL (multi-model endpoints)."""
    return re.sub(r"(_ENDPOINT)?$", "_TARGET_MODEL", model["env_name"], count=1)


def has_local_storage(instance_type: str) -> bool:
    """ml.g4dn.xlarge, ml.m5d.large, ml.g5.2xlarge: NVMe instance storage, so no KmsKeyId for the volume."""
    family = instance_type.split(".")[1]
    return family in _LOCAL_STORAGE_FAMILIES or re.fullmatch(r"[a-z]+[0-9]+[a-z]*d[a-z]*", family) is not None


def is_ecr(registry: str) -> bool:
    return _ECR_HOST.match(registry) is not None


def tags(config: dict, version: str | None = None, **extra: str) -> list[dict]:
    values = {**config.get("tags", {}), "stage": config["stage"], **extra}
    if version:
        values["version"] = version
    return [{"Key": key, "Value": value} for key, value in sorted(values.items())]


def build(config: dict, images: dict) -> Plan:
    """The plan for a filled-in config; images maps family -> {"uri": "host/repo@sha256:...", "registry": host,
    "tag": version tag, "labels": the image's labels}. Each family's names carry its image's tag."""
    models: list[ModelPlan] = []
    endpoints: list[EndpointPlan] = []
    for family_name, family in config["families"].items():
        version = images[family_name]["tag"]
        if family["mode"] == "MultiModel":
            multi = family["multi_model_endpoint"]
            model = _model(config, family_name, images[family_name], version, multi["name"],
                           multi["model_data_prefix"], {"SAGEMAKER_MULTI_MODEL": "true",
                                                        **metrics_environment(config, multi)}, "MultiModel")
            env = {}
            for member in family["models"]:
                env[member["env_name"]] = multi["endpoint_name"]
                env[target_model_env_name(member)] = member["model_data_url"][len(multi["model_data_prefix"]):]
            models.append(model)
            endpoints.append(_endpoint(config, family_name, model, multi["endpoint_name"], version, env, images))
        else:
            for member in family["models"]:
                model = single_model(config, family_name, member, images[family_name])
                models.append(model)
                endpoints.append(_endpoint(config, family_name, model, member["endpoint_name"], version,
                                           {member["env_name"]: member["endpoint_name"]}, images))
    return Plan(models, endpoints)


def single_model(config: dict, family_name: str, member: dict, image: dict) -> ModelPlan:
    """One model served alone: a SingleModel endpoint, or a batch transform job."""
    return _model(config, family_name, image, image["tag"], member["name"], member["model_data_url"],
                  {**member.get("environment", {}), **metrics_environment(config, member)}, "SingleModel")


def metrics_environment(config: dict, served: dict) -> dict[str, str]:
    """The runtime's metric dimensions for one endpoint's container (a SingleModel member or a multi-model
    endpoint): the config's `metrics` values, by default the endpoint's and the model's names."""
    dimensions = served.get("metrics", {})
    return {"SERVE_METRICS_NAMESPACE": config.get("metrics", {}).get("namespace", METRICS_NAMESPACE),
            "SERVE_METRICS_ENDPOINT": dimensions.get("endpoint", served["endpoint_name"]),
            "SERVE_METRICS_VARIANT": VARIANT,
            "SERVE_METRICS_MODEL": dimensions.get("model", served["name"])}


def find_member(config: dict, model_name: str) -> tuple[str, dict]:
    for family_name, family in config["families"].items():
        for member in family["models"]:
            if member["name"] == model_name:
                return family_name, member
    raise KeyError(model_name)


def _model(config: dict, family_name: str, image: dict, version: str, stem: str, model_data_url: str,
           environment: dict, mode: str) -> ModelPlan:
    family = config["families"][family_name]
    container = {
        "Image": image["uri"],
        "Mode": mode,
        "ModelDataUrl": model_data_url,
        "Environment": {**family.get("environment", {}), **environment},
    }
    if not is_ecr(image["registry"]):
        container["ImageConfig"] = {"RepositoryAccessMode": "Vpc"}  # a private registry, reached through the VPC
    request = {
        "ExecutionRoleArn": config["execution_role_arn"],
        "PrimaryContainer": container,
        "VpcConfig": {"Subnets": config["vpc"]["subnets"], "SecurityGroupIds": config["vpc"]["security_groups"]},
        "EnableNetworkIsolation": config["network_isolation"],
    }
    name = resource_name(stem, version, request)
    return ModelPlan(name, family_name, {"ModelName": name, **request,
                                         "Tags": tags(config, version, family=family_name)})


def host_ami(config: dict, family_name: str, images: dict, job: str, instance_type: str | None = None) -> str | None:
    """The GPU host AMI for a family's image (None on a CPU instance); DeployError when the image cannot run there."""
    family, image = config["families"][family_name], images[family_name]
    return choose(instance_type or family["instance_type"], image.get("labels"), job,
                  f"families.{family_name}: image {family['image']['repository']}:{image['tag']}")


def check_hosts(config: dict, images: dict) -> list[str]:
    """Every family's image against the hosts of its endpoints and (with a batch section) its transform jobs,
    before any AWS call; DeployError for the first that cannot run. Returns what was chosen, one line each."""
    chosen = []
    for name, family in config["families"].items():
        jobs = [(ENDPOINT, family["instance_type"])]
        if "batch" in config:
            jobs.append((BATCH, config["batch"].get("instance_type", family["instance_type"])))
        for job, instance_type in jobs:
            ami = host_ami(config, name, images, job, instance_type)
            chosen.append(f"{name} {job} on {instance_type}: {ami or 'CPU'}")
    return chosen


def _endpoint(config: dict, family_name: str, model: ModelPlan, endpoint_name: str, version: str,
              env: dict[str, str], images: dict) -> EndpointPlan:
    family = config["families"][family_name]
    variant = {
        "VariantName": VARIANT,
        "ModelName": model.name,
        "InstanceType": family["instance_type"],
        "InitialInstanceCount": family["instance_count"],
        "InitialVariantWeight": 1.0,
    }
    ami = host_ami(config, family_name, images, ENDPOINT)
    if ami:
        variant["InferenceAmiVersion"] = ami
    request: dict = {"ProductionVariants": [variant]}
    if not has_local_storage(family["instance_type"]):
        request["KmsKeyId"] = config["kms_key_arn"]
    capture = config.get("data_capture")
    if capture:
        request["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": capture["sampling_percentage"],
            "DestinationS3Uri": capture["s3_uri"],
            "KmsKeyId": config["kms_key_arn"],
            "CaptureOptions": [{"CaptureMode": mode} for mode in capture.get("capture", ["Input", "Output"])],
            "CaptureContentTypeHeader": CAPTURE_CONTENT_TYPES,
        }
    name = resource_name(endpoint_name, version, request)
    return EndpointPlan(
        endpoint_name=endpoint_name,
        config_name=name,
        family=family_name,
        instance_type=family["instance_type"],
        config_request={"EndpointConfigName": name, **request,
                        "Tags": tags(config, version, family=family_name, endpoint=endpoint_name)},
        autoscaling=family.get("autoscaling"),
        models=[model.name],
        env=env,
    )
