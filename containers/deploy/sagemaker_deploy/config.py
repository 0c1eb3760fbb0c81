"""The stage config: a JSON file checked against config.schema.json and a few rules the schema cannot express."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

from . import DeployError, alarms
from .artifacts import PREFIX as ARTIFACT_PREFIX

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config.schema.json"
PLACEHOLDER = re.compile(r"\{([a-z_]+|platform\.[A-Za-z0-9]+)\}")
PLACEHOLDERS = ("account", "region", "stage")
PLATFORM = "platform."  # {platform.NAME}: an output of the stage's platform stack (build.sh infra)
# S3 compares s3:x-amz-server-side-encryption-aws-kms-key-id with the key id exactly as the client sent it, and the
# buckets' policies name the key ARN: "Using server-side encryption with AWS KMS keys (SSE-KMS)", "Requiring
# SSE-KMS",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms
METRICS_VARIABLES = "SERVE_METRICS_"  # plan.metrics_environment sets them
KEY_ALIAS = re.compile(r"^arn:aws[a-z-]*:kms:[^:]*:[^:]*:alias/|^\{platform\.KeyAliasArn\}$")


def load(path: Path) -> dict:
    """The validated config (placeholders not yet filled); DeployError lists every problem found."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"config {path} does not exist: pass --config PATH or add containers/deploy/<stage>.json")
    except json.JSONDecodeError as error:
        raise DeployError(f"config {path} is not valid JSON: {error}") from None
    schema = json.loads(SCHEMA_PATH.read_text())
    problems = [f"{_where(error.absolute_path)}: {error.message}"
                for error in jsonschema.Draft202012Validator(schema).iter_errors(config)]
    if not problems:
        problems = _rule_problems(config)
    if problems:
        raise DeployError(f"config {path} is invalid (schema: {SCHEMA_PATH.name}), nothing was sent: "
                          + "; ".join(sorted(problems)))
    return config


def fill(config: Any, account: str, region: str, stage: str, outputs: dict[str, str] | None = None) -> Any:
    """The config with {account}, {region}, {stage} and {platform.NAME} (the stack's outputs) replaced in every
    string."""
    values = {"account": account, "region": region, "stage": stage,
              **{PLATFORM + name: value for name, value in (outputs or {}).items()}}
    missing = sorted(platform_outputs_used(config) - set(outputs or {}))
    if missing:
        raise DeployError(f"the platform stack has no output {', '.join(missing)} (it has: "
                          f"{', '.join(sorted(outputs or {})) or 'none'}): run ./build.sh infra again")
    return _fill(config, values)


def platform_outputs_used(config: Any) -> set[str]:
    """The names NAME of the {platform.NAME} placeholders in the config."""
    return {name[len(PLATFORM):] for _, text in _strings(config) for name in PLACEHOLDER.findall(text)
            if name.startswith(PLATFORM)}


def _fill(config: Any, values: dict[str, str]) -> Any:
    if isinstance(config, dict):
        return {key: _fill(value, values) for key, value in config.items()}
    if isinstance(config, list):
        return [_fill(value, values) for value in config]
    if isinstance(config, str):
        return PLACEHOLDER.sub(lambda match: values[match.group(1)], config)
    return config


def _where(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _strings(value: Any, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}.{index}")
    elif isinstance(value, str):
        yield path, value


@functools.cache
def instance_types(shape: str) -> frozenset[str]:
    """An instance type enum of botocore's SageMaker model: ProductionVariantInstanceType (endpoints:
    "ProductionVariant", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html) or
    TransformInstanceType (transform jobs: "TransformResources",
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TransformResources.html)."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_service_model("sagemaker").shape_for(shape).enum)


def _instance_type_problems(config: dict) -> list[str]:
    wanted = [(f"families.{name}.instance_type", family["instance_type"], "ProductionVariantInstanceType", "endpoint")
              for name, family in config["families"].items()]
    if "instance_type" in config.get("batch", {}):
        wanted.append(("batch.instance_type", config["batch"]["instance_type"], "TransformInstanceType",
                       "transform job"))
    return [f"{where}: {value} is not a SageMaker {job} instance type (botocore's {shape})"
            for where, value, shape, job in wanted if value not in instance_types(shape)]


def _rule_problems(config: dict) -> list[str]:
    from .stack import output_names

    known = [*PLACEHOLDERS, *(PLATFORM + name for name in output_names())]
    problems = [f"{path}: unknown placeholder {{{name}}} (known: {', '.join(known)})"
                for path, text in _strings(config) for name in PLACEHOLDER.findall(text) if name not in known
                and path != "$schema"]
    endpoints: dict[str, str] = {}
    env_names: dict[str, str] = {}
    model_names: dict[str, str] = {}

    def claim(seen: dict[str, str], value: str, where: str, what: str) -> None:
        if value in seen:
            problems.append(f"{where}: {what} '{value}' is also used by {seen[value]}")
        seen.setdefault(value, where)

    for family_name, family in config["families"].items():
        where = f"families.{family_name}"
        multi = family.get("multi_model_endpoint") if family["mode"] == "MultiModel" else None
        if multi:
            claim(endpoints, multi["endpoint_name"], f"{where}.multi_model_endpoint", "endpoint name")
            claim(model_names, multi["name"], f"{where}.multi_model_endpoint", "model name")
        for index, model in enumerate(family["models"]):
            model_where = f"{where}.models.{index}"
            claim(model_names, model["name"], model_where, "model name")
            claim(env_names, model["env_name"], model_where, "env_name")
            uploaded_prefix = f"s3://{config.get('model_bucket')}/{ARTIFACT_PREFIX}/"
            if "source" in model and "model_bucket" not in config:
                problems.append(f"{model_where}.source: upload needs \"model_bucket\" to put the artifact in")
            if multi is None:
                claim(endpoints, model["endpoint_name"], model_where, "endpoint name")
            elif "source" in model:
                if multi["model_data_prefix"] != uploaded_prefix:
                    problems.append(f"{where}.multi_model_endpoint.model_data_prefix: a multi-model endpoint loads "
                                    f"models from under its prefix, and upload puts them under {uploaded_prefix}")
            elif not model["model_data_url"].startswith(multi["model_data_prefix"]):
                problems.append(f"{model_where}.model_data_url: a multi-model endpoint loads models from under "
                                f"{multi['model_data_prefix']}; move the artifact there or change model_data_prefix")
            elif not model["model_data_url"].endswith(".tar.gz"):
                problems.append(f"{model_where}.model_data_url: multi-model artifacts must be .tar.gz files")
            if multi is not None and "environment" in model:
                problems.append(f"{model_where}.environment: the models of a multi-model endpoint share one "
                                "container; set the variables in the family's environment")
        for where_env, environment in [(f"{where}.environment", family.get("environment", {})), *(
                (f"{where}.models.{index}.environment", model.get("environment", {}))
                for index, model in enumerate(family["models"]))]:
            problems += [f"{where_env}.{name}: register sets the metric variables from the \"metrics\" blocks; "
                         "set the dimensions there" for name in environment if name.startswith(METRICS_VARIABLES)]
        scaling = family.get("autoscaling")
        if scaling and not scaling["min_capacity"] <= family["instance_count"] <= scaling["max_capacity"]:
            problems.append(f"{where}: instance_count {family['instance_count']} is outside the autoscaling bounds "
                            f"[{scaling['min_capacity']}, {scaling['max_capacity']}]")
    if KEY_ALIAS.match(config["kms_key_arn"]):
        problems.append(f"kms_key_arn: {config['kms_key_arn']} is an alias, and the buckets' policies deny a put "
                        "whose key id is not the key ARN: use {platform.KeyArn} (or arn:aws:kms:REGION:ACCOUNT:key/ID)")
    bake, window = config.get("deployment", {}).get("wait_seconds", 0), alarms.rollback_window_seconds(config)
    if bake < window:
        problems.append(f"deployment.wait_seconds: {bake} s is shorter than the rollback alarms' evaluation window "
                        f"({window} s), and SageMaker watches them only during the bake: set at least {window}")
    problems.extend(_instance_type_problems(config))
    batch = config.get("batch")
    if batch and batch.get("max_payload_mb", 6) * batch.get("max_concurrent_transforms", 1) > 100:
        problems.append("batch: max_payload_mb x max_concurrent_transforms must not exceed 100 (SageMaker's limit)")
    return problems
