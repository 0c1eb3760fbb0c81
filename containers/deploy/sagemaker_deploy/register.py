"""SageMaker models pinned to image digests and their endpoint configs; nothing is created twice."""

from __future__ import annotations

import json
from pathlib import Path

from botocore.exceptions import ClientError

from . import DeployError, say
from .aws import describe_or_none, error_code
from .plan import ModelPlan, Plan

TRUSTED_SERVICE = "sagemaker.amazonaws.com"


def check_role(iam, role_arn: str) -> None:
    """The execution role must exist and let SageMaker assume it; checked before anything is created."""
    name = role_arn.rsplit("/", 1)[-1]
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except ClientError as error:
        if error_code(error) == "NoSuchEntity":
            raise DeployError(f"the execution role {role_arn} does not exist: create it (trusting {TRUSTED_SERVICE}, "
                              "with access to the model bucket, the KMS key and the ECR repositories) or fix "
                              "execution_role_arn in the config. Nothing was registered.") from None
        raise
    trust = role.get("AssumeRolePolicyDocument", "")
    if TRUSTED_SERVICE not in (trust if isinstance(trust, str) else json.dumps(trust)):
        raise DeployError(f"the execution role {role_arn} does not trust {TRUSTED_SERVICE}: add it to the role's "
                          "trust policy. Nothing was registered.")


def ensure_model(sagemaker, model: ModelPlan) -> bool:
    if describe_or_none(sagemaker.describe_model, ModelName=model.name) is not None:
        return False
    sagemaker.create_model(**model.request)
    return True


def register(sagemaker, plan: Plan) -> dict:
    """Creates the missing models and endpoint configs; returns what exists now and what was created."""
    summary: dict = {"models": [], "endpoint_configs": []}
    for model in plan.models:
        created = ensure_model(sagemaker, model)
        container = model.request["PrimaryContainer"]
        summary["models"].append({"name": model.name, "family": model.family, "created": created,
                                  "image": container["Image"], "mode": container["Mode"],
                                  "model_data_url": container["ModelDataUrl"]})
        say(("created" if created else "unchanged") + f" model {model.name}")
    for endpoint in plan.endpoints:
        exists = describe_or_none(sagemaker.describe_endpoint_config, EndpointConfigName=endpoint.config_name)
        if exists is None:
            sagemaker.create_endpoint_config(**endpoint.config_request)
        summary["endpoint_configs"].append({"name": endpoint.config_name, "endpoint": endpoint.endpoint_name,
                                            "models": endpoint.models, "instance_type": endpoint.instance_type,
                                            "created": exists is None})
        say(("unchanged" if exists else "created") + f" endpoint config {endpoint.config_name}")
    return summary


def model_info_rows(filled: dict, images: dict, uploaded: dict) -> list[dict]:
    """The XGBoost models' rows of the model-info table (clinical_services reads them): model type, name, version,
    artifact URI and hash, image digest, features. Version and features come from the model's metadata.json when
    its source directory is at hand (the version otherwise from the artifact's hash)."""
    family = filled["families"].get("xgboost")
    if family is None:
        return []
    digest = images["families"]["xgboost"].get("digest") or images["families"]["xgboost"]["uri"].rpartition("@")[2]
    rows = []
    for model in family["models"]:
        metadata = _metadata(model.get("source"))
        sha256 = uploaded.get(model["name"], {}).get("sha256", "")
        version = str(metadata.get("model_version") or (f"sha256:{sha256[:16]}" if sha256 else "unknown"))
        rows.append({"model_type": model["name"].removeprefix("xgboost-"), "name": model["name"], "version": version,
                     "artifact_uri": model["model_data_url"], "artifact_sha256": sha256, "image_digest": digest,
                     "features": [str(name) for name in metadata.get("feature_names", [])]})
    return rows


def _metadata(source: str | None) -> dict:
    try:
        metadata = json.loads((Path(source) / "metadata.json").read_text()) if source else {}
    except (OSError, ValueError):
        return {}
    return metadata if isinstance(metadata, dict) else {}


def put_model_info(dynamodb, table: str, rows: list[dict]) -> None:
    """One row per model type, replaced by each registration."""
    for row in rows:
        item = {key: ({"L": [{"S": name} for name in value]} if isinstance(value, list) else {"S": value})
                for key, value in row.items()}
        dynamodb.put_item(TableName=table, Item=item)
        say(f"model-info {row['model_type']}: {row['name']} version {row['version']}")
