"""The judgements of ./build.sh verify (verify.py): each takes AWS's responses, shaped as the service's API reference
shapes them (DynamoDB DescribeTable / DescribeContinuousBackups, S3 GetBucketEncryption / GetBucketVersioning /
GetBucketPolicy, KMS DescribeKey / GetKeyRotationStatus, CloudTrail GetTrail / GetTrailStatus, CloudWatch Logs
DescribeLogGroups, SageMaker DescribeModel), and gives one PASS or FAIL line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .roles import listed

MIN_LOG_RETENTION_DAYS = 90


@dataclass
class Result:
    status: str  # PASS, FAIL or MANUAL
    check: str
    detail: str

    def line(self) -> str:
        return f"{self.status:<6} {self.check}: {self.detail}"


def judged(check: str, problems: list[str], good: str) -> Result:
    return Result("FAIL", check, "; ".join(problems)) if problems else Result("PASS", check, good)


def is_key(value: str | None, key_arn: str) -> bool:
    """A KMS key id or ARN that names the stage's key (alias names do not)."""
    return bool(value) and (value == key_arn or key_arn.endswith(f":key/{value}"))


def judge_table(name: str, described: dict, backups: dict, key_arn: str) -> Result:
    sse = described.get("Table", {}).get("SSEDescription", {})
    recovery = backups.get("ContinuousBackupsDescription", {}).get("PointInTimeRecoveryDescription", {})
    problems = []
    if sse.get("Status") != "ENABLED" or sse.get("SSEType") != "KMS":
        problems.append(f"not SSE-KMS (SSEDescription {sse or 'absent: an AWS owned key'})")
    elif not is_key(sse.get("KMSMasterKeyArn"), key_arn):
        problems.append(f"encrypted with {sse.get('KMSMasterKeyArn')}, not the stage's key")
    if recovery.get("PointInTimeRecoveryStatus") != "ENABLED":
        problems.append(f"point-in-time recovery {recovery.get('PointInTimeRecoveryStatus', 'absent')}")
    return judged(f"table {name}", problems, "SSE-KMS with the stage's key, point-in-time recovery on")


def judge_bucket(name: str, encryption: dict, versioning: dict, policy: str | None, key_arn: str | None) -> Result:
    """key_arn None: the access-log bucket, which must be SSE-S3 (AES256)."""
    rules = encryption.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    problems = []
    if key_arn is None and default.get("SSEAlgorithm") != "AES256":
        problems.append(f"default encryption {default or 'absent'}, not SSE-S3 (access logs need it)")
    elif key_arn is not None and (default.get("SSEAlgorithm") != "aws:kms"
                                  or not is_key(default.get("KMSMasterKeyID"), key_arn)):
        problems.append(f"default encryption {default or 'absent'}, not SSE-KMS with the stage's key")
    if versioning.get("Status") != "Enabled":
        problems.append(f"versioning {versioning.get('Status', 'never enabled')}")
    if not denies_plain_http(policy, name):
        problems.append("no bucket policy statement denies every request with aws:SecureTransport false")
    encrypted = "SSE-S3" if key_arn is None else "SSE-KMS with the stage's key"
    return judged(f"bucket {name}", problems, f"{encrypted}, versioned, TLS only")


def denies_plain_http(policy: str | None, bucket: str) -> bool:
    """A Deny for everyone, of every S3 action, on the bucket and its objects, when aws:SecureTransport is false
    (S3 user guide, "Security best practices for Amazon S3": enforce encryption of data in transit)."""
    arn = f"arn:aws:s3:::{bucket}"
    for statement in listed(json.loads(policy)["Statement"] if policy else []):
        principal = statement.get("Principal")
        condition = statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
        if (statement.get("Effect") == "Deny" and principal in ("*", {"AWS": "*"})
                and set(listed(statement.get("Action"))) & {"s3:*", "*"}
                and {arn, f"{arn}/*"} <= set(listed(statement.get("Resource")))
                and listed(condition) in (["false"], [False])):
            return True
    return False


def judge_key(key_arn: str, described: dict, rotation: dict) -> Result:
    metadata = described.get("KeyMetadata", {})
    problems = []
    if metadata.get("KeyState") != "Enabled":
        problems.append(f"key state {metadata.get('KeyState', 'unknown')}")
    if rotation.get("KeyRotationEnabled") is not True:
        problems.append("automatic rotation off")
    return judged(f"key {key_arn}", problems, "enabled, automatic rotation on")


def judge_trail(arn: str, trail: dict, status: dict) -> Result:
    trail = trail.get("Trail", {})
    problems = []
    if status.get("IsLogging") is not True:
        problems.append("not logging")
    if trail.get("IsMultiRegionTrail") is not True:
        problems.append("not multi-region")
    return judged(f"trail {arn}", problems, f"logging, multi-region, to s3://{trail.get('S3BucketName')}")


def judge_trail_bucket(name: str, encryption: dict, trail_key: str | None) -> Result:
    rules = encryption.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithm = rules[0].get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") if rules else None
    if trail_key:
        return Result("PASS", f"trail bucket {name}", f"the trail encrypts its log files with {trail_key}")
    problems = [] if algorithm in ("AES256", "aws:kms", "aws:kms:dsse") else [f"default encryption {algorithm}"]
    return judged(f"trail bucket {name}", problems, f"default encryption {algorithm}")


def judge_log_group(name: str, groups: dict, key_arn: str | None) -> Result:
    """key_arn None: a group that another stage's stack made (SageMakerJobLogGroups existing), under its own key."""
    group = next((group for group in groups.get("logGroups", []) if group.get("logGroupName") == name), None)
    if group is None:
        return Result("FAIL", f"log group {name}", "does not exist: the service would create it with neither the "
                                                   "key nor a retention (run ./build.sh infra)")
    days = group.get("retentionInDays")  # absent: never expires
    problems = [] if days is None or days >= MIN_LOG_RETENTION_DAYS else [
        f"keeps {days} days, under {MIN_LOG_RETENTION_DAYS}"]
    if key_arn is None and not group.get("kmsKeyId"):
        problems.append("no KMS key")
    elif key_arn is not None and not is_key(group.get("kmsKeyId"), key_arn):
        problems.append(f"encrypted with {group.get('kmsKeyId', 'no KMS key')}, not the stage's key")
    kept = "never expires" if days is None else f"keeps {days} days"
    whose = "the stage's key" if key_arn is not None else f"{group.get('kmsKeyId')} (the stack that made it)"
    return judged(f"log group {name}", problems, f"{kept}, encrypted with {whose}")


def judge_model(endpoint: str, model: dict) -> Result:
    name, vpc = model.get("ModelName", "?"), model.get("VpcConfig") or {}
    problems = []
    if not vpc.get("Subnets") or not vpc.get("SecurityGroupIds"):
        problems.append("no VpcConfig: the container reaches the internet")
    if model.get("EnableNetworkIsolation") is not True:
        problems.append("network isolation off")
    return judged(f"endpoint {endpoint} model {name}", problems,
                  f"in VPC subnets {','.join(vpc.get('Subnets', []))} with network isolation")
