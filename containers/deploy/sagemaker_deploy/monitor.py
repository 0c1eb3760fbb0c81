"""Model Monitor data quality on what the endpoints capture (build.sh monitor). For every SingleModel endpoint with
data capture whose family has a `data_quality` block:

1. its model's baseline CSV (what train writes beside the model: feature columns, a header) is uploaded SSE-KMS
   to the model bucket under a content-addressed key, and a baseline processing job runs SageMaker's analyzer on
   it, writing statistics.json and constraints.json under the capture bucket's monitoring/ prefix;
2. a data-quality job definition and an hourly monitoring schedule compare each hour's captures with them, with
   the reports under monitoring/ too, encrypted with the stage's key, run as the stage's role in its VPC;
3. CloudWatch alarms on the features' baseline drift notify the stage's topic.

Multi-model endpoints are skipped: "Model Monitor currently supports only endpoints that host a single model and
does not support monitoring multi-model endpoints" ("Data and model quality monitoring with Amazon SageMaker Model
Monitor", https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor.html).
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from . import DeployError, say
from .aws import error_code, is_not_found
from .plan import has_local_storage, resource_name, tags

# "Prebuilt Amazon SageMaker Model Monitor container images",
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-pre-built-container.html: the image is
# <account>.dkr.ecr.<region>.amazonaws.com/sagemaker-model-monitor-analyzer (.amazonaws.com.cn in China), the
# account per region from its table (the SageMaker Python SDK's image_uri_config/model-monitor.json agrees).
ANALYZER_REPOSITORY = "sagemaker-model-monitor-analyzer"
ANALYZER_ACCOUNTS = {
    "af-south-1": "875698925577", "ap-east-1": "001633400207", "ap-northeast-1": "574779866223",
    "ap-northeast-2": "709848358524", "ap-northeast-3": "990339680094", "ap-south-1": "126357580389",
    "ap-southeast-1": "245545462676", "ap-southeast-2": "563025443158", "ap-southeast-3": "669540362728",
    "ca-central-1": "536280801234", "cn-north-1": "453000072557", "cn-northwest-1": "453252182341",
    "eu-central-1": "048819808253", "eu-central-2": "590183933784", "eu-north-1": "895015795356",
    "eu-south-1": "933208885752", "eu-south-2": "437450045455", "eu-west-1": "468650794304",
    "eu-west-2": "749857270468", "eu-west-3": "680080141114", "il-central-1": "843974653677",
    "me-central-1": "588750061953", "me-south-1": "607024016150", "sa-east-1": "539772159869",
    "us-east-1": "156813124566", "us-east-2": "777275614652", "us-west-1": "890145073186",
    "us-west-2": "159807026194",
}
# The analyzer's container contract: inputs and outputs under /opt/ml/processing, the dataset format and the
# metrics switch in its environment ("Container Contract Inputs",
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-contract-inputs.html).
BASELINE_INPUT = "/opt/ml/processing/input/baseline_dataset_input"
ENDPOINT_INPUT = "/opt/ml/processing/input/endpoint"
OUTPUT = "/opt/ml/processing/output"
# The data-quality metrics of a real-time endpoint: feature_baseline_drift_<feature> per feature, dimensions
# Endpoint and MonitoringSchedule ("CloudWatch Metrics for Bring Your Own Containers",
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-cloudwatch.html; "CloudWatch Metrics",
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-cloudwatch.html).
DATA_METRICS_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"
# An alarm on a metric math expression reads at most 10 metrics ("Limits", CloudWatch alarms,
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/alarm-limits.html): one alarm per 10 features.
METRICS_PER_ALARM = 10
HOURLY = "cron(0 * ? * * *)"
BASELINE_SUFFIX = ".baseline.csv"
DEFAULTS = {"instance_type": "ml.m5.xlarge", "volume_size_gb": 20, "max_runtime_seconds": 3600,
            "drift_threshold": 0.1}  # the analyzer's default comparison_threshold for distribution drift
DONE = {"Completed", "Failed", "Stopped"}


@dataclass(frozen=True)
class Target:
    endpoint_name: str
    family: str
    model: str
    baseline: Path  # the local CSV


def image_uri(region: str) -> str:
    if region not in ANALYZER_ACCOUNTS:
        raise DeployError(f"SageMaker publishes no Model Monitor analyzer image for {region} (regions: "
                          f"{', '.join(sorted(ANALYZER_ACCOUNTS))})")
    suffix = ".cn" if region.startswith("cn-") else ""
    return f"{ANALYZER_ACCOUNTS[region]}.dkr.ecr.{region}.amazonaws.com{suffix}/{ANALYZER_REPOSITORY}"


def baseline_path(model: dict) -> Path | None:
    """The model's baseline CSV: `baseline` in the config, otherwise `<source>.baseline.csv` (what train writes)."""
    if "baseline" in model:
        return Path(model["baseline"])
    return Path(model["source"] + BASELINE_SUFFIX) if "source" in model else None


def targets(config: dict) -> tuple[list[Target], list[str]]:
    """The monitored endpoints, and one line for each captured endpoint that is not, saying why."""
    monitored, skipped = [], []
    if "data_capture" not in config:
        return [], ["the config has no data_capture: nothing is captured, so nothing is monitored"]
    for family_name, family in config["families"].items():
        if family["mode"] == "MultiModel":
            skipped.append(f"{family['multi_model_endpoint']['endpoint_name']}: a multi-model endpoint, which Model "
                           "Monitor does not support")
            continue
        for model in family["models"]:
            path = baseline_path(model)
            if "data_quality" not in family or path is None:
                skipped.append(f"{model['endpoint_name']}: family {family_name} has no data_quality block"
                               + ("" if path else " or no baseline"))
                continue
            monitored.append(Target(model["endpoint_name"], family_name, model["name"], path))
    return monitored, skipped


def features(path: Path) -> list[str]:
    """The baseline's header; DeployError when the file is missing or has no data row."""
    try:
        with path.open(newline="") as file:
            rows = csv.reader(file)
            header, first = next(rows, None), next(rows, None)
    except FileNotFoundError:
        raise DeployError(f"no baseline {path}: run ./build.sh train (it writes <model>{BASELINE_SUFFIX} beside "
                          "each model) or set the model's \"baseline\" in the config") from None
    if not header or first is None or len(first) != len(header):
        raise DeployError(f"{path} is not a baseline: a header of feature names, then rows of as many values")
    return header


def _settings(config: dict, target: Target) -> dict:
    return {**DEFAULTS, **config["families"][target.family]["data_quality"]}


def _network(config: dict) -> dict:
    return {"EnableInterContainerTrafficEncryption": True, "EnableNetworkIsolation": config["network_isolation"],
            "VpcConfig": {"Subnets": config["vpc"]["subnets"], "SecurityGroupIds": config["vpc"]["security_groups"]}}


def _cluster(config: dict, settings: dict) -> dict:
    cluster = {"InstanceCount": 1, "InstanceType": settings["instance_type"],
               "VolumeSizeInGB": settings["volume_size_gb"]}
    if not has_local_storage(settings["instance_type"]):
        cluster["VolumeKmsKeyId"] = config["kms_key_arn"]
    return cluster


def monitoring_prefix(config: dict, endpoint_name: str) -> str:
    """s3://CAPTURE_BUCKET/monitoring/ENDPOINT: the baselines' results and the hourly reports."""
    bucket = config["data_capture"]["s3_uri"].split("/")[2]
    return f"s3://{bucket}/monitoring/{endpoint_name}"


def baseline_key(target: Target, sha256: str) -> str:
    return f"baselines/{target.model}/{sha256}/baseline.csv"


def baseline_job(config: dict, target: Target, baseline_uri: str) -> dict:
    """CreateProcessingJob parameters: the analyzer suggests statistics and constraints from the baseline."""
    settings = _settings(config, target)
    request = {
        "ProcessingInputs": [{"InputName": "baseline_dataset_input", "S3Input": {
            "S3Uri": baseline_uri, "LocalPath": BASELINE_INPUT, "S3DataType": "S3Prefix", "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated"}}],
        "ProcessingResources": {"ClusterConfig": _cluster(config, settings)},
        "StoppingCondition": {"MaxRuntimeInSeconds": settings["max_runtime_seconds"]},
        "AppSpecification": {"ImageUri": image_uri(config["region"])},
        "Environment": {"dataset_format": json.dumps({"csv": {"header": True, "output_columns_position": "START"}}),
                        "dataset_source": BASELINE_INPUT, "output_path": OUTPUT,
                        "publish_cloudwatch_metrics": "Disabled"},
        "NetworkConfig": _network(config),
        "RoleArn": config["execution_role_arn"],
    }
    name = resource_name(f"{target.endpoint_name}-baseline", "", request)
    request["ProcessingOutputConfig"] = {"KmsKeyId": config["kms_key_arn"], "Outputs": [{
        "OutputName": "monitoring_output", "S3Output": {
            "S3Uri": f"{monitoring_prefix(config, target.endpoint_name)}/baselines/{name}", "LocalPath": OUTPUT,
            "S3UploadMode": "EndOfJob"}}]}
    return {"ProcessingJobName": name, **request,
            "Tags": tags(config, endpoint=target.endpoint_name, model=target.model)}


def schedule_name(endpoint_name: str) -> str:
    return f"{endpoint_name[:50]}-data-quality"


def job_definition(config: dict, target: Target, baseline: dict) -> dict:
    """CreateDataQualityJobDefinition parameters: the hour's captures against the baseline job's results."""
    settings = _settings(config, target)
    results = baseline["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    request = {
        "DataQualityBaselineConfig": {"ConstraintsResource": {"S3Uri": f"{results}/constraints.json"},
                                      "StatisticsResource": {"S3Uri": f"{results}/statistics.json"}},
        "DataQualityAppSpecification": {"ImageUri": image_uri(config["region"]),
                                        "Environment": {"publish_cloudwatch_metrics": "Enabled"}},
        "DataQualityJobInput": {"EndpointInput": {
            "EndpointName": target.endpoint_name, "LocalPath": ENDPOINT_INPUT, "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated"}},
        "DataQualityJobOutputConfig": {"KmsKeyId": config["kms_key_arn"], "MonitoringOutputs": [{"S3Output": {
            "S3Uri": f"{monitoring_prefix(config, target.endpoint_name)}/reports", "LocalPath": OUTPUT,
            "S3UploadMode": "EndOfJob"}}]},
        "JobResources": {"ClusterConfig": _cluster(config, settings)},
        "NetworkConfig": _network(config),
        "RoleArn": config["execution_role_arn"],
        "StoppingCondition": {"MaxRuntimeInSeconds": settings["max_runtime_seconds"]},
    }
    return {"JobDefinitionName": resource_name(f"{target.endpoint_name}-dq", "", request), **request,
            "Tags": tags(config, endpoint=target.endpoint_name, model=target.model)}


def schedule(config: dict, target: Target, definition: dict) -> dict:
    """CreateMonitoringSchedule parameters: the job definition, every hour."""
    return {"MonitoringScheduleName": schedule_name(target.endpoint_name), "MonitoringScheduleConfig": {
        "ScheduleConfig": {"ScheduleExpression": HOURLY}, "MonitoringType": "DataQuality",
        "MonitoringJobDefinitionName": definition["JobDefinitionName"]},
        "Tags": tags(config, endpoint=target.endpoint_name, model=target.model)}


def alarm_name(endpoint_name: str, index: int) -> str:
    return f"{endpoint_name}-data-drift-{index}"


def alarms(config: dict, target: Target, names: list[str]) -> list[dict]:
    """PutMetricAlarm parameters: the largest baseline drift of up to 10 features per alarm, above the analyzer's
    comparison threshold (a baseline_drift_check violation) in the hour's report."""
    settings = _settings(config, target)
    dimensions = [{"Name": "Endpoint", "Value": target.endpoint_name},
                  {"Name": "MonitoringSchedule", "Value": schedule_name(target.endpoint_name)}]
    topic = config.get("alarms", {}).get("topic_arn")
    actions = [topic] if topic else []
    requests = []
    for index, start in enumerate(range(0, len(names), METRICS_PER_ALARM), 1):
        chunk = names[start:start + METRICS_PER_ALARM]
        metrics = [{"Id": f"m{number}", "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": DATA_METRICS_NAMESPACE, "MetricName": f"feature_baseline_drift_{feature}",
                       "Dimensions": dimensions}, "Period": 3600, "Stat": "Maximum"}}
                   for number, feature in enumerate(chunk)]
        expression = "MAX([" + ",".join(metric["Id"] for metric in metrics) + "])"
        requests.append({
            "AlarmName": alarm_name(target.endpoint_name, index),
            "AlarmDescription": f"{target.endpoint_name}: the captured {', '.join(chunk)} drifted from the baseline "
                                f"(distance above {settings['drift_threshold']}) in the hourly data-quality report",
            "Metrics": [*metrics, {"Id": "drift", "Expression": expression, "Label": "largest baseline drift",
                                   "ReturnData": True}],
            "EvaluationPeriods": 1, "Threshold": float(settings["drift_threshold"]),
            "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
            "ActionsEnabled": bool(actions), "AlarmActions": actions, "OKActions": actions,
            "Tags": tags(config, endpoint=target.endpoint_name)})
    return requests


def delete_alarms(cloudwatch, endpoint_name: str) -> list[str]:
    """The endpoint's drift alarms (destroy); returns the names deleted."""
    pages = cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{endpoint_name}-data-drift-")
    names = [alarm["AlarmName"] for page in pages for alarm in page.get("MetricAlarms", [])]
    if names:
        cloudwatch.delete_alarms(AlarmNames=names)
    return names


def _absent(describe, **params) -> bool:
    """SageMaker answers a Describe* of a missing monitoring resource with ResourceNotFound (the API reference's
    errors of DescribeProcessingJob, DescribeDataQualityJobDefinition, DescribeMonitoringSchedule)."""
    try:
        describe(**params)
        return False
    except ClientError as error:
        if error_code(error) == "ResourceNotFound" or is_not_found(error):
            return True
        raise


def upload_baseline(s3, config: dict, target: Target, dry_run: bool) -> str:
    """The baseline CSV under its content-addressed key in the model bucket (SSE-KMS with the key ARN, as
    artifacts.upload puts the models); returns its URI."""
    if "model_bucket" not in config:
        raise DeployError("monitor uploads the baselines to the model bucket: the config names no \"model_bucket\"")
    data = target.baseline.read_bytes()
    key = baseline_key(target, hashlib.sha256(data).hexdigest())
    body = str(target.baseline) if dry_run else data  # a dry run prints the request: the path, never the rows
    bucket = config["model_bucket"]
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error_code(error) not in ("404", "NoSuchKey", "NotFound"):
            raise
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId=config["kms_key_arn"], BucketKeyEnabled=True, ChecksumAlgorithm="SHA256")
    return f"s3://{bucket}/{key}"


def wait_for(sagemaker, name: str, timeout: float = 3600, poll: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        job = sagemaker.describe_processing_job(ProcessingJobName=name)
        if job["ProcessingJobStatus"] in DONE:
            break
        if time.monotonic() > deadline:
            raise DeployError(f"the baseline job {name} did not finish in {timeout:.0f} s; run monitor again later")
        time.sleep(poll)
    if job["ProcessingJobStatus"] != "Completed":
        raise DeployError(f"the baseline job {name} is {job['ProcessingJobStatus']}: "
                          f"{job.get('FailureReason', 'no reason given')} (its log: /aws/sagemaker/ProcessingJobs)")


def run(aws, config: dict, dry_run: bool) -> dict:
    """Baselines, job definitions and alarms for every target first, then the schedules (which need the baselines'
    results); returns what was done per endpoint."""
    config = {**config, "region": aws.region}
    monitored, skipped = targets(config)
    for line in skipped:
        say(f"not monitored: {line}")
    s3, sagemaker, cloudwatch = aws.client("s3"), aws.client("sagemaker"), aws.client("cloudwatch")
    plans = []
    for target in monitored:
        names = features(target.baseline)
        baseline = baseline_job(config, target, upload_baseline(s3, config, target, dry_run))
        if _absent(sagemaker.describe_processing_job, ProcessingJobName=baseline["ProcessingJobName"]):
            sagemaker.create_processing_job(**baseline)
            say(f"started the baseline job {baseline['ProcessingJobName']} ({len(names)} features)")
        definition = job_definition(config, target, baseline)
        if _absent(sagemaker.describe_data_quality_job_definition, JobDefinitionName=definition["JobDefinitionName"]):
            sagemaker.create_data_quality_job_definition(**definition)
        for alarm in alarms(config, target, names):
            cloudwatch.put_metric_alarm(**alarm)
        plans.append((target, baseline, definition))
    summary = {}
    for target, baseline, definition in plans:
        if not dry_run:
            wait_for(sagemaker, baseline["ProcessingJobName"])
        request = schedule(config, target, definition)
        name = request["MonitoringScheduleName"]
        if _absent(sagemaker.describe_monitoring_schedule, MonitoringScheduleName=name):
            sagemaker.create_monitoring_schedule(**request)
            action = "created"
        else:
            sagemaker.update_monitoring_schedule(MonitoringScheduleName=name,
                                                 MonitoringScheduleConfig=request["MonitoringScheduleConfig"])
            action = "updated"
        say(f"{action} the hourly data-quality schedule {name} of {target.endpoint_name}")
        summary[target.endpoint_name] = {"baseline_job": baseline["ProcessingJobName"], "schedule": name,
                                         "job_definition": definition["JobDefinitionName"], "action": action}
    return summary
