"""destroy: a stage's endpoints, their alarms and scaling targets, then the endpoint configs and models that
register and batch created for it (found by name and by the stage tag; an endpoint of the same name tagged with
another stage is left alone). It never touches the model bucket and its
artifacts, the KMS key, the DynamoDB tables, the log groups or the ECR repositories: those hold data or history
and belong to the stage's CloudFormation stack (./build.sh infra), not to a release.
"""

from __future__ import annotations

from botocore.exceptions import WaiterError

from . import DeployError, monitor, say
from .alarms import delete as delete_alarms
from .aws import describe_or_none
from .endpoints import SCALABLE_DIMENSION, _resource_id


def endpoint_names(config: dict) -> list[str]:
    names = []
    for family in config["families"].values():
        if family["mode"] == "MultiModel":
            names.append(family["multi_model_endpoint"]["endpoint_name"])
        else:
            names.extend(model["endpoint_name"] for model in family["models"])
    return names


def model_stems(config: dict) -> list[str]:
    """Model names start with the model's (or the multi-model endpoint's) name, config names with the endpoint's."""
    stems = [model["name"] for family in config["families"].values() for model in family["models"]]
    stems += [family["multi_model_endpoint"]["name"] for family in config["families"].values()
              if family["mode"] == "MultiModel"]
    return stems


def _ours(sagemaker, arn: str, stems: list[str], name: str, stage: str) -> bool:
    if not any(name.startswith(f"{stem}-") for stem in stems):
        return False
    tags = {tag["Key"]: tag["Value"] for tag in sagemaker.list_tags(ResourceArn=arn).get("Tags", [])}
    return tags.get("stage") == stage


def _listed(pages, key: str) -> list[dict]:
    return [item for page in pages for item in page.get(key, [])]


def destroy(sagemaker, autoscaling, cloudwatch, config: dict, dry_run: bool = False) -> dict:
    stage, removed = config["stage"], {"endpoints": [], "alarms": [], "endpoint_configs": [], "models": []}
    for name in endpoint_names(config):
        endpoint = describe_or_none(sagemaker.describe_endpoint, EndpointName=name)
        if endpoint is not None and not _ours(sagemaker, endpoint["EndpointArn"], [name], f"{name}-", stage):
            say(f"endpoint {name} is not tagged stage={stage}: left alone")
            continue
        resource = _resource_id(name)
        if autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource],
                                                 ScalableDimension=SCALABLE_DIMENSION).get("ScalableTargets"):
            autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                                   ScalableDimension=SCALABLE_DIMENSION)
        removed["alarms"] += delete_alarms(cloudwatch, name)
        removed["alarms"] += monitor.delete_alarms(cloudwatch, name)
        if endpoint is not None or dry_run:
            sagemaker.delete_endpoint(EndpointName=name)
            removed["endpoints"].append(name)
    for name in removed["endpoints"]:
        if dry_run:
            break
        try:  # a config must not be deleted while an endpoint still uses it
            sagemaker.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 15,
                                                                                           "MaxAttempts": 80})
        except WaiterError as error:
            raise DeployError(f"endpoint {name} was not deleted within 20 minutes ({error}); run destroy again") \
                from error
    endpoint_stems = endpoint_names(config)
    for item in _listed(sagemaker.get_paginator("list_endpoint_configs").paginate(), "EndpointConfigs"):
        if _ours(sagemaker, item["EndpointConfigArn"], endpoint_stems, item["EndpointConfigName"], stage):
            sagemaker.delete_endpoint_config(EndpointConfigName=item["EndpointConfigName"])
            removed["endpoint_configs"].append(item["EndpointConfigName"])
    for item in _listed(sagemaker.get_paginator("list_models").paginate(), "Models"):
        if _ours(sagemaker, item["ModelArn"], model_stems(config), item["ModelName"], stage):
            sagemaker.delete_model(ModelName=item["ModelName"])
            removed["models"].append(item["ModelName"])
    say(f"destroyed stage {stage}: " + ", ".join(f"{len(items)} {kind.replace('_', ' ')}"
                                                  for kind, items in removed.items())
        + "; kept the model bucket, the KMS key, the tables, the log groups and the ECR images")
    return removed
