"""./build.sh verify: the HIPAA compliance verification of a stage, as a command.

On moto: the stack deployed through ./build.sh infra, judged on what moto keeps (the key and its rotation, the
buckets' encryption, log retention, the roles' policies) and failing on what it drops; the dry run sends nothing;
a missing stack is one line. What moto cannot give (point-in-time recovery on, table and log-group keys, network
isolation, a CloudTrail trail...) is answered through botocore's Stubber, which checks every response against the
service's own model, with the fields of each API reference:
- DynamoDB DescribeTable (SSEDescription), DescribeContinuousBackups:
  https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_SSEDescription.html,
  https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_DescribeContinuousBackups.html
- S3 GetBucketEncryption, GetBucketVersioning ("If the versioning state has never been set on a bucket, then no
  versioning state is returned"), GetBucketPolicy:
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketEncryption.html,
  https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketVersioning.html
- KMS DescribeKey (KeyMetadata.KeyState), GetKeyRotationStatus:
  https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html,
  https://docs.aws.amazon.com/kms/latest/APIReference/API_GetKeyRotationStatus.html
- CloudTrail GetTrail, GetTrailStatus: https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_GetTrail.html,
  https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_GetTrailStatus.html
- CloudWatch Logs DescribeLogGroups (retentionInDays, kmsKeyId):
  https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/API_LogGroup.html
- SageMaker DescribeModel (VpcConfig, EnableNetworkIsolation):
  https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DescribeModel.html
- IAM GetAccountAuthorizationDetails (RoleDetailList, URL-encoded PolicyDocument):
  https://docs.aws.amazon.com/IAM/latest/APIReference/API_GetAccountAuthorizationDetails.html
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
from botocore.stub import Stubber

from .conftest import ACCOUNT, DEPLOY_CONFIGS, REGION, BuildSh, build_sh_env

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import __main__ as cli, stack, verify  # noqa: E402

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TRAIL = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/clinical-inference-dev"
TRAIL_BUCKET = f"clinical-inference-dev-trail-{ACCOUNT}-{REGION}"  # the stack's TrailBucket, when it makes the trail
# The stack's outputs, one for each output of containers/infra/platform.yaml (checked below): its seven tables...
TABLES = {output: "clinical-inference-dev-" + re.sub(r"(?<!^)(?=[A-Z])", "-", output.removesuffix("Table")).lower()
          for output in stack.output_names() if output.endswith("Table")}
BUCKETS = {name: f"clinical-inference-dev-{kind}-{ACCOUNT}-{REGION}" for name, kind in (
    ("ModelBucket", "models"), ("CaptureBucket", "capture"), ("BatchBucket", "batch"), ("PatBucketName", "pat-data"),
    ("AccessLogBucket", "logs"))}
ROLES = {"ExecutionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/clinical-inference-dev-sagemaker",
         "CodebuildRoleArn": f"arn:aws:iam::{ACCOUNT}:role/clinical-inference-dev-codebuild"}
OUTPUTS = {"KeyArn": KEY, "KeyAliasArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/clinical-inference-dev",
           **TABLES, **BUCKETS, **ROLES, "TrailArn": TRAIL, "CodebuildProject": "clinical-inference-dev-build",
           "AlertTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:clinical-inference-dev-alerts", "LogRetentionDays": "365",
           "XgboostPredictionTtlAttribute": "expires_at", "XgboostPredictionTtlDays": "90"}
LOG_GROUPS = ["/aws/sagemaker/Endpoints/xgboost-endpoint", "/aws/sagemaker/Endpoints/pat-endpoint",
              "/aws/sagemaker/TransformJobs", "/aws/sagemaker/ProcessingJobs",
              "/aws/codebuild/clinical-inference-dev-build"]
ENDPOINTS = {"xgboost-endpoint": ["xgboost-v1"], "pat-endpoint": ["pat-v1"]}


def tls_only(bucket: str) -> str:
    arn = f"arn:aws:s3:::{bucket}"
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


def role_policy(statements: list[dict], name: str = "inline") -> dict:
    return {"PolicyName": name, "PolicyDocument": quote(json.dumps({"Version": "2012-10-17",
                                                                      "Statement": statements}))}


# The inline policies the stack gives each role (AWS::IAM::Policy resources are listed in RolePolicyList too).
POLICY_NAMES = {"ExecutionRoleArn": ["sagemaker-execution", *(f"endpoint-{name}" for name in ENDPOINTS)],
                "CodebuildRoleArn": ["codebuild"]}
READ_MODELS = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKETS['ModelBucket']}/*"}
ECR_LOGIN = {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}


def compliant() -> dict[str, list]:
    """Per service, the responses of a compliant stage in the order verify reads them; an Exception subclass name
    (str starting with '!') answers with that error code."""
    encrypted = {"ServerSideEncryptionConfiguration": {"Rules": [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY}, "BucketKeyEnabled": True}]}}
    sse_s3 = {"ServerSideEncryptionConfiguration": {"Rules": [{"ApplyServerSideEncryptionByDefault": {
        "SSEAlgorithm": "AES256"}}]}}
    s3 = []
    for key, bucket in BUCKETS.items():
        s3 += [sse_s3 if key == "AccessLogBucket" else copy.deepcopy(encrypted), {"Policy": tls_only(bucket)},
               {"Status": "Enabled", "MFADelete": "Disabled"}]
    s3.append(copy.deepcopy(encrypted))  # the trail's bucket
    return {
        "cloudformation": [{"Stacks": [{"StackName": "clinical-inference-dev", "CreationTime": NOW,
                                        "StackStatus": "UPDATE_COMPLETE",
                                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in OUTPUTS.items()]}]}],
        "dynamodb": [response for name in TABLES.values() for response in (
            {"Table": {"TableName": name, "SSEDescription": {"Status": "ENABLED", "SSEType": "KMS",
                                                             "KMSMasterKeyArn": KEY}}},
            {"ContinuousBackupsDescription": {"ContinuousBackupsStatus": "ENABLED", "PointInTimeRecoveryDescription": {
                "PointInTimeRecoveryStatus": "ENABLED", "RecoveryPeriodInDays": 35}}})],
        "s3": s3,
        "kms": [{"KeyMetadata": {"KeyId": KEY.split("/")[-1], "Arn": KEY, "Enabled": True, "KeyState": "Enabled",
                                 "KeyManager": "CUSTOMER"}}, {"KeyRotationEnabled": True, "RotationPeriodInDays": 365}],
        "cloudtrail": [{"Trail": {"Name": "clinical-inference-dev", "TrailARN": TRAIL, "IsMultiRegionTrail": True,
                                  "S3BucketName": TRAIL_BUCKET, "KmsKeyId": KEY,
                                  "LogFileValidationEnabled": True}},
                       {"IsLogging": True}],
        "logs": [{"logGroups": [{"logGroupName": name, "retentionInDays": 365, "kmsKeyId": KEY,
                                 "arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"}]}
                 for name in LOG_GROUPS],
        "sagemaker": [response for endpoint, models in ENDPOINTS.items() for response in (
            {"EndpointName": endpoint, "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{endpoint}",
             "EndpointConfigName": f"{endpoint}-config", "EndpointStatus": "InService", "CreationTime": NOW,
             "LastModifiedTime": NOW},
            {"EndpointConfigName": f"{endpoint}-config", "CreationTime": NOW,
             "EndpointConfigArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint-config/{endpoint}-config",
             "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model} for model in models]},
            *({"ModelName": model, "ModelArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model/{model}",
               "CreationTime": NOW, "EnableNetworkIsolation": True,
               "VpcConfig": {"Subnets": ["subnet-0123456789abcdef0"], "SecurityGroupIds": ["sg-0123456789abcdef0"]}}
              for model in models))],
        "iam": [{"IsTruncated": False, "RoleDetailList": [
            {"RoleName": arn.split("/")[-1], "Arn": arn, "AttachedManagedPolicies": [],
             "RolePolicyList": [role_policy([READ_MODELS, ECR_LOGIN], name) for name in POLICY_NAMES[output]]}
            for output, arn in ROLES.items()]}],
    }


OPERATIONS = {  # the order verify calls each client in
    "cloudformation": ["describe_stacks"],
    "dynamodb": ["describe_table", "describe_continuous_backups"] * len(TABLES),
    "s3": ["get_bucket_encryption", "get_bucket_policy", "get_bucket_versioning"] * len(BUCKETS)
    + ["get_bucket_encryption"],
    "kms": ["describe_key", "get_key_rotation_status"],
    "cloudtrail": ["get_trail", "get_trail_status"],
    "logs": ["describe_log_groups"] * len(LOG_GROUPS),
    "sagemaker": [op for models in ENDPOINTS.values() for op in
                  ["describe_endpoint", "describe_endpoint_config"] + ["describe_model"] * len(models)],
    "iam": ["get_account_authorization_details"],
}


class StubbedAws:
    """What sagemaker_deploy.aws.Aws offers verify, with each client answering from a Stubber."""

    def __init__(self, responses: dict[str, list], operations: dict[str, list] | None = None):
        self.region, self.dry_run, self.stubbers, self.clients = REGION, False, [], {}
        operations = {**OPERATIONS, **(operations or {})}
        for service, answers in responses.items():
            client = boto3.client(service, region_name=REGION, aws_access_key_id="testing",
                                  aws_secret_access_key="testing")
            stubber = Stubber(client)
            for operation, answer in zip(operations[service], answers, strict=True):
                if isinstance(answer, str):
                    stubber.add_client_error(operation, service_error_code=answer,
                                             http_status_code=403 if answer == "AccessDenied" else 404)
                else:
                    stubber.add_response(operation, answer)
            stubber.activate()
            self.stubbers.append(stubber)
            self.clients[service] = client

    def client(self, service: str):
        return self.clients[service]


def run_verify(monkeypatch, capsys, responses: dict[str, list], operations: dict[str, list] | None = None,
               config: Path = DEPLOY_CONFIGS / "dev.json") -> tuple[int, list[str], StubbedAws]:
    aws = StubbedAws(copy.deepcopy(responses), operations)  # botocore decodes the stubbed answers in place
    monkeypatch.setattr(cli, "Aws", lambda region, **options: aws)
    code = cli.main(["--config", str(config), "verify"])
    return code, capsys.readouterr().out.splitlines(), aws


def test_the_stubbed_stack_has_the_templates_outputs():
    assert sorted(OUTPUTS) == sorted(stack.output_names())


def test_a_compliant_stage_passes_every_check_and_lists_what_only_a_person_can_check(monkeypatch, capsys):
    code, lines, aws = run_verify(monkeypatch, capsys, compliant())
    assert code == 0, "\n".join(lines)
    for stubber in aws.stubbers:
        stubber.assert_no_pending_responses()  # every read was made
    statuses = [line.split()[0] for line in lines]
    assert set(statuses) == {"PASS", "MANUAL"}
    checks = [line.split(": ")[0].split(None, 1)[1] for line in lines if line.startswith("PASS")]
    assert checks == [*(f"table {name}" for name in TABLES.values()), *(f"bucket {name}" for name in BUCKETS.values()),
                      f"key {KEY}", f"trail {TRAIL}", f"trail bucket {TRAIL_BUCKET}",
                      *(f"log group {name}" for name in LOG_GROUPS),
                      "endpoint xgboost-endpoint model xgboost-v1", "endpoint pat-endpoint model pat-v1",
                      *(f"role {arn}" for arn in ROLES.values())]
    manual = " ".join(line for line in lines if line.startswith("MANUAL"))
    assert "Business Associate Addendum" in manual and "PHI in logs" in manual


def first(responses: dict, service: str, operation: str, index: int = 0) -> dict:
    return responses[service][[i for i, op in enumerate(OPERATIONS[service]) if op == operation][index]]


def statement_of_role(responses: dict, statement: dict) -> None:
    details = responses["iam"][0]["RoleDetailList"][0]
    details["RolePolicyList"].append(role_policy([statement]))


def set_in(path: list, value):
    def change(responses):
        target = first(responses, *path[:2])
        for key in path[2:-1]:
            target = target[key]
        if value is None:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return change


def replace(service: str, operation: str, answer, index: int = 0):
    def change(responses):
        responses[service][[i for i, op in enumerate(OPERATIONS[service]) if op == operation][index]] = answer
    return change


BUCKET_RULE = ["ServerSideEncryptionConfiguration", "Rules", 0, "ApplyServerSideEncryptionByDefault"]
FAILURES = {
    "point-in-time recovery off": (set_in(["dynamodb", "describe_continuous_backups", "ContinuousBackupsDescription",
                                           "PointInTimeRecoveryDescription", "PointInTimeRecoveryStatus"], "DISABLED"),
                                   "table clinical-inference-dev-xgboost-predictions",
                                   "point-in-time recovery DISABLED"),
    "table on an AWS owned key": (set_in(["dynamodb", "describe_table", "Table", "SSEDescription"], None),
                                  "table clinical-inference-dev-xgboost-predictions", "not SSE-KMS"),
    "table on another key": (set_in(["dynamodb", "describe_table", "Table", "SSEDescription", "KMSMasterKeyArn"],
                                    KEY.replace("1234abcd", "99999999")),
                             "table clinical-inference-dev-xgboost-predictions", "not the stage's key"),
    "bucket versioning suspended": (set_in(["s3", "get_bucket_versioning", "Status"], "Suspended"),
                                    f"bucket {BUCKETS['ModelBucket']}", "versioning Suspended"),
    "bucket versioning never set": (replace("s3", "get_bucket_versioning", {}),
                                    f"bucket {BUCKETS['ModelBucket']}", "versioning never enabled"),
    "bucket policy allows plain HTTP": (replace("s3", "get_bucket_policy", {"Policy": json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                                                 "Resource": [f"arn:aws:s3:::{BUCKETS['ModelBucket']}",
                                                              f"arn:aws:s3:::{BUCKETS['ModelBucket']}/*"],
                                                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})}),
        f"bucket {BUCKETS['ModelBucket']}", "aws:SecureTransport false"),
    "bucket policy denies plain HTTP on the objects only": (replace("s3", "get_bucket_policy", {"Policy": json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*",
                                                 "Resource": f"arn:aws:s3:::{BUCKETS['ModelBucket']}/*",
                                                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})}),
        f"bucket {BUCKETS['ModelBucket']}", "aws:SecureTransport false"),
    "bucket without a policy": (replace("s3", "get_bucket_policy", "NoSuchBucketPolicy"),
                                f"bucket {BUCKETS['ModelBucket']}", "aws:SecureTransport false"),
    "bucket on SSE-S3": (set_in(["s3", "get_bucket_encryption", *BUCKET_RULE], {"SSEAlgorithm": "AES256"}),
                         f"bucket {BUCKETS['ModelBucket']}", "not SSE-KMS with the stage's key"),
    "bucket key named by its alias": (set_in(["s3", "get_bucket_encryption", *BUCKET_RULE, "KMSMasterKeyID"],
                                             f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/clinical-inference-dev"),
                                      f"bucket {BUCKETS['ModelBucket']}", "not SSE-KMS with the stage's key"),
    "key pending deletion": (set_in(["kms", "describe_key", "KeyMetadata", "KeyState"], "PendingDeletion"),
                             f"key {KEY}", "key state PendingDeletion"),
    "key rotation off": (set_in(["kms", "get_key_rotation_status", "KeyRotationEnabled"], False),
                         f"key {KEY}", "automatic rotation off"),
    "trail stopped": (set_in(["cloudtrail", "get_trail_status", "IsLogging"], False), f"trail {TRAIL}",
                      "not logging"),
    "trail in one region": (set_in(["cloudtrail", "get_trail", "Trail", "IsMultiRegionTrail"], False),
                            f"trail {TRAIL}", "not multi-region"),
    "trail without a key to an unencrypted bucket": (
        lambda r: (set_in(["cloudtrail", "get_trail", "Trail", "KmsKeyId"], None)(r), replace(
            "s3", "get_bucket_encryption", "ServerSideEncryptionConfigurationNotFoundError", index=len(BUCKETS))(r)),
        f"trail bucket {TRAIL_BUCKET}", "default encryption None"),
    "stack deployed before the trail": (
        lambda r: r["cloudformation"][0]["Stacks"][0].update(Outputs=[
            output for output in r["cloudformation"][0]["Stacks"][0]["Outputs"] if output["OutputKey"] != "TrailArn"]),
        "trail", "the platform stack has no TrailArn output"),
    "log group kept 30 days": (set_in(["logs", "describe_log_groups", "logGroups", 0, "retentionInDays"], 30),
                               f"log group {LOG_GROUPS[0]}", "keeps 30 days, under 90"),
    "log group without a key": (set_in(["logs", "describe_log_groups", "logGroups", 0, "kmsKeyId"], None),
                                f"log group {LOG_GROUPS[0]}", "no KMS key"),
    "TransformJobs log group missing": (replace("logs", "describe_log_groups", {"logGroups": []}, index=2),
                                        f"log group {LOG_GROUPS[2]}", "does not exist"),
    "ProcessingJobs log group missing": (replace("logs", "describe_log_groups", {"logGroups": []}, index=3),
                                         f"log group {LOG_GROUPS[3]}", "does not exist"),
    "ProcessingJobs log group kept 30 days": (
        lambda r: r["logs"][3]["logGroups"][0].update(retentionInDays=30),
        f"log group {LOG_GROUPS[3]}", "keeps 30 days, under 90"),
    "ProcessingJobs log group under another key": (
        lambda r: r["logs"][3]["logGroups"][0].update(kmsKeyId=KEY.replace("1234abcd", "99999999")),
        f"log group {LOG_GROUPS[3]}", "not the stage's key"),
    "model outside a VPC": (set_in(["sagemaker", "describe_model", "VpcConfig"], None),
                            "endpoint xgboost-endpoint model xgboost-v1", "no VpcConfig"),
    "model without network isolation": (set_in(["sagemaker", "describe_model", "EnableNetworkIsolation"], False),
                                        "endpoint xgboost-endpoint model xgboost-v1", "network isolation off"),
    "role with s3:*": (lambda r: statement_of_role(r, {"Effect": "Allow", "Action": "s3:*",
                                                       "Resource": f"arn:aws:s3:::{BUCKETS['ModelBucket']}/*"}),
                       f"role {ROLES['ExecutionRoleArn']}", "`*` actions of s3"),
    "role with * under a condition": (lambda r: statement_of_role(r, {
        "Effect": "Allow", "Action": "*", "Resource": "*",
        "Condition": {"StringEquals": {"aws:RequestedRegion": REGION}}}),
        f"role {ROLES['ExecutionRoleArn']}", "`*` actions of"),
    "role that can pass any role": (lambda r: statement_of_role(r, {"Effect": "Allow", "Action": "iam:PassRole",
                                                                    "Resource": "*"}),
                                    f"role {ROLES['ExecutionRoleArn']}", "resource exposure: iam:PassRole"),
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_one_setting_out_of_place_is_a_fail_line_that_names_it_and_the_exit_is_non_zero(case, monkeypatch, capsys):
    change, check, reason = FAILURES[case]
    responses = compliant()
    change(responses)
    code, lines, _ = run_verify(monkeypatch, capsys, responses)
    assert code == 1
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1 and failed[0].startswith(f"FAIL   {check}: ") and reason in failed[0], lines


def test_a_managed_policy_attached_to_a_role_is_judged_too(monkeypatch, capsys):
    responses = compliant()
    arn = f"arn:aws:iam::{ACCOUNT}:policy/broad"
    responses["iam"][0]["RoleDetailList"][1]["AttachedManagedPolicies"] = [{"PolicyName": "broad", "PolicyArn": arn}]
    responses["iam"] += [{"Policy": {"PolicyName": "broad", "Arn": arn, "DefaultVersionId": "v2"}},
                         {"PolicyVersion": {"VersionId": "v2", "IsDefaultVersion": True, "Document": quote(json.dumps(
                             {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:*",
                                                                      "Resource": "*"}]}))}}]
    code, lines, _ = run_verify(monkeypatch, capsys, responses, {
        "iam": ["get_account_authorization_details", "get_policy", "get_policy_version"]})
    failed = [line for line in lines if line.startswith("FAIL")]
    assert code == 1 and len(failed) == 1, lines
    assert failed[0].startswith(f"FAIL   role {ROLES['CodebuildRoleArn']}: ") and "`*` actions of sagemaker" in failed[0]


def test_an_organisation_trail_whose_bucket_is_in_another_account_is_a_manual_check(monkeypatch, capsys):
    responses = compliant()
    organisation_trail = "arn:aws:cloudtrail:us-east-1:210987654321:trail/organisation"
    for output in responses["cloudformation"][0]["Stacks"][0]["Outputs"]:
        if output["OutputKey"] == "TrailArn":
            output["OutputValue"] = organisation_trail
    responses["cloudtrail"][0]["Trail"].update(TrailARN=organisation_trail, S3BucketName="organisation-trail")
    responses["s3"][-1] = "AccessDenied"
    code, lines, _ = run_verify(monkeypatch, capsys, responses)
    assert code == 0, lines
    assert f"PASS   trail {organisation_trail}: logging, multi-region, to s3://organisation-trail" in lines
    assert "MANUAL trail bucket organisation-trail: the organisation trail's bucket is in another account: check " \
           "its encryption there" in lines


def test_a_stack_rolled_back_on_creation_is_one_line_naming_the_fix_and_nothing_else_is_read(monkeypatch, capsys):
    responses = {"cloudformation": [{"Stacks": [{"StackName": "clinical-inference-dev", "CreationTime": NOW,
                                                 "StackStatus": "ROLLBACK_COMPLETE"}]}]}
    aws = StubbedAws(responses)
    aws.clients.update({service: None for service in OPERATIONS if service != "cloudformation"})
    monkeypatch.setattr(cli, "Aws", lambda region, **options: aws)
    code = cli.main(["--config", str(DEPLOY_CONFIGS / "dev.json"), "verify"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    # The refusal of every command that reads the stack (stack.py's), not a wording of verify's own.
    assert captured.err == f"sagemaker_deploy: error: {stack.rolled_back('clinical-inference-dev')}\n"


def test_the_job_log_groups_made_by_another_stages_stack_may_carry_that_stages_key(monkeypatch, capsys, tmp_path):
    """SageMakerJobLogGroups existing: /aws/sagemaker/TransformJobs and /aws/sagemaker/ProcessingJobs are the
    region's groups, which the first stage's stack made with its own key; the other stages' verify accepts that key
    but still requires one."""
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    config["$schema"] = str(DEPLOY_CONFIGS / "config.schema.json")
    config["platform"]["sagemaker_job_log_groups"] = "existing"
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    prod_key = KEY.replace("1234abcd", "99999999")
    responses = compliant()
    # dev batches but monitors nothing (its XGBoost endpoint is multi-model): ProcessingJobs is neither made by
    # its stack nor written by its jobs, so it is not read.
    del responses["logs"][3]
    responses["logs"][2]["logGroups"][0]["kmsKeyId"] = prod_key
    read = {"logs": ["describe_log_groups"] * (len(LOG_GROUPS) - 1)}
    code, lines, _ = run_verify(monkeypatch, capsys, responses, read, config=path)
    assert code == 0, lines
    assert f"PASS   log group {LOG_GROUPS[2]}: keeps 365 days, encrypted with {prod_key} (the stack that made it)" \
        in lines
    del responses["logs"][2]["logGroups"][0]["kmsKeyId"]
    code, lines, _ = run_verify(monkeypatch, capsys, responses, read, config=path)
    assert code == 1 and f"FAIL   log group {LOG_GROUPS[2]}: no KMS key" in lines
    # The stage's own groups still need the stage's key.
    responses = compliant()
    del responses["logs"][3]
    responses["logs"][0]["logGroups"][0]["kmsKeyId"] = prod_key
    code, lines, _ = run_verify(monkeypatch, capsys, responses, read, config=path)
    assert code == 1 and [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL   log group {LOG_GROUPS[0]}: encrypted with {prod_key}, not the stage's key"]


# --- On moto ---------------------------------------------------------------------------------------------------


def lines_of(result) -> dict[str, str]:
    """check -> 'STATUS detail' of ./build.sh verify's lines."""
    found = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        check, _, detail = rest.strip().partition(": ")
        found[check] = f"{status} {detail}"
    return found


@pytest.mark.deploy
def test_on_moto_verify_reads_the_deployed_stage_and_fails_on_what_moto_drops(moto, tmp_path):
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    build_sh("infra")
    outputs = json.loads((tmp_path / "state" / "dev" / "platform.json").read_text())["outputs"]
    moto.journal.write_text("")
    result = build_sh("verify", check=False)
    assert result.returncode == 1
    assert "does not pass the HIPAA compliance verification" in result.stderr
    found = lines_of(result)
    # What moto keeps from the template passes: the key and its rotation, and cloudsplaining on the roles'
    # policies as IAM holds them (the template's own policies: no `*` action, no unconstrained risk).
    assert found[f"key {outputs['KeyArn']}"] == "PASS enabled, automatic rotation on"
    # The stack's own trail, multi-region and logging, its log files encrypted with the stage's key.
    bucket = f"clinical-inference-dev-trail-{ACCOUNT}-{REGION}"
    assert found[f"trail {outputs['TrailArn']}"] == f"PASS logging, multi-region, to s3://{bucket}"
    assert found[f"trail bucket {bucket}"] == f"PASS the trail encrypts its log files with {outputs['KeyArn']}"
    assert found[f"role {outputs['ExecutionRoleArn']}"].startswith("PASS cloudsplaining finds no")
    assert found[f"role {outputs['CodebuildRoleArn']}"].startswith("PASS cloudsplaining finds no")
    # What moto drops fails, with the reason: table keys and point-in-time recovery, versioning, bucket policies,
    # log-group keys; no endpoint is deployed.
    predictions = found[f"table {outputs['XgboostPredictionsTable']}"]
    assert predictions.startswith("FAIL") and "point-in-time recovery DISABLED" in predictions
    model_bucket = found[f"bucket {outputs['ModelBucket']}"]
    assert model_bucket.startswith("FAIL") and "versioning never enabled" in model_bucket
    assert "default encryption" not in model_bucket  # moto keeps SSE-KMS with the key
    retention = found["log group /aws/sagemaker/Endpoints/xgboost-endpoint"]
    assert retention.startswith("FAIL") and "keeps" not in retention and "no KMS key" in retention
    assert found["endpoint pat-endpoint"].startswith("FAIL not deployed")
    assert sum(status.startswith("MANUAL") for status in found.values()) == 5
    # Reads only; the live state, not the template: point-in-time recovery and versioning turned on through the API
    # take those reasons away.
    # (the journal names an S3 request by its path only)
    operations = {op for op in moto.operations() if not op.startswith("/")}
    assert operations == {"DescribeStacks", "DescribeTable", "DescribeContinuousBackups", "DescribeKey",
                          "GetKeyRotationStatus", "DescribeLogGroups", "DescribeEndpoint",
                          "GetAccountAuthorizationDetails", "GetTrail", "GetTrailStatus"}, operations
    moto.client("dynamodb").update_continuous_backups(TableName=outputs["XgboostPredictionsTable"],
                                                      PointInTimeRecoverySpecification={
                                                          "PointInTimeRecoveryEnabled": True})
    moto.client("s3").put_bucket_versioning(Bucket=outputs["ModelBucket"],
                                            VersioningConfiguration={"Status": "Enabled"})
    again = lines_of(build_sh("verify", check=False))
    assert "point-in-time recovery" not in again[f"table {outputs['XgboostPredictionsTable']}"]
    assert "versioning" not in again[f"bucket {outputs['ModelBucket']}"]


@pytest.mark.deploy
def test_the_dry_run_prints_every_read_and_sends_none(moto, tmp_path):
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    result = build_sh("--dry-run", "verify")
    assert moto.operations() == []
    calls = [line.split()[3] for line in result.stderr.splitlines() if line.startswith("+ aws ")]
    assert calls == (["describe-table", "describe-continuous-backups"] * 7
                     + ["get-bucket-encryption", "get-bucket-policy", "get-bucket-versioning"] * len(BUCKETS)
                     + ["describe-key", "get-key-rotation-status"]
                     + ["get-trail", "get-trail-status", "get-bucket-encryption"]
                     + ["describe-log-groups"] * len(LOG_GROUPS)
                     + ["describe-endpoint", "describe-endpoint-config", "describe-model"] * 2
                     + ["get-account-authorization-details"])
    assert all(line.startswith(("-      ", "MANUAL")) for line in result.stdout.splitlines())


@pytest.mark.deploy
def test_without_the_stack_verify_asks_for_infra_and_reads_nothing_else(moto, tmp_path):
    result = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))("verify", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == f"sagemaker_deploy: error: {stack.not_deployed('dev', REGION)}"
    assert moto.operations() == ["DescribeStacks"]


class GroupsOf:
    """A logs client that answers DescribeLogGroups with one group per name, under the given keys."""

    def __init__(self, keys: dict[str, str | None]):
        self.keys = keys

    def client(self, service: str):
        assert service == "logs"
        return self

    def describe_log_groups(self, logGroupNamePrefix: str) -> dict:
        group = {"logGroupName": logGroupNamePrefix, "retentionInDays": 365}
        key = self.keys.get(logGroupNamePrefix, KEY)
        return {"logGroups": [group if key is None else {**group, "kmsKeyId": key}]}


def test_the_processing_jobs_group_is_read_when_the_stack_makes_it_or_monitor_runs_jobs_that_write_to_it():
    """Model Monitor's baseline and hourly jobs are processing jobs, which log to the region's
    /aws/sagemaker/ProcessingJobs ("Log groups and streams that Amazon SageMaker AI sends to Amazon CloudWatch
    Logs", https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html)."""
    config = json.loads((DEPLOY_CONFIGS / "prod.json").read_text())  # XGBoost on endpoints of its own: monitored
    processing = "/aws/sagemaker/ProcessingJobs"
    assert processing in verify.log_group_names(config, OUTPUTS)
    config["platform"]["sagemaker_job_log_groups"] = "existing"
    assert processing in verify.log_group_names(config, OUTPUTS)
    another = KEY.replace("1234abcd", "99999999")  # the first stage's stack made it under its key
    results = {result.check: result for result in verify.log_groups(GroupsOf({processing: another}), config,
                                                                     OUTPUTS, KEY)}
    assert results[f"log group {processing}"].status == "PASS"
    results = {result.check: result for result in verify.log_groups(GroupsOf({processing: None}), config,
                                                                     OUTPUTS, KEY)}
    assert results[f"log group {processing}"].status == "FAIL"
    assert results[f"log group {processing}"].detail == "no KMS key"
    del config["families"]["xgboost"]["data_quality"]  # nothing monitored, and another stack's group
    assert processing not in verify.log_group_names(config, OUTPUTS)
    config["platform"]["sagemaker_job_log_groups"] = "create"
    assert processing in verify.log_group_names(config, OUTPUTS)
