"""CloudWatch alarms per endpoint, put by deploy before the endpoint is created or updated:

- no traffic: Invocations Sum < 1 per period, missing data breaching (the guide's `Sum < 0` can never fire);
- Invocation5XXErrors Sum >= threshold per minute;
- ModelLatency p99 above the family's limit (the metric is in microseconds);
- GPUMemoryUtilization (instance metric) on GPU instance types.
The 5XX and latency alarms are the blue/green update's AutoRollbackConfiguration. PutMetricAlarm replaces an
alarm of the same name, so putting them again on every deploy keeps them in step with the config.
"""

from __future__ import annotations

from .plan import VARIANT, is_gpu

ENDPOINT_NAMESPACE = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
KINDS = ("no-invocations", "5xx-errors", "model-latency-p99", "gpu-memory")
ROLLBACK_KINDS = ("5xx-errors", "model-latency-p99")
DEFAULTS = {"no_traffic_minutes": 60, "errors_5xx_per_minute": 1, "model_latency_p99_ms": 1000,
            "gpu_memory_percent": 90}


def name(endpoint_name: str, kind: str) -> str:
    return f"{endpoint_name}-{kind}"


def requests(config: dict, family_name: str, endpoint_name: str, tags: list[dict]) -> list[dict]:
    """PutMetricAlarm parameters for one endpoint."""
    settings = {**DEFAULTS, **config.get("alarms", {})}
    family = config["families"][family_name]
    latency_ms = family.get("model_latency_p99_ms", settings["model_latency_p99_ms"])
    dimensions = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "VariantName", "Value": VARIANT}]
    actions = [settings["topic_arn"]] if settings.get("topic_arn") else []
    common = {"Dimensions": dimensions, "ActionsEnabled": bool(actions), "AlarmActions": actions,
              "OKActions": actions, "Tags": tags}
    alarms = [
        {"AlarmName": name(endpoint_name, "no-invocations"), "Namespace": ENDPOINT_NAMESPACE,
         "MetricName": "Invocations", "Statistic": "Sum", "Period": 60 * settings["no_traffic_minutes"],
         "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "LessThanThreshold",
         "TreatMissingData": "breaching",
         "AlarmDescription": f"{endpoint_name} received no request in {settings['no_traffic_minutes']} minutes"},
        {"AlarmName": name(endpoint_name, "5xx-errors"), "Namespace": ENDPOINT_NAMESPACE,
         "MetricName": "Invocation5XXErrors", "Statistic": "Sum", "Period": 60, "EvaluationPeriods": 1,
         "Threshold": float(settings["errors_5xx_per_minute"]), "ComparisonOperator": "GreaterThanOrEqualToThreshold",
         "TreatMissingData": "notBreaching",
         "AlarmDescription": f"{endpoint_name} answered with 5XX errors; rolls back a blue/green update"},
        {"AlarmName": name(endpoint_name, "model-latency-p99"), "Namespace": ENDPOINT_NAMESPACE,
         "MetricName": "ModelLatency", "ExtendedStatistic": "p99", "Period": 60, "EvaluationPeriods": 3,
         "DatapointsToAlarm": 2, "Threshold": latency_ms * 1000.0, "ComparisonOperator": "GreaterThanThreshold",
         "TreatMissingData": "notBreaching",
         "AlarmDescription": f"{endpoint_name} model latency p99 above {latency_ms} ms; rolls back a blue/green "
                             "update"},
    ]
    if is_gpu(family["instance_type"]):
        alarms.append(
            {"AlarmName": name(endpoint_name, "gpu-memory"), "Namespace": INSTANCE_NAMESPACE,
             "MetricName": "GPUMemoryUtilization", "Statistic": "Average", "Period": 60, "EvaluationPeriods": 5,
             "Threshold": float(settings["gpu_memory_percent"]), "ComparisonOperator": "GreaterThanThreshold",
             "TreatMissingData": "notBreaching",
             "AlarmDescription": f"{endpoint_name} GPU memory above {settings['gpu_memory_percent']}%"})
    return [{**alarm, **common} for alarm in alarms]


def rollback_window_seconds(config: dict) -> int:
    """How long the rollback alarms need to reach ALARM: a blue/green update watches them only during its bake
    ("Auto-Rollback Configuration and Monitoring",
    https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html)."""
    return max(alarm["Period"] * alarm["EvaluationPeriods"] for family in config["families"]
               for alarm in requests(config, family, "endpoint", [])
               if alarm["AlarmName"].endswith(ROLLBACK_KINDS))


def put(cloudwatch, config: dict, family_name: str, endpoint_name: str, tags: list[dict]) -> list[str]:
    """Creates or updates the endpoint's alarms; returns the names that roll back a blue/green update."""
    for request in requests(config, family_name, endpoint_name, tags):
        cloudwatch.put_metric_alarm(**request)
    return [name(endpoint_name, kind) for kind in ROLLBACK_KINDS]


def delete(cloudwatch, endpoint_name: str) -> list[str]:
    """Deletes the alarms deploy creates for the endpoint (by exact name); returns those that existed."""
    names = [name(endpoint_name, kind) for kind in KINDS]
    existing = [alarm["AlarmName"] for alarm in cloudwatch.describe_alarms(AlarmNames=names).get("MetricAlarms", [])]
    if existing:
        cloudwatch.delete_alarms(AlarmNames=existing)
    return existing
