"""Endpoints: create, or UpdateEndpoint (blue/green) to a new config; wait for InService; then autoscaling.

An update keeps the instance count and weight that autoscaling set (RetainAllVariantProperties) and takes only the
data capture settings from the new config; a canary is used where it fits the variant's current instance count.
"""

from __future__ import annotations

import math
import sys

from botocore.exceptions import WaiterError

from . import DeployError, say
from .aws import describe_or_none
from .plan import VARIANT, EndpointPlan

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
WAIT = {"Delay": 30, "MaxAttempts": 120}  # an hour: blue/green with a bake period takes a while
# Without it UpdateEndpoint resets instance count and weight to the new config's initial values.
RETAIN_VARIANTS = {"RetainAllVariantProperties": True,
                   "ExcludeRetainedVariantProperties": [{"VariantPropertyType": "DataCaptureConfig"}]}


def canary_fits(instance_count: int, percent: int) -> bool:
    """CanarySize must be at most 50% of the variant's instance count; a canary is at least one instance."""
    return math.ceil(instance_count * percent / 100) * 2 <= instance_count


def deployment_config(settings: dict, instance_count: int | None = None) -> dict:
    """UpdateEndpoint's DeploymentConfig: blue/green, all at once or canary, with optional alarm rollback.
    A canary that cannot fit instance_count becomes all at once with the same bake period (and rollback)."""
    canary = settings.get("traffic") == "CANARY"
    if canary and (instance_count is None or canary_fits(instance_count, settings["canary_percent"])):
        routing = {"Type": "CANARY", "WaitIntervalInSeconds": settings["wait_seconds"],
                   "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": settings["canary_percent"]}}
    else:
        # The bake: the rollback alarms are watched during it only ("Use all at once traffic shifting",
        # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-blue-green-all-at-once.html).
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": settings.get("wait_seconds", 0)}
    config: dict = {"BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": routing,
        "TerminationWaitInSeconds": settings.get("termination_wait_seconds", 0),
    }}
    if settings.get("rollback_alarms"):
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": name} for name in settings["rollback_alarms"]]}
    return config


def deploy(sagemaker, autoscaling, endpoint: EndpointPlan, settings: dict, tags: list[dict],
           dry_run: bool = False) -> str:
    """Brings one endpoint to its planned config; returns 'created', 'updated' or 'unchanged'."""
    name = endpoint.endpoint_name
    if describe_or_none(sagemaker.describe_endpoint_config, EndpointConfigName=endpoint.config_name) is None \
            and not dry_run:
        raise DeployError(f"endpoint config {endpoint.config_name} for {name} is not registered: "
                          "run ./build.sh register first")
    current = describe_or_none(sagemaker.describe_endpoint, EndpointName=name)
    if current is None:
        sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=endpoint.config_name, Tags=tags)
        action = "created"
    else:
        current = _settled(sagemaker, name, current, dry_run)
        if current["EndpointConfigName"] == endpoint.config_name:
            action = "unchanged"
        else:
            if _instance_type_of(sagemaker, current["EndpointConfigName"]) != endpoint.instance_type:
                # Application Auto Scaling rejects an update that changes the instance type of a scaled variant.
                _deregister_scaling(autoscaling, name)
            count = _instance_count(current)
            if settings.get("traffic") == "CANARY" and not canary_fits(count, settings["canary_percent"]):
                say(f"{name} runs {count} instance(s): a {settings['canary_percent']}% canary does not fit, so "
                    "traffic shifts all at once, with the same bake period and rollback alarms")
            sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=endpoint.config_name,
                                      DeploymentConfig=deployment_config(settings, count), **RETAIN_VARIANTS)
            action = "updated"
    say(f"{action} endpoint {name} -> {endpoint.config_name}; waiting for InService")
    if dry_run:
        print(f"+ aws sagemaker wait endpoint-in-service --endpoint-name {name}", file=sys.stderr)
    else:
        _wait_in_service(sagemaker, name, endpoint.config_name, was=None if current is None else current)
    if endpoint.autoscaling:
        _register_scaling(autoscaling, name, endpoint.autoscaling)
    return action


def _settled(sagemaker, name: str, current: dict, dry_run: bool) -> dict:
    status = current["EndpointStatus"]
    if status in ("Creating", "Updating", "SystemUpdating", "RollingBack") and not dry_run:
        say(f"endpoint {name} is {status}; waiting for it to settle before updating")
        _wait(sagemaker, name)
        current = sagemaker.describe_endpoint(EndpointName=name)
        status = current["EndpointStatus"]
    if status != "InService" and not dry_run:
        raise DeployError(f"endpoint {name} is {status} ({current.get('FailureReason', 'no reason given')}): "
                          f"it cannot be updated; delete it (aws sagemaker delete-endpoint --endpoint-name {name}) "
                          "and run ./build.sh deploy again")
    return current


def _wait(sagemaker, name: str) -> None:
    try:
        sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    except WaiterError:
        pass  # the caller reads the final state and explains it


def _wait_in_service(sagemaker, name: str, config_name: str, was: dict | None) -> None:
    _wait(sagemaker, name)
    final = sagemaker.describe_endpoint(EndpointName=name)
    status, serving = final["EndpointStatus"], final.get("EndpointConfigName")
    reason = final.get("FailureReason") or "no reason given"
    if status == "InService" and serving == config_name:
        return
    if was is not None and serving == was["EndpointConfigName"]:
        raise DeployError(f"the update of endpoint {name} to {config_name} failed ({reason}); the endpoint still "
                          f"serves the previous config {serving}. Fix the cause (the container's CloudWatch logs "
                          f"under /aws/sagemaker/Endpoints/{name}) and deploy again.")
    raise DeployError(f"endpoint {name} is {status} with config {serving}, not InService with {config_name} "
                      f"({reason}); see /aws/sagemaker/Endpoints/{name} in CloudWatch Logs")


def _instance_count(endpoint: dict) -> int:
    variants = endpoint.get("ProductionVariants") or [{}]
    return variants[0].get("CurrentInstanceCount") or variants[0].get("DesiredInstanceCount") or 1


def _instance_type_of(sagemaker, config_name: str) -> str | None:
    config = describe_or_none(sagemaker.describe_endpoint_config, EndpointConfigName=config_name)
    variants = (config or {}).get("ProductionVariants", [])
    return variants[0].get("InstanceType") if variants else None


def _resource_id(name: str) -> str:
    return f"endpoint/{name}/variant/{VARIANT}"


def _deregister_scaling(autoscaling, name: str) -> None:
    targets = autoscaling.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[_resource_id(name)],
                                                    ScalableDimension=SCALABLE_DIMENSION)["ScalableTargets"]
    if targets:
        autoscaling.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=_resource_id(name),
                                               ScalableDimension=SCALABLE_DIMENSION)


def _register_scaling(autoscaling, name: str, settings: dict) -> None:
    """Target tracking on invocations per instance; registering again updates the bounds and the target."""
    autoscaling.register_scalable_target(
        ServiceNamespace="sagemaker", ResourceId=_resource_id(name), ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=settings["min_capacity"], MaxCapacity=settings["max_capacity"])
    autoscaling.put_scaling_policy(
        PolicyName=f"{name}-invocations-per-instance",
        ServiceNamespace="sagemaker", ResourceId=_resource_id(name), ScalableDimension=SCALABLE_DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(settings["target_invocations_per_instance"]),
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
            "ScaleInCooldown": settings.get("scale_in_cooldown_seconds", 300),
            "ScaleOutCooldown": settings.get("scale_out_cooldown_seconds", 60),
        })
