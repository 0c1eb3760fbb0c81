"""./build.sh verify: the XGBoost guide's "HIPAA Compliance Verification" as a command, against the live stage.

Each check reads what AWS reports now (not the template) and prints one line: PASS, FAIL or MANUAL (what no API
shows). The stage's resources come from the platform stack's outputs; the endpoints and their log groups from the
config, under the names SageMaker and CodeBuild give them. This module reads; judgements.py judges.
"""

from __future__ import annotations

from typing import Callable

from botocore.exceptions import ClientError

from . import monitor, roles, stack
from .aws import describe_or_none, error_code
from .judgements import (Result, judge_bucket, judge_key, judge_log_group, judge_model, judge_table, judge_trail,
                         judge_trail_bucket, judged)

DATA_BUCKETS = ("ModelBucket", "CaptureBucket", "BatchBucket", "PatBucketName")
ACCESS_LOG_BUCKET = "AccessLogBucket"  # S3 delivers server access logs only to an SSE-S3 bucket
MANUAL = {
    "BAA": "a Business Associate Addendum with AWS covers this account (AWS Artifact > Agreements); no API shows it",
    "PHI in logs": "the images never log bodies or values, but a user's inference.py, the build and any client "
    "may: review the log groups' contents",
    "network egress": "the VPC's subnets reach only the VPC endpoints they need (S3, ECR, CloudWatch Logs), nothing "
    "on the internet: review the route tables and security groups named in the config",
    "access reviews": "who may assume the execution and CodeBuild roles, and read the buckets, tables and key",
    "recovery drills": "a table restored to a point in time and an object version restored, in the plan's times",
}


def read(call: Callable[..., dict], missing: tuple[str, ...] = (), **params) -> dict | None:
    """The response; None when AWS answers one of the missing codes (a setting never made)."""
    try:
        return call(**params)
    except ClientError as error:
        if error_code(error) in missing:
            return None
        raise


def checked(check: str, judge: Callable[[], Result]) -> Result:
    """A check whose read AWS refused is a FAIL that names the refusal."""
    try:
        return judge()
    except ClientError as error:
        return Result("FAIL", check, f"AWS refused {error.operation_name} ({error_code(error)}): "
                                     f"{error.response.get('Error', {}).get('Message', '')}")


def tables(aws, outputs: dict, key_arn: str) -> list[Result]:
    dynamodb = aws.client("dynamodb")
    return [checked(f"table {name}", lambda name=name: judge_table(
        name, dynamodb.describe_table(TableName=name), dynamodb.describe_continuous_backups(TableName=name),
        key_arn)) for key, name in outputs.items() if key.endswith("Table")]


def bucket_result(s3, name: str, key_arn: str | None) -> Result:
    encryption = read(s3.get_bucket_encryption, ("ServerSideEncryptionConfigurationNotFoundError",), Bucket=name)
    policy = read(s3.get_bucket_policy, ("NoSuchBucketPolicy",), Bucket=name)
    return judge_bucket(name, encryption or {}, s3.get_bucket_versioning(Bucket=name),
                        (policy or {}).get("Policy"), key_arn)


def buckets(aws, outputs: dict, key_arn: str) -> list[Result]:
    s3 = aws.client("s3")
    wanted = [(outputs[key], key_arn) for key in DATA_BUCKETS] + [(outputs[ACCESS_LOG_BUCKET], None)]
    return [checked(f"bucket {name}", lambda name=name, key=key: bucket_result(s3, name, key)) for name, key in wanted]


def key(aws, key_arn: str) -> Result:
    kms = aws.client("kms")
    return checked(f"key {key_arn}", lambda: judge_key(key_arn, kms.describe_key(KeyId=key_arn),
                                                       kms.get_key_rotation_status(KeyId=key_arn)))


def trail(aws, outputs: dict) -> list[Result]:
    arn = outputs.get("TrailArn")
    if not arn:
        return [Result("FAIL", "trail", "the platform stack has no TrailArn output: run ./build.sh infra with the "
                                        "current template (it creates a trail unless ExistingTrailArn names one)")]
    cloudtrail = aws.client("cloudtrail")
    described = cloudtrail.get_trail(Name=arn)
    results = [checked(f"trail {arn}", lambda: judge_trail(arn, described, cloudtrail.get_trail_status(Name=arn)))]
    bucket = described.get("Trail", {}).get("S3BucketName") or "<trail bucket>"
    try:
        encryption = read(aws.client("s3").get_bucket_encryption, ("ServerSideEncryptionConfigurationNotFoundError",),
                          Bucket=bucket) or {}
    except ClientError as error:
        if error_code(error) != "AccessDenied" or arn.split(":")[4] == outputs["KeyArn"].split(":")[4]:
            raise
        return results + [Result("MANUAL", f"trail bucket {bucket}", "the organisation trail's bucket is in "
                                 "another account: check its encryption there")]
    return results + [judge_trail_bucket(bucket, encryption, described.get("Trail", {}).get("KmsKeyId"))]


def log_group_names(config: dict, outputs: dict) -> list[str]:
    """Where the logs go: SageMaker's /aws/sagemaker/Endpoints/NAME per endpoint, CodeBuild's /aws/codebuild/PROJECT,
    and the region's /aws/sagemaker/TransformJobs and /aws/sagemaker/ProcessingJobs when the stage's stack makes them
    or the stage runs such jobs (batch; monitor's baselines and schedules)."""
    names = [f"/aws/sagemaker/Endpoints/{name}" for name in stack.endpoint_names(config)]
    made = stack.creates_job_log_groups(stack.parameters(config))
    names += [stack.TRANSFORM_LOG_GROUP] if made or "batch" in config else []
    names += [stack.PROCESSING_LOG_GROUP] if made or monitor.targets(config)[0] else []
    return names + [f"/aws/codebuild/{outputs['CodebuildProject']}"]


def log_groups(aws, config: dict, outputs: dict, key_arn: str) -> list[Result]:
    """With platform.sagemaker_job_log_groups "existing" (the stack's SageMakerJobLogGroups parameter), the region's
    job groups are those another stage's stack made, with that stage's key: any customer key will do."""
    logs = aws.client("logs")
    shared = () if stack.creates_job_log_groups(stack.parameters(config)) else stack.JOB_LOG_GROUPS
    return [checked(f"log group {name}", lambda name=name: judge_log_group(
        name, logs.describe_log_groups(logGroupNamePrefix=name), None if name in shared else key_arn))
        for name in log_group_names(config, outputs)]


def endpoint_results(sagemaker, name: str, dry_run: bool) -> list[Result]:
    endpoint = describe_or_none(sagemaker.describe_endpoint, EndpointName=name)
    if endpoint is None and not dry_run:
        return [Result("FAIL", f"endpoint {name}", "not deployed: run ./build.sh deploy, then verify again")]
    # A dry run answers "absent": the calls are printed with the names a deployment would give.
    config_name = (endpoint or {}).get("EndpointConfigName", f"<EndpointConfigName of {name}>")
    endpoint_config = describe_or_none(sagemaker.describe_endpoint_config, EndpointConfigName=config_name) or {}
    models = [variant["ModelName"] for variant in endpoint_config.get("ProductionVariants", [])] or [
        f"<ModelName of {name}>"]
    return [judge_model(name, describe_or_none(sagemaker.describe_model, ModelName=model) or {"ModelName": model})
            for model in models]


def endpoints(aws, config: dict) -> list[Result]:
    sagemaker = aws.client("sagemaker")
    return [result for name in stack.endpoint_names(config) for result in checked_list(
        f"endpoint {name}", lambda name=name: endpoint_results(sagemaker, name, aws.dry_run))]


def role_results(aws, outputs: dict) -> list[Result]:
    found = roles.judge(aws, [outputs["ExecutionRoleArn"], outputs["CodebuildRoleArn"]])
    return [Result("FAIL", f"role {arn}", "not found in IAM") if problems is None
            else judged(f"role {arn}", [f"cloudsplaining finds {'; '.join(problems)}"] if problems else [],
                        "cloudsplaining finds no `*` action and no unconstrained risk")
            for arn, problems in found.items()]


def run(aws, config: dict, stage_name: str) -> list[Result]:
    """Every check of the stage; reads only. A stack that is missing raises DeployError before anything else."""
    outputs = stack.outputs(aws, stage_name)
    key_arn = outputs["KeyArn"]
    results = [*tables(aws, outputs, key_arn), *buckets(aws, outputs, key_arn), key(aws, key_arn),
               *checked_list("trail", lambda: trail(aws, outputs)),
               *log_groups(aws, config, outputs, key_arn), *endpoints(aws, config),
               *checked_list("roles", lambda: role_results(aws, outputs))]
    return results + [Result("MANUAL", check, text) for check, text in MANUAL.items()]


def checked_list(check: str, judge: Callable[[], list[Result]]) -> list[Result]:
    result = checked(check, judge)
    return result if isinstance(result, list) else [result]
