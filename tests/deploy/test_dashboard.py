"""The stage's dashboards in the platform stack (containers/infra/platform.yaml): one per endpoint, each with the
figures issue 21 asks for, on the namespaces and dimensions that SageMaker, the runtime (as the deploy configures
it) and Model Monitor publish them with."""

from __future__ import annotations

import json
import re
import sys

import pytest

from .conftest import DEPLOY_CONFIGS, REGION

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import config as configs, monitor, stack  # noqa: E402
from sagemaker_deploy import plan as plans  # noqa: E402

from serve.metrics import METRICS as RUNTIME_METRICS  # noqa: E402
from serve.settings import METRIC_DIMENSIONS  # noqa: E402

SAGEMAKER = "AWS/SageMaker"
INSTANCE = "/aws/sagemaker/Endpoints"
RUNTIME = ["ReadTime", "DecodeTime", "PredictTime", "EncodeTime", "Rows", "Requests", "QueueWait", "BatchSize",
           "DeviceMemoryBytes"]


def dashboards(stage: str, namespace: str | None = None) -> dict[str, list[dict]]:
    """Dashboard name -> its widgets, the template expanded for the stage and its Fn::Sub filled in as
    CloudFormation fills it."""
    config = configs.load(DEPLOY_CONFIGS / f"{stage}.json")
    if namespace:
        config["metrics"] = {"namespace": namespace}
    rendered = stack.render(config)
    values = {"AWS::Region": REGION, **{key: value["Default"] for key, value in rendered["Parameters"].items()
                                        if "Default" in value}}

    def sub(template: dict) -> str:
        return re.sub(r"\$\{([A-Za-z0-9:]+)\}", lambda match: str(values[match.group(1)]), template["Fn::Sub"])

    return {sub(resource["Properties"]["DashboardName"]): json.loads(sub(resource["Properties"]["DashboardBody"]))
            ["widgets"] for resource in rendered["Resources"].values()
            if resource["Type"] == "AWS::CloudWatch::Dashboard"}


def series(widgets: list[dict]) -> list[tuple[str, str, dict, str]]:
    """Every metric of the widgets: (namespace, name, dimensions, statistic)."""
    found = []
    for widget in widgets:
        for row in widget["properties"]["metrics"]:
            options = row[-1] if isinstance(row[-1], dict) else {}
            fields = row[:-1] if options else row
            if "expression" in options:
                continue
            namespace, name, *pairs = fields
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2])),
                          options.get("stat", widget["properties"]["stat"])))
    return found


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_endpoint_has_a_dashboard_with_each_required_figure(stage):
    config = configs.load(DEPLOY_CONFIGS / f"{stage}.json")
    found = dashboards(stage)
    names = stack.endpoint_names(config)
    assert sorted(found) == sorted(f"clinical-inference-{stage}-{name}" for name in names)
    for endpoint in names:
        widgets = found[f"clinical-inference-{stage}-{endpoint}"]
        metrics = series(widgets)
        sagemaker_dims = {"EndpointName": endpoint, "VariantName": plans.VARIANT}
        for name, stat in [("Invocations", "Sum"), ("Invocation4XXErrors", "Sum"), ("Invocation5XXErrors", "Sum"),
                           ("ModelLatency", "p50"), ("ModelLatency", "p99"), ("OverheadLatency", "p50")]:
            assert (SAGEMAKER, name, sagemaker_dims, stat) in metrics, (endpoint, name, stat)
        for name in ("CPUUtilization", "MemoryUtilization", "GPUUtilization", "GPUMemoryUtilization"):
            assert (INSTANCE, name, sagemaker_dims, "Average") in metrics, (endpoint, name)
        # The runtime's metrics: the namespace and dimension values register puts in the containers' environment.
        environment = plans.metrics_environment(config, {"endpoint_name": endpoint, "name": "any"})
        # Dimension names as the runtime writes them (serve.settings), keyed without the model as serve.metrics
        # also keys them; a name the runtime does not write would leave the widget empty.
        runtime_dims = {METRIC_DIMENSIONS[variable]: environment[variable]
                        for variable in ("SERVE_METRICS_ENDPOINT", "SERVE_METRICS_VARIANT")}
        runtime = {name for namespace, name, dims, _ in metrics
                   if namespace == environment["SERVE_METRICS_NAMESPACE"] and dims == runtime_dims}
        assert runtime == set(RUNTIME) and runtime <= set(RUNTIME_METRICS), endpoint
        # Model Monitor's drift: the namespace and dimensions the drift alarms of build.sh monitor watch.
        expressions = [row[0]["expression"] for widget in widgets for row in widget["properties"]["metrics"]
                       if isinstance(row[0], dict)]
        assert expressions == [
            f"SEARCH('{{{monitor.DATA_METRICS_NAMESPACE},Endpoint,MonitoringSchedule}} Endpoint=\"{endpoint}\" "
            "MetricName=feature_baseline_drift', 'Maximum', 3600)"]
        alarm_dims = {d["Name"] for d in monitor.alarms({"stage": stage, "families": {"f": {"data_quality": {}}}},
                                                        monitor.Target(endpoint, "f", "m", None), ["age"])
                      [0]["Metrics"][0]["MetricStat"]["Metric"]["Dimensions"]}
        assert alarm_dims == {"Endpoint", "MonitoringSchedule"}


def test_the_dashboards_read_the_runtime_metrics_in_the_namespace_the_config_names():
    found = dashboards("prod", namespace="Clinical/Prod")
    namespaces = {namespace for widgets in found.values() for namespace, name, _, _ in series(widgets)
                  if name in RUNTIME}
    assert namespaces == {"Clinical/Prod"}
    assert stack.parameters({**configs.load(DEPLOY_CONFIGS / "prod.json"), "metrics": {"namespace": "Clinical/Prod"}})[
        "MetricsNamespace"] == "Clinical/Prod"
