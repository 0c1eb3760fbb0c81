"""Batch Transform: offline scoring of a whole S3 prefix with a registered single model."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from botocore.exceptions import WaiterError

from . import DeployError, say
from .gpu_hosts import BATCH, choose
from .plan import MAX_NAME, has_local_storage, tags


def job_request(config: dict, family_name: str, model_name: str, short_name: str, input_uri: str,
                output_uri: str, version: str, now: datetime | None = None,
                image_labels: dict | None = None) -> dict:
    """CreateTransformJob parameters: MultiRecord batches split by line in the family's formats, the stage's KMS
    key on the output and (where the instance type allows it) on the volume, on a GPU the host AMI that runs the
    image (image_labels); the VPC and network isolation come with the model."""
    batch = config["batch"]
    family = config["families"][family_name]
    formats = {**batch, **family.get("batch", {})}  # the family's formats win over the stage's defaults
    instance_type = batch.get("instance_type", family["instance_type"])
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    resources = {"InstanceType": instance_type, "InstanceCount": batch.get("instance_count", 1)}
    if not has_local_storage(instance_type):
        resources["VolumeKmsKeyId"] = config["kms_key_arn"]
    ami = choose(instance_type, image_labels, BATCH, f"families.{family_name}: image {family['image']['repository']}")
    if ami:
        resources["TransformAmiVersion"] = ami
    timeout = batch.get("invocations_timeout_seconds", 600)
    return {
        "TransformJobName": f"{short_name[:MAX_NAME - len(stamp) - 1]}-{stamp}",
        "ModelName": model_name,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": batch.get("max_payload_mb", 6),
        "MaxConcurrentTransforms": batch.get("max_concurrent_transforms", 1),
        "ModelClientConfig": {"InvocationsTimeoutInSeconds": timeout, "InvocationsMaxRetries": 1},
        "Environment": {"SAGEMAKER_MODEL_SERVER_TIMEOUT": str(timeout)},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": formats.get("content_type", "text/csv"),
            "SplitType": "Line",
            "CompressionType": "None",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": formats.get("accept", "text/csv"),
                            "AssembleWith": "Line", "KmsKeyId": config["kms_key_arn"]},
        "TransformResources": resources,
        "Tags": tags(config, version, family=family_name),
    }


def start(sagemaker, request: dict, wait: bool, dry_run: bool = False) -> str:
    """Starts the job; with wait, returns only once it completed and fails when it did not."""
    sagemaker.create_transform_job(**request)
    name = request["TransformJobName"]
    say(f"started batch transform job {name}: {request['TransformInput']['DataSource']['S3DataSource']['S3Uri']}"
        f" -> {request['TransformOutput']['S3OutputPath']}")
    if not wait:
        return "InProgress"
    if dry_run:
        print(f"+ aws sagemaker wait transform-job-completed-or-stopped --transform-job-name {name}", file=sys.stderr)
        return "InProgress"
    try:
        sagemaker.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName=name, WaiterConfig={"Delay": 30, "MaxAttempts": 480})
    except WaiterError:
        pass
    job = sagemaker.describe_transform_job(TransformJobName=name)
    if job["TransformJobStatus"] != "Completed":
        raise DeployError(f"batch transform job {name} is {job['TransformJobStatus']} "
                          f"({job.get('FailureReason') or 'no reason given'}); see /aws/sagemaker/TransformJobs "
                          "in CloudWatch Logs")
    return "Completed"
