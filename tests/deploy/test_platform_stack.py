"""The platform stack (containers/infra/platform.yaml, ./build.sh infra): the template itself, cfn-lint and
checkov, the dry-run plan, and the stack deployed on moto's CloudFormation with what moto keeps read back.

moto 5.2 drops point-in-time recovery, TTL, bucket versioning, bucket keys, public access blocks, bucket and topic
policies, table encryption and log-group keys, and creates no alarms or CodeBuild projects: those are asserted on
the parsed template here (and by checkov's rules), and only real AWS proves them. moto does keep the roles' and
the key's policies as CloudFormation resolves them: the calls the deploy makes are checked against those.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from fnmatch import fnmatchcase
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.stub import Stubber
from cfnlint.decode import decode

from .conftest import ACCOUNT, DEPLOY_CONFIGS, REGION, ROOT, BuildSh, build_sh_env

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import DeployError, alarms, artifacts, config as configs, endpoints, stack, verify  # noqa: E402
from sagemaker_deploy.aws import Aws  # noqa: E402

from .access import engine, stack as access_stack  # noqa: E402 (it imports sagemaker_deploy)
from .access.stack import StackPolicies  # noqa: E402

TEMPLATE = ROOT / "containers" / "infra" / "platform.yaml"
BODY, _ = decode(str(TEMPLATE))
RESOURCES = BODY["Resources"]
LOOPS = {key.split("::")[-1]: value[2] for key, value in RESOURCES.items() if key.startswith("Fn::ForEach::")}
KMS_BUCKETS = ["ModelBucket", "CaptureBucket", "BatchBucket", "PatBucket"]
TABLE_KEYS = {
    "XgboostPredictionsTable": ("xgboost-predictions", [("prediction_id", "HASH"), ("patient_id", "RANGE")]),
    "XgboostFeatureImportanceTable": ("xgboost-feature-importance",
                                      [("prediction_id", "HASH"), ("patient_id", "RANGE")]),
    "XgboostIntegrationsTable": ("xgboost-integrations", [("integration_id", "HASH"), ("patient_id", "RANGE")]),
    "XgboostModelInfoTable": ("xgboost-model-info", [("model_type", "HASH")]),
    "PatAnalysesTable": ("pat-analyses", [("analysis_id", "HASH"), ("patient_id", "RANGE")]),
    "PatEmbeddingsTable": ("pat-embeddings", [("analysis_id", "HASH"), ("patient_id", "RANGE")]),
    "PatIntegrationsTable": ("pat-integrations", [("integration_id", "HASH"), ("patient_id", "RANGE")]),
}
# The key the deploy configs send ({platform.KeyArn}, the output): everything the stack encrypts must name the same
# key, and the buckets' policies must compare with it, or a put that names it is denied.
THE_KEY = BODY["Outputs"]["KeyArn"]["Value"]
# Actions whose API has no resource to name; each needs a narrowing condition or is read-only.
UNSCOPABLE = {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData", "ec2:DescribeNetworkInterfaces",
              "ec2:DescribeVpcs", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions"}
# PutMetricData's only narrowing: SageMaker's instance metrics (/aws/sagemaker/Endpoints, /ProcessingJobs...) and
# Model Monitor's data-quality metrics, whose namespace has no leading slash.
PUT_METRIC_NAMESPACES = [{"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
                         {"StringEquals": {"cloudwatch:namespace": "aws/sagemaker/Endpoints/data-metrics"}}]
# The region's one log group per kind of SageMaker job ("Log groups and streams that Amazon SageMaker AI sends to
# Amazon CloudWatch Logs", https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html).
JOB_LOG_GROUPS = ("/aws/sagemaker/TransformJobs", "/aws/sagemaker/ProcessingJobs")


def properties(logical_id: str) -> dict:
    return RESOURCES[logical_id]["Properties"]


def listed(value) -> list:
    return value if isinstance(value, list) else [value]


def statements(document: dict) -> list[dict]:
    return listed(document["Statement"])


def policy_documents() -> dict[str, dict]:
    """Every IAM policy of the template (the loops' policies once each), by resource."""
    resources = {**RESOURCES, **{key: value for loop in LOOPS.values() for key, value in loop.items()}}
    return {key: resource["Properties"]["PolicyDocument"] for key, resource in resources.items()
            if isinstance(resource, dict) and resource.get("Type") == "AWS::IAM::Policy"}


def sub_text(value) -> str:
    """The text of an Fn::Sub (or a plain string)."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"]
        return value if isinstance(value, str) else value[0]
    return json.dumps(value) if not isinstance(value, str) else value


# --- The template ----------------------------------------------------------------------------------------------


def key_statements() -> dict[str, dict]:
    """The key policy's statements by Sid, those under Fn::If (the trail's) with their condition's true branch."""
    found = {}
    for statement in statements(RESOURCES["Key"]["Properties"]["KeyPolicy"]):
        if "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        found[statement["Sid"]] = statement
    return found


def test_the_key_rotates_and_only_the_services_use_it_administrators_never_decrypt():
    key = RESOURCES["Key"]
    assert key["Properties"]["EnableKeyRotation"] is True
    by_sid = key_statements()
    crypto = {"kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:GenerateDataKey"}
    for statement in by_sid.values():
        assert statement["Effect"] == "Allow" and statement["Principal"] != "*"
        assert "AWS" not in statement["Principal"] or statement["Principal"]["AWS"] != "*"
        assert statement.get("Condition") or statement["Sid"] == "AccountAdministersTheKey", statement["Sid"]
    assert not crypto & set(by_sid["AccountAdministersTheKey"]["Action"])
    services = by_sid["AccountUsesTheKeyThroughTheServices"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert sorted(sub_text(service).split(".")[0] for service in services) == [
        "dynamodb", "ecr", "s3", "sagemaker", "sns"]
    logs = by_sid["CloudWatchLogsEncryptsTheStageLogGroups"]
    assert sub_text(logs["Principal"]["Service"]) == "logs.${AWS::Region}.amazonaws.com"
    groups = [sub_text(arn) for arn in logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]]
    # Every log group the template creates is one that CloudWatch Logs may encrypt with the key.
    created = [sub_text(group["Properties"]["LogGroupName"]) for group in
               [*RESOURCES.values(), *LOOPS["EndpointLogs"].values()]
               if isinstance(group, dict) and group.get("Type") == "AWS::Logs::LogGroup"]
    assert len(created) == 4
    assert all(any(fnmatchcase(name.replace("${EndpointName}", "x"), arn.split("log-group:")[1]) for arn in groups)
               for name in created), (created, groups)
    assert by_sid["AccountLetsTheServicesHoldGrants"]["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}


def test_the_key_policy_names_no_principal_that_the_same_stack_creates():
    """A key policy naming a role created moments earlier by the same stack can fail with
    MalformedPolicyDocumentException, IAM being eventually consistent ("Default key policy",
    https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html; "PutKeyPolicy",
    https://docs.aws.amazon.com/kms/latest/APIReference/API_PutKeyPolicy.html). The root statements and the roles'
    own policies grant the use instead."""
    for sid, statement in key_statements().items():
        principal = json.dumps(statement["Principal"])
        assert "Fn::GetAtt" not in principal and '"Ref"' not in principal, sid


def test_cloudtrail_may_use_the_key_only_for_this_stages_trail():
    """"Configure AWS KMS key policies for CloudTrail",
    https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-kms-key-policy-for-cloudtrail.html"""
    trail_arn = "arn:${AWS::Partition}:cloudtrail:${AWS::Region}:${AWS::AccountId}:trail/clinical-inference-${Stage}"
    assert sub_text(properties("Trail")["TrailName"]) == trail_arn.rsplit("/", 1)[1]
    by_sid = key_statements()
    encrypt, describe = by_sid["CloudTrailEncryptsTheTrailLogs"], by_sid["CloudTrailDescribesTheKey"]
    for statement in (encrypt, describe):
        assert statement["Principal"] == {"Service": "cloudtrail.amazonaws.com"}
        assert sub_text(statement["Condition"]["StringEquals"]["aws:SourceArn"]) == trail_arn
    assert encrypt["Action"] == "kms:GenerateDataKey*" and describe["Action"] == "kms:DescribeKey"
    assert sub_text(encrypt["Condition"]["StringLike"]["kms:EncryptionContext:aws:cloudtrail:arn"]) == \
        "arn:${AWS::Partition}:cloudtrail:*:${AWS::AccountId}:trail/*"


@pytest.mark.parametrize("table", sorted(TABLE_KEYS))
def test_each_table_has_the_guides_keys_on_demand_point_in_time_recovery_and_the_key(table):
    name, keys = TABLE_KEYS[table]
    settings = properties(table)
    assert settings["TableName"] == {"Fn::Sub": f"clinical-inference-${{Stage}}-{name}"}
    assert [(key["AttributeName"], key["KeyType"]) for key in settings["KeySchema"]] == keys
    assert {a["AttributeName"]: a["AttributeType"] for a in settings["AttributeDefinitions"]} == {
        attribute: "S" for attribute, _ in keys}
    assert settings["BillingMode"] == "PAY_PER_REQUEST"
    assert settings["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert settings["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS",
                                            "KMSMasterKeyId": THE_KEY}
    assert settings["DeletionProtectionEnabled"] is True


def test_no_policy_grants_a_star_that_could_be_narrowed():
    documents = policy_documents()
    assert len(documents) == 5
    for where, document in documents.items():
        for statement in statements(document):
            actions = listed(statement["Action"])
            assert all(action != "*" and not action.endswith(":*") for action in actions), where
            if statement["Effect"] == "Allow" and "*" in listed(statement["Resource"]):
                assert set(actions) <= UNSCOPABLE, (where, actions)
                if "cloudwatch:PutMetricData" in actions:
                    assert statement["Condition"] in PUT_METRIC_NAMESPACES, statement
    # The execution role reads model objects but not the build's artifacts, and passes to SageMaker only.
    execution = {s["Sid"]: s for s in statements(documents["ExecutionRolePolicy"])}
    assert execution["NotTheBuildArtifacts"]["Effect"] == "Deny"
    assert execution["UseTheKey"]["Resource"] == THE_KEY
    codebuild = {s["Sid"]: s for s in statements(documents["CodeBuildRolePolicy"])}
    assert codebuild["RegisterPassesTheExecutionRoleToSageMakerOnly"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    assert sub_text(codebuild["ReadTheStageStackOutputs"]["Resource"]).endswith(
        ":stack/clinical-inference-${Stage}/*")  # the deploy config's {platform.NAME}
    assert codebuild["RegisterCreatesTheStageModelsAndConfigs"]["Condition"] == {
        "StringEquals": {"aws:RequestTag/stage": {"Ref": "Stage"}}}


def test_the_codebuild_project_is_privileged_runs_the_buildspec_as_its_own_role_and_reports():
    project = properties("CodeBuildProject")
    assert project["Environment"]["PrivilegedMode"] is True
    assert project["Source"]["BuildSpec"] == "buildspec.yml" and (ROOT / "buildspec.yml").exists()
    assert project["ServiceRole"] == {"Fn::GetAtt": ["CodeBuildRole", "Arn"]}
    assert project["EncryptionKey"] == THE_KEY
    assert project["LogsConfig"]["CloudWatchLogs"] == {"Status": "ENABLED", "GroupName": {"Ref": "BuildLogGroup"}}
    assert project["Artifacts"]["EncryptionDisabled"] is False
    skipped = RESOURCES["CodeBuildProject"]["Metadata"]["checkov"]["skip"]
    assert [rule["id"] for rule in skipped] == ["CKV_AWS_316"] and "Docker" in skipped[0]["comment"]
    reports = {s["Sid"]: s for s in statements(policy_documents()["CodeBuildRolePolicy"])}["PublishTestReports"]
    assert set(reports["Action"]) >= {"codebuild:CreateReportGroup", "codebuild:CreateReport",
                                      "codebuild:UpdateReport", "codebuild:BatchPutTestCases"}
    assert sub_text(reports["Resource"]).endswith(":report-group/clinical-inference-${Stage}-build-*")


def test_every_name_carries_the_stage():
    named = [value for resource in [*RESOURCES.values(), *(r for loop in LOOPS.values() for r in loop.values())]
             if isinstance(resource, dict)
             for key, value in resource.get("Properties", {}).items()
             if key in ("BucketName", "TableName", "RoleName", "TopicName", "AliasName", "AlarmName", "Name")]
    assert len(named) == 19
    assert all("clinical-inference-${Stage}-" in sub_text(name) or sub_text(name).endswith("-${Stage}")
               for name in named)


def test_every_named_resource_that_outlives_its_stack_is_deleted_when_its_create_rolls_back():
    """With Retain, what a failed create made survives its rollback and the retry fails with AlreadyExists on the
    names; RetainExceptOnCreate deletes it then and retains it otherwise ("DeletionPolicy attribute",
    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-deletionpolicy.html)."""
    kept = {key: resource for key, resource in
            [*RESOURCES.items(), *(item for loop in LOOPS.values() for item in loop.items())]
            if isinstance(resource, dict) and "DeletionPolicy" in resource}
    named = [key for key, resource in kept.items()
             if {"BucketName", "TableName", "LogGroupName"} & set(resource["Properties"])]
    assert len(named) == 17 and {"TransformJobsLogGroup", "ProcessingJobsLogGroup", "TrailBucket", "PatBucket"} <= \
        set(named)
    assert {key: kept[key]["DeletionPolicy"] for key in named} == {key: "RetainExceptOnCreate" for key in named}
    assert kept["Key"]["DeletionPolicy"] == "RetainExceptOnCreate"


def test_a_stack_whose_create_rolled_back_gets_advice_that_works_and_nothing_is_sent(capsys):
    """ROLLBACK_COMPLETE: CloudFormation can only delete the stack; with RetainExceptOnCreate the rollback left no
    named resource behind, so deleting and running infra again is the whole fix."""
    aws = Aws(REGION)
    cloudformation = aws.client("cloudformation")
    with Stubber(cloudformation) as stub:  # any call not expected here fails the test
        for _ in range(2):
            stub.add_response("describe_stacks", {"Stacks": [{
                "StackName": "clinical-inference-dev", "StackStatus": "ROLLBACK_COMPLETE",
                "CreationTime": "2026-12-01T00:00:00Z"}]}, {"StackName": "clinical-inference-dev"})
        with pytest.raises(DeployError) as outputs_error:
            stack.outputs(aws, "dev")
        with pytest.raises(DeployError) as deploy_error:
            stack.deploy(type("Stage", (), {"config": configs.load(DEPLOY_CONFIGS / "dev.json"), "aws": aws,
                                            "name": "dev"})())
        stub.assert_no_pending_responses()
    for error in (outputs_error, deploy_error):
        message = str(error.value)
        assert "\n" not in message and "retained" not in message
        assert "aws cloudformation delete-stack --stack-name clinical-inference-dev" in message
        assert "run ./build.sh infra again" in message


def test_the_codebuild_project_uses_the_buildspecs_artifact_name():
    """The buildspec's artifacts.name is used only with OverrideArtifactName ("ProjectArtifacts",
    https://docs.aws.amazon.com/codebuild/latest/APIReference/API_ProjectArtifacts.html)."""
    buildspec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    assert buildspec["artifacts"]["name"] == "registration"
    assert properties("CodeBuildProject")["Artifacts"].get("OverrideArtifactName") is True


# --- The stack as CloudFormation creates it: behaviour, judged by the access check's engine ---------------------
# access.stack.load expands the template for a stage config and resolves every Ref, Fn::Sub, Fn::GetAtt and Fn::If
# with the account, region and a key id; engine.evaluate asks principalmapper (not this project's code) whether a
# request is allowed by the role's trust policy, the bucket's, topic's or key's policy. Each check below takes that
# stack, so that test_each_check_fails_on_a_template_broken_the_way_it_guards can hand it a broken copy.

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ACCOUNT = "210987654321"
# Service principals offered each role; only its own service of this account may assume it.
SERVICES = ["sagemaker.amazonaws.com", "codebuild.amazonaws.com", "lambda.amazonaws.com", "ec2.amazonaws.com",
            "ecs-tasks.amazonaws.com", "cloudformation.amazonaws.com", "glue.amazonaws.com"]
ASSUMED_BY = {"ExecutionRole": "sagemaker.amazonaws.com", "CodeBuildRole": "codebuild.amazonaws.com"}
# The attribute the services write each prediction's expiry into (README, "The platform stack": TTL attribute
# `expires_at`); platform.env hands it to them as XGBOOST_PREDICTION_TTL_ATTRIBUTE.
WRITTEN_TTL_ATTRIBUTE = "expires_at"


def deployed(template: Path = TEMPLATE, **platform) -> StackPolicies:
    """The stack that ./build.sh infra creates for dev.json (with these platform settings), resolved."""
    config = configs.load(DEPLOY_CONFIGS / "dev.json")
    config["platform"].update(platform)
    return access_stack.load(config, ACCOUNT, REGION, KEY_ID, template)


@functools.cache
def shipped(**platform) -> StackPolicies:
    return deployed(**platform)


def allowed(stack_: StackPolicies, principal: str, action: str, resource: str, context: dict, policy_of: str) -> bool:
    return engine.evaluate(principal, action, resource, context, stack_, stack_.resource[policy_of]).allowed


def of_type(stack_: StackPolicies, kind: str) -> dict[str, dict]:
    return {logical: resource for logical, resource in stack_.resources.items() if resource["Type"] == kind}


def check_trust(stack_: StackPolicies) -> None:
    """Who may assume each role: its one service, only on behalf of this account ("The confused deputy problem",
    https://docs.aws.amazon.com/IAM/latest/UserGuide/confused-deputy.html)."""
    assert sorted(of_type(stack_, "AWS::IAM::Role")) == sorted(ASSUMED_BY), "the stack's roles"
    for role, service in ASSUMED_BY.items():
        arn = stack_.role_arn(role)

        def assumes(principal: str, context: dict) -> bool:
            return allowed(stack_, principal, "sts:AssumeRole", arn, context, arn)

        assert [principal for principal in SERVICES if assumes(principal, {"aws:SourceAccount": ACCOUNT})] == [
            service], f"{role}: the services that may assume it"
        assert not assumes(service, {"aws:SourceAccount": OTHER_ACCOUNT}), \
            f"{role}: {service} acting for another account may assume it"
        assert not assumes(service, {}), f"{role}: {service} may assume it without naming the account"


def check_ttl(stack_: StackPolicies, days: int) -> None:
    """Predictions expire through DynamoDB TTL on the attribute the services write, after the configured days
    ("Using time to live (TTL) in DynamoDB", https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/TTL.html:
    the attribute holds a Number, epoch seconds)."""
    tables = of_type(stack_, "AWS::DynamoDB::Table")
    expiring = {logical: table["TimeToLiveSpecification"] for logical, table in tables.items()
                if table.get("TimeToLiveSpecification", {}).get("Enabled") is True}
    assert list(expiring) == ["XgboostPredictionsTable"], "the tables whose items expire"
    attribute = expiring["XgboostPredictionsTable"]["AttributeName"]
    assert attribute == WRITTEN_TTL_ATTRIBUTE == stack_.outputs["XgboostPredictionTtlAttribute"], \
        "the TTL attribute is not the one the services write"
    keys = {key["AttributeName"] for key in tables["XgboostPredictionsTable"]["KeySchema"]}
    assert attribute not in keys, "the TTL attribute is a key attribute (a string, never a TTL)"
    assert stack_.outputs["XgboostPredictionTtlDays"] == str(days), "the services are not told the configured days"


def check_alerts(stack_: StackPolicies) -> None:
    """The alarms (the stack's and those ./build.sh deploy puts, which the configs send to {platform.AlertTopicArn})
    publish to one topic encrypted with the stage's key; CloudWatch of this account may publish and use the key
    ("Encrypting Amazon SNS topics for CloudWatch alarms",
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/AlarmThatSendsEmail.html#alarms-and-encryption)."""
    topics = of_type(stack_, "AWS::SNS::Topic")
    assert list(topics) == ["AlertTopic"], "the stack's topics"
    topic = topics["AlertTopic"]["Arn"]
    assert topics["AlertTopic"].get("KmsMasterKeyId") == stack_.key_arn, "the alert topic is not encrypted with the key"
    config = configs.load(DEPLOY_CONFIGS / "dev.json")
    assert configs.fill(config, ACCOUNT, REGION, "dev", stack_.outputs)["alarms"]["topic_arn"] == topic, \
        "the deploy's alarms do not go to the alert topic"
    actions = {logical: alarm.get("AlarmActions")
               for logical, alarm in of_type(stack_, "AWS::CloudWatch::Alarm").items()}
    assert actions and all(value == [topic] for value in actions.values()), f"alarm actions {actions}"
    source = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:x"}
    assert allowed(stack_, "cloudwatch.amazonaws.com", "sns:Publish", topic, source, topic), \
        "this account's alarms may not publish"
    other = {"aws:SourceAccount": OTHER_ACCOUNT,
             "aws:SourceArn": f"arn:aws:cloudwatch:{REGION}:{OTHER_ACCOUNT}:alarm:x"}
    assert not allowed(stack_, "cloudwatch.amazonaws.com", "sns:Publish", topic, other, topic), \
        "another account's alarms may publish"
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert allowed(stack_, "cloudwatch.amazonaws.com", action, stack_.key_arn, source, stack_.key_arn), \
            f"CloudWatch may not {action} with the topic's key"
    assert not allowed(stack_, engine.DEPLOYER, "sns:Publish", topic, {"aws:SecureTransport": "false"}, topic), \
        "the topic takes plain HTTP"


def check_access_logs(stack_: StackPolicies, days: int) -> None:
    """Every other bucket logs its accesses to the access-log bucket, which S3's log delivery may write for this
    account's buckets only ("Permissions for log delivery",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html), SSE-S3 as log delivery
    requires, TLS only, and kept for the log retention."""
    buckets = of_type(stack_, "AWS::S3::Bucket")
    logs = buckets.pop("AccessLogBucket")
    assert set(buckets) >= set(KMS_BUCKETS) | {"TrailBucket"}, "the stack's buckets"
    for logical, bucket in buckets.items():
        assert bucket.get("LoggingConfiguration", {}).get("DestinationBucketName") == logs["BucketName"], \
            f"{logical} does not log to the access-log bucket"
        prefix = bucket["LoggingConfiguration"].get("LogFilePrefix", "")
        source = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": bucket["Arn"], "aws:SecureTransport": "true"}
        assert allowed(stack_, "logging.s3.amazonaws.com", "s3:PutObject", f"{logs['Arn']}/{prefix}2026-12-01-x",
                       source, logs["Arn"]), f"S3 may not deliver the access logs of {logical}"
    # Bucket ARNs name no account: another account's bucket may be called clinical-inference-dev-anything.
    other = {"aws:SourceAccount": OTHER_ACCOUNT, "aws:SourceArn": "arn:aws:s3:::clinical-inference-dev-squatted",
             "aws:SecureTransport": "true"}
    assert not allowed(stack_, "logging.s3.amazonaws.com", "s3:PutObject", f"{logs['Arn']}/x", other, logs["Arn"]), \
        "another account's buckets may deliver logs"
    rules = logs["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert [rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] for rule in rules] == ["AES256"], \
        "the access-log bucket is not SSE-S3"
    for action, resource in (("s3:GetObject", f"{logs['Arn']}/x"), ("s3:ListBucket", logs["Arn"])):
        assert not allowed(stack_, engine.DEPLOYER, action, resource, {"aws:SecureTransport": "false"}, logs["Arn"]), \
            "the access-log bucket takes plain HTTP"
        assert allowed(stack_, engine.DEPLOYER, action, resource, {"aws:SecureTransport": "true"}, logs["Arn"])
    expiring = [rule for rule in logs["LifecycleConfiguration"]["Rules"] if rule["Status"] == "Enabled"]
    assert [str(rule.get("ExpirationInDays")) for rule in expiring] == [str(days)], \
        "the access logs are not kept for the log retention"


def check_data_buckets(stack_: StackPolicies) -> None:
    """The model, capture, batch and PAT data buckets: versioned, SSE-KMS with a bucket key, and a put is refused over plain
    HTTP, with SSE-S3 or another key ("Requiring server-side encryption",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms)."""
    for logical in KMS_BUCKETS:
        bucket = stack_.resources[logical]
        assert bucket["VersioningConfiguration"]["Status"] == "Enabled", f"{logical} is not versioned"
        assert all(bucket["PublicAccessBlockConfiguration"].values()), f"{logical} may be made public"
        rule, = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": stack_.key_arn} \
            and rule.get("BucketKeyEnabled") is True, f"{logical} is not SSE-KMS with the key and a bucket key"
        arn, item = bucket["Arn"], f"{bucket['Arn']}/x"
        sent = {"aws:SecureTransport": "true", "s3:x-amz-server-side-encryption": "aws:kms",
                "s3:x-amz-server-side-encryption-aws-kms-key-id": stack_.key_arn}
        assert allowed(stack_, engine.DEPLOYER, "s3:PutObject", item, sent, arn), f"{logical}: a put with the key"
        for change, what in (({"aws:SecureTransport": "false"}, "over plain HTTP"),
                             ({"s3:x-amz-server-side-encryption": "AES256"}, "with SSE-S3"),
                             ({"s3:x-amz-server-side-encryption-aws-kms-key-id":
                               stack_.key_arn.replace(KEY_ID, "99999999-12ab-34cd-56ef-1234567890ab")}, "another key")):
            assert not allowed(stack_, engine.DEPLOYER, "s3:PutObject", item, {**sent, **change}, arn), \
                f"{logical} takes a put {what}"


def check_trail(stack_: StackPolicies) -> None:
    """The stack's trail: multi-region, logging, validated, encrypted with the key; its bucket takes CloudTrail's
    writes for this trail only ("Amazon S3 bucket policy for CloudTrail",
    https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-s3-bucket-policy-for-cloudtrail.html)."""
    trail = stack_.resources["Trail"]
    assert stack_.outputs["TrailArn"] == trail["Arn"], "TrailArn is not the stack's trail"
    assert trail["IsMultiRegionTrail"] is trail["IsLogging"] is trail["EnableLogFileValidation"] is True, \
        "the trail is not multi-region, logging and validated"
    assert trail["KMSKeyId"] == stack_.key_arn, "the trail's log files are not encrypted with the key"
    bucket = stack_.resources["TrailBucket"]
    assert trail["S3BucketName"] == bucket["BucketName"], "the trail writes elsewhere"
    item = f"{bucket['Arn']}/AWSLogs/{ACCOUNT}/CloudTrail/x.json.gz"
    writes = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": trail["Arn"], "aws:SecureTransport": "true",
              "s3:x-amz-acl": "bucket-owner-full-control"}
    for action, resource in (("s3:GetBucketAcl", bucket["Arn"]), ("s3:PutObject", item)):
        assert allowed(stack_, "cloudtrail.amazonaws.com", action, resource, writes, bucket["Arn"]), \
            f"CloudTrail may not {action} for the trail"
        another = {**writes, "aws:SourceArn": trail["Arn"].replace("clinical-inference-dev", "another")}
        assert not allowed(stack_, "cloudtrail.amazonaws.com", action, resource, another, bucket["Arn"]), \
            f"another trail may {action}"


def check_log_groups(stack_: StackPolicies, days: int) -> None:
    """The groups the stack makes are those the services write to and verify reads (SageMaker's per endpoint and
    for batch jobs, CodeBuild's), each kept the configured days and encrypted with the key, which CloudWatch Logs may
    use for those groups only ("Encrypt log data in CloudWatch Logs using AWS KMS",
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html)."""
    groups = {group["LogGroupName"]: group for group in of_type(stack_, "AWS::Logs::LogGroup").values()}
    config = configs.load(DEPLOY_CONFIGS / "dev.json")
    assert sorted(groups) == sorted(verify.log_group_names(config, stack_.outputs)), "the stack's log groups"
    for name, group in groups.items():
        assert group.get("RetentionInDays") == str(days), f"{name} is not kept the configured days"
        assert group.get("KmsKeyId") == stack_.key_arn, f"{name} is not encrypted with the key"
    logs = f"logs.{REGION}.amazonaws.com"
    for name in [*groups, "/aws/lambda/another"]:
        context = {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"}
        assert allowed(stack_, logs, "kms:GenerateDataKey", stack_.key_arn, context, stack_.key_arn) == (
            name in groups), f"CloudWatch Logs {'may not' if name in groups else 'may'} encrypt {name}"


def test_each_endpoint_batch_and_the_build_log_to_a_group_of_the_configured_days_encrypted_with_the_key():
    check_log_groups(shipped(), 365)
    check_log_groups(shipped(log_retention_days=731), 731)


def test_the_sagemaker_jobs_groups_are_made_with_the_key_unless_another_stage_made_them_and_the_role_writes_them():
    """Batch transform and monitor's processing jobs (baselines, hourly monitoring) write to the region's
    /aws/sagemaker/TransformJobs and /aws/sagemaker/ProcessingJobs, which SageMaker would make with neither key nor
    retention: the stack makes both, or neither when another stage's stack did (sagemaker_job_log_groups
    existing), and the execution role writes to them as the jobs do but cannot make a group."""
    stack_ = shipped()
    made = {group["LogGroupName"]: group for group in of_type(stack_, "AWS::Logs::LogGroup").values()}
    for name in JOB_LOG_GROUPS:
        assert name in made, f"the stack does not make {name}"
        assert made[name].get("RetentionInDays") == "365" and made[name].get("KmsKeyId") == stack_.key_arn, name
    second = {group["LogGroupName"] for group in
              of_type(deployed(sagemaker_job_log_groups="existing"), "AWS::Logs::LogGroup").values()}
    assert set(made) - second == set(JOB_LOG_GROUPS)
    role = stack_.role_arn("ExecutionRole")
    for name in JOB_LOG_GROUPS:
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"
        for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
            assert engine.evaluate(role, action, f"{group}:log-stream:job-1/algo-1-1765000000", {}, stack_,
                                   None).allowed, f"the execution role may not {action} in {name}"
        assert not engine.evaluate(role, "logs:CreateLogGroup", group, {}, stack_, None).allowed


def test_the_execution_role_publishes_model_monitors_drift_metrics_in_their_namespace_and_no_other():
    """The hourly monitoring job publishes feature_baseline_drift_* (what the drift alarms and dashboards read) as
    the execution role: the analyzer writes them to a file that the job publishes ("CloudWatch Metrics for Bring Your
    Own Containers", https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-cloudwatch.html), and
    cloudwatch:PutMetricData is in the role's permissions for processing jobs ("CreateProcessingJob API: Execution
    Role Permissions", https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html)."""
    stack_ = shipped()
    role = stack_.role_arn("ExecutionRole")

    def publishes(namespace: str) -> bool:
        return engine.evaluate(role, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": namespace}, stack_,
                               None).allowed

    assert publishes("aws/sagemaker/Endpoints/data-metrics"), "the drift metrics are refused"
    assert publishes("/aws/sagemaker/Endpoints") and publishes("/aws/sagemaker/ProcessingJobs")
    for other in ("aws/sagemaker/Endpoints/model-metrics", "aws/sagemaker/Endpoints/data-metrics-x", "AWS/SageMaker",
                  "ClinicalInference"):
        assert not publishes(other), other


def test_each_role_is_assumed_by_its_one_service_acting_for_this_account():
    check_trust(shipped())


def test_predictions_expire_on_the_attribute_the_services_write_after_the_configured_days():
    check_ttl(shipped(), 90)
    check_ttl(shipped(prediction_ttl_days=30), 30)


def test_alerts_go_to_an_encrypted_topic_that_only_this_accounts_alarms_publish_to():
    check_alerts(shipped())


def test_every_bucket_logs_to_the_access_log_bucket_which_takes_only_this_accounts_logs_over_tls():
    check_access_logs(shipped(), 365)
    check_access_logs(shipped(log_retention_days=731), 731)


def test_each_data_bucket_is_versioned_kms_encrypted_with_a_bucket_key_and_refuses_http_and_other_keys():
    check_data_buckets(shipped())


def test_the_trail_is_multi_region_validated_encrypted_and_its_bucket_takes_only_its_writes():
    check_trail(shipped())


EXECUTION_TRUST = """            Principal: {Service: sagemaker.amazonaws.com}
            Action: sts:AssumeRole
            Condition:
              StringEquals: {aws:SourceAccount: !Ref AWS::AccountId}"""
# (check, the text of the template replaced (its first occurrence), by what, the assertion message expected)
BREAKS = {
    "trust without the account condition": (
        check_trust, EXECUTION_TRUST, EXECUTION_TRUST.rsplit("\n", 2)[0],
        "ExecutionRole: sagemaker.amazonaws.com acting for another account may assume it"),
    "trust with the condition only if present": (
        check_trust, EXECUTION_TRUST, EXECUTION_TRUST.replace("StringEquals:", "StringEqualsIfExists:"),
        "ExecutionRole: sagemaker.amazonaws.com may assume it without naming the account"),
    "trust of a second service": (
        check_trust, "Principal: {Service: codebuild.amazonaws.com}",
        "Principal: {Service: [codebuild.amazonaws.com, lambda.amazonaws.com]}",
        "CodeBuildRole: the services that may assume it"),
    "endpoint logs kept a fixed time": (
        check_log_groups, "RetentionInDays: !Ref LogRetentionDays", "RetentionInDays: 365",
        "/aws/sagemaker/Endpoints/xgboost-endpoint is not kept the configured days"),
    "build logs without the key": (
        check_log_groups, "      LogGroupName: !Sub /aws/codebuild/clinical-inference-${Stage}-build\n"
                          "      RetentionInDays: !Ref LogRetentionDays\n      KmsKeyId: !GetAtt Key.Arn\n",
        "      LogGroupName: !Sub /aws/codebuild/clinical-inference-${Stage}-build\n"
        "      RetentionInDays: !Ref LogRetentionDays\n",
        "/aws/codebuild/clinical-inference-dev-build is not encrypted with the key"),
    "the key closed to the batch logs": (
        check_log_groups, "\n                  - !Sub \"arn:${AWS::Partition}:logs:${AWS::Region}:"
                          "${AWS::AccountId}:log-group:/aws/sagemaker/TransformJobs\"", "",
        "CloudWatch Logs may not encrypt /aws/sagemaker/TransformJobs"),
    "no batch log group": (
        check_log_groups,
        "  TransformJobsLogGroup:\n    Type: AWS::Logs::LogGroup\n    Condition: CreatesTheJobLogGroups",
        "  TransformJobsLogGroup:\n    Type: AWS::Logs::LogGroup\n    Condition: HasAlertEmail",
        "the stack's log groups"),
    "the key closed to the processing logs": (
        check_log_groups, "\n                  - !Sub \"arn:${AWS::Partition}:logs:${AWS::Region}:"
                          "${AWS::AccountId}:log-group:/aws/sagemaker/ProcessingJobs\"", "",
        "CloudWatch Logs may not encrypt /aws/sagemaker/ProcessingJobs"),
    "no processing log group": (
        check_log_groups,
        "  ProcessingJobsLogGroup:\n    Type: AWS::Logs::LogGroup\n    Condition: CreatesTheJobLogGroups",
        "  ProcessingJobsLogGroup:\n    Type: AWS::Logs::LogGroup\n    Condition: HasAlertEmail",
        "the stack's log groups"),
    "processing logs kept forever": (
        check_log_groups,
        "      LogGroupName: /aws/sagemaker/ProcessingJobs\n      RetentionInDays: !Ref LogRetentionDays\n",
        "      LogGroupName: /aws/sagemaker/ProcessingJobs\n",
        "/aws/sagemaker/ProcessingJobs is not kept the configured days"),
    "TTL on another attribute": (
        check_ttl, "TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}",
        "TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}",
        "the TTL attribute is not the one the services write"),
    "TTL disabled": (
        check_ttl, "TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}",
        "TimeToLiveSpecification: {AttributeName: expires_at, Enabled: false}", "the tables whose items expire"),
    "TTL days not output": (
        check_ttl, "    Value: !Ref PredictionTtlDays", "    Value: 90",
        "the services are not told the configured days"),
    "topic unencrypted": (
        check_alerts, "      KmsMasterKeyId: !GetAtt Key.Arn\n\n  AlertTopicPolicy:", "\n  AlertTopicPolicy:",
        "the alert topic is not encrypted with the key"),
    "alarm to another topic": (
        check_alerts, "AlarmActions: [!Ref AlertTopic]",
        "AlarmActions: [!Sub \"arn:${AWS::Partition}:sns:${AWS::Region}:${AWS::AccountId}:elsewhere\"]",
        "alarm actions"),
    "topic open to any account's alarms": (
        check_alerts, "            Resource: !Ref AlertTopic\n            Condition:\n"
                      "              StringEquals: {aws:SourceAccount: !Ref AWS::AccountId}\n              ArnLike:\n"
                      "                aws:SourceArn: !Sub \"arn:${AWS::Partition}:cloudwatch:${AWS::Region}:"
                      "${AWS::AccountId}:alarm:*\"", "            Resource: !Ref AlertTopic",
        "another account's alarms may publish"),
    "CloudWatch without the key": (
        check_alerts,
        "Principal: {Service: cloudwatch.amazonaws.com}\n            Action: [kms:Decrypt, kms:GenerateDataKey*]",
        "Principal: {Service: cloudwatch.amazonaws.com}\n            Action: [kms:Decrypt]",
        "CloudWatch may not kms:GenerateDataKey with the topic's key"),
    "a bucket that logs nowhere": (
        check_access_logs, "      LoggingConfiguration:\n        DestinationBucketName: !Ref AccessLogBucket\n"
                           "        LogFilePrefix: models/\n", "", "ModelBucket does not log to the access-log bucket"),
    "access logs of any account": (
        check_access_logs,
        "              StringEquals: {aws:SourceAccount: !Ref AWS::AccountId}\n              ArnLike:\n"
        "                aws:SourceArn: !Sub \"arn:${AWS::Partition}:s3:::",
        "              ArnLike:\n                aws:SourceArn: !Sub \"arn:${AWS::Partition}:s3:::",
        "another account's buckets may deliver logs"),
    "access-log bucket on SSE-KMS": (
        check_access_logs, "          - ServerSideEncryptionByDefault: {SSEAlgorithm: AES256}",
        "          - ServerSideEncryptionByDefault: {SSEAlgorithm: \"aws:kms\", KMSMasterKeyID: !GetAtt Key.Arn}",
        "the access-log bucket is not SSE-S3"),
    "access-log bucket over HTTP": (
        check_access_logs, "Action: s3:*\n            Resource: [!GetAtt AccessLogBucket.Arn",
        "Action: s3:DeleteBucket\n            Resource: [!GetAtt AccessLogBucket.Arn",
        "the access-log bucket takes plain HTTP"),
    "access logs kept a fixed time": (
        check_access_logs, "ExpirationInDays: !Ref LogRetentionDays", "ExpirationInDays: 365",
        "the access logs are not kept for the log retention"),
    "a data bucket that takes another key": (
        check_data_buckets,
        "StringNotEqualsIfExists: {s3:x-amz-server-side-encryption-aws-kms-key-id: !GetAtt Key.Arn}",
        "StringNotLikeIfExists: {s3:x-amz-server-side-encryption-aws-kms-key-id: \"arn:aws:kms:*\"}",
        "ModelBucket takes a put another key"),
    "a data bucket over HTTP": (
        check_data_buckets, "Action: s3:*\n            Resource: [!GetAtt ModelBucket.Arn",
        "Action: s3:DeleteBucket\n            Resource: [!GetAtt ModelBucket.Arn",
        "ModelBucket takes a put over plain HTTP"),
    "the trail's bucket open to any trail": (
        check_trail, "                s3:x-amz-acl: bucket-owner-full-control\n                aws:SourceArn: !Sub "
                     "\"arn:${AWS::Partition}:cloudtrail:${AWS::Region}:${AWS::AccountId}:trail/clinical-inference-"
                     "${Stage}\"", "                s3:x-amz-acl: bucket-owner-full-control",
        "another trail may s3:PutObject"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_each_check_fails_on_a_template_broken_the_way_it_guards(case, tmp_path):
    check, old, new, message = BREAKS[case]
    text = TEMPLATE.read_text()
    assert old in text, f"{case}: the template no longer has the text this case breaks"
    broken = tmp_path / "platform.yaml"
    broken.write_text(text.replace(old, new, 1))
    stack_ = deployed(broken, prediction_ttl_days=30, log_retention_days=731)
    days = {check_ttl: 30, check_access_logs: 731, check_log_groups: 731}
    with pytest.raises(AssertionError) as failure:
        check(stack_, days[check]) if check in days else check(stack_)
    assert message in str(failure.value).splitlines()[0], str(failure.value)


# --- The deploy config and the stack's outputs -----------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_shipped_configs_take_role_key_and_buckets_from_the_stack_outputs(stage):
    config = configs.load(DEPLOY_CONFIGS / f"{stage}.json")
    assert config["kms_key_arn"] == "{platform.KeyArn}" and THE_KEY == {"Fn::GetAtt": ["Key", "Arn"]}
    used = configs.platform_outputs_used(config)
    assert used == {"ExecutionRoleArn", "KeyArn", "ModelBucket", "CaptureBucket", "BatchBucket", "AlertTopicArn"}
    assert used <= set(BODY["Outputs"])
    text = (DEPLOY_CONFIGS / f"{stage}.json").read_text()
    assert "clinical-inference-models" not in text and ":role/" not in text and "alias/" not in text
    assert ":sns:" not in text
    values = stack.parameters(config)
    expected = {"dev": "xgboost-endpoint,pat-endpoint",
                "prod": "xgboost-risk-endpoint,xgboost-treatment-endpoint,xgboost-outcome-endpoint,pat-endpoint"}
    assert values["EndpointNames"] == expected[stage]
    assert values["RepositoryNames"] == "pat-inference,xgboost-inference" and values["Stage"] == stage
    assert set(values) <= set(BODY["Parameters"])


def test_an_output_the_template_does_not_have_is_refused_when_the_config_is_loaded(tmp_path):
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    config["kms_key_arn"] = "{platform.KeyArm}"
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    with pytest.raises(DeployError, match=r"kms_key_arn: unknown placeholder \{platform.KeyArm\}"):
        configs.load(path)
    with pytest.raises(DeployError, match="the platform stack has no output AlertTopicArn, BatchBucket, CaptureBucket, ExecutionRoleArn, KeyArn"):
        configs.fill(configs.load(DEPLOY_CONFIGS / "dev.json"), ACCOUNT, REGION, "dev", {"ModelBucket": "b"})


def test_a_stage_name_too_long_for_the_bucket_names_is_refused_before_any_call():
    config = configs.load(DEPLOY_CONFIGS / "dev.json")
    with pytest.raises(DeployError, match="at most 8"):
        stack.parameters({**config, "stage": "preproduction"})


def test_a_dry_run_on_a_fresh_checkout_without_credentials_prints_the_whole_plan(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path /
               "none"), AWS_ENDPOINT_URL="http://127.0.0.1:1", DEPLOY_STATE_DIR=str(tmp_path / "state"),
               PYTHON=sys.executable, STAGE="prod")
    result = subprocess.run([str(ROOT / "build.sh"), "--dry-run", "infra"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = result.stderr
    assert "+ aws cloudformation create-change-set --stack-name clinical-inference-prod" in printed
    assert "--template-body file://containers/infra/platform.yaml" in printed
    assert "--capabilities CAPABILITY_NAMED_IAM CAPABILITY_AUTO_EXPAND" in printed
    assert "+ aws cloudformation execute-change-set --stack-name clinical-inference-prod" in printed
    for logical_id in (key for key in RESOURCES if not key.startswith("Fn::ForEach::")):
        assert f" {logical_id} " in printed or printed.count(f" {logical_id}\n"), logical_id
    for endpoint in ("xgboost-risk-endpoint", "xgboost-treatment-endpoint", "xgboost-outcome-endpoint",
                     "pat-endpoint"):
        assert "AWS::Logs::LogGroup" in printed and f"/aws/sagemaker/Endpoints/{endpoint}\n" in printed
    assert "clinical-inference-prod-models-<account>-us-east-1" in printed
    assert "LogRetentionDays=365" in printed and "AlertSubscription (only when HasAlertEmail)" in printed
    assert not (tmp_path / "state").exists()


# --- cfn-lint and checkov --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_template_passes_cfn_lint_and_checkov(stage, tmp_path):
    env = {**os.environ, "STAGE": stage, "DEPLOY_STATE_DIR": str(tmp_path), "PYTHON": sys.executable}
    result = subprocess.run([str(ROOT / "build.sh"), "infra", "check"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "Passed checks" in result.stdout and "Failed checks: 0" in result.stdout
    rendered = json.loads((tmp_path / stage / "platform.rendered.json").read_text())
    assert "Transform" not in rendered and "Fn::ForEach::EndpointLogs" not in rendered["Resources"]


def test_checkov_fails_a_template_without_pitr_ttl_bucket_key_or_deletion_protection(tmp_path):
    checkov = ROOT / "build" / "checkov" / "bin" / "checkov"
    if not checkov.exists():  # test_the_template_passes_cfn_lint_and_checkov installs it
        subprocess.run([str(ROOT / "build.sh"), "infra", "check"], cwd=ROOT, capture_output=True, timeout=1800,
                       env={**os.environ, "DEPLOY_STATE_DIR": str(tmp_path), "PYTHON": sys.executable})
    broken = stack.render(configs.load(DEPLOY_CONFIGS / "dev.json"))
    table = broken["Resources"]["XgboostPredictionsTable"]["Properties"]
    del table["PointInTimeRecoverySpecification"], table["TimeToLiveSpecification"]
    table["DeletionProtectionEnabled"] = False
    encryption = broken["Resources"]["ModelBucket"]["Properties"]["BucketEncryption"]
    encryption["ServerSideEncryptionConfiguration"][0]["BucketKeyEnabled"] = False
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken, default=str))
    result = subprocess.run([str(checkov), "--quiet", "--compact", "--skip-download", "--framework", "cloudformation",
                             "--external-checks-dir", str(ROOT / "containers" / "infra" / "policies"),
                             "--output", "json", "--file", str(path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    failed = {(check["check_id"], check["resource"].split(".")[-1])
              for check in json.loads(result.stdout)["results"]["failed_checks"]}
    assert failed == {("CKV_AWS_28", "XgboostPredictionsTable"), ("CKV_CLINICAL_2", "XgboostPredictionsTable"),
                      ("CKV_CLINICAL_3", "XgboostPredictionsTable"), ("CKV_CLINICAL_1", "ModelBucket")}


# --- On moto's CloudFormation ----------------------------------------------------------------------------------


def run_infra(moto, tmp_path: Path, config: Path | None = None, check: bool = True):
    build_sh = BuildSh(build_sh_env(moto, tmp_path, "127.0.0.1:1"))
    return build_sh("infra", check=check, **({"DEPLOY_CONFIG": str(config)} if config else {}))


def stack_outputs(moto, stage: str = "dev") -> dict[str, str]:
    described = moto.client("cloudformation").describe_stacks(StackName=f"clinical-inference-{stage}")["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in described["Outputs"]}


@pytest.mark.deploy
def test_build_sh_infra_creates_the_stack_through_a_printed_change_set_and_moto_keeps_what_it_says(moto, tmp_path):
    result = run_infra(moto, tmp_path)
    printed = result.stderr
    assert printed.index("Add      AWS::KMS::Key") < printed.index("executing change set")
    assert "stack clinical-inference-dev: CREATE_COMPLETE" in printed
    assert moto.operations().count("ExecuteChangeSet") == 1
    outputs = stack_outputs(moto)
    state = tmp_path / "state" / "dev"
    assert json.loads((state / "platform.json").read_text())["outputs"] == outputs
    env_file = (state / "platform.env").read_text()
    assert "XGBOOST_PREDICTIONS_TABLE=clinical-inference-dev-xgboost-predictions\n" in env_file
    assert "XGBOOST_PREDICTION_TTL_DAYS=90\n" in env_file

    kms = moto.client("kms")
    key = kms.describe_key(KeyId=outputs["KeyArn"])["KeyMetadata"]
    assert key["KeyManager"] == "CUSTOMER" and key["Arn"] == outputs["KeyArn"]
    assert kms.get_key_rotation_status(KeyId=outputs["KeyArn"])["KeyRotationEnabled"] is True
    assert [alias["AliasArn"] for alias in kms.list_aliases(KeyId=key["KeyId"])["Aliases"]] == [
        outputs["KeyAliasArn"]] == [f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/clinical-inference-dev"]
    policy = json.loads(kms.get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    principals = [statement["Principal"] for statement in policy["Statement"]]
    assert {"Service": "cloudwatch.amazonaws.com"} in principals and {"Service": "cloudtrail.amazonaws.com"} in principals
    assert {"Service": f"logs.{REGION}.amazonaws.com"} in principals and "*" not in principals
    roles = {role["Arn"] for role in moto.client("iam").list_roles()["Roles"]}
    assert len(roles) == 2 and not any(role in json.dumps(policy) for role in roles)  # no role of the stack
    logs_groups = next(s for s in policy["Statement"] if s["Sid"] == "CloudWatchLogsEncryptsTheStageLogGroups")[
        "Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]

    s3 = moto.client("s3")
    for output, kind in (("ModelBucket", "models"), ("CaptureBucket", "capture"), ("BatchBucket", "batch")):
        assert outputs[output] == f"clinical-inference-dev-{kind}-{ACCOUNT}-{REGION}"
        rule = s3.get_bucket_encryption(Bucket=outputs[output])["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms",
                                                              "KMSMasterKeyID": outputs["KeyArn"]}
    dynamodb = moto.client("dynamodb")
    for logical_id, (name, keys) in TABLE_KEYS.items():
        assert outputs[logical_id] == f"clinical-inference-dev-{name}"
        table = dynamodb.describe_table(TableName=outputs[logical_id])["Table"]
        assert [(key["AttributeName"], key["KeyType"]) for key in table["KeySchema"]] == keys
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["DeletionProtectionEnabled"] is True
    listed_groups = moto.client("logs").describe_log_groups()["logGroups"]
    groups = {group["logGroupName"]: group["retentionInDays"] for group in listed_groups}
    assert groups == {"/aws/sagemaker/Endpoints/xgboost-endpoint": 365, "/aws/sagemaker/Endpoints/pat-endpoint": 365,
                      "/aws/codebuild/clinical-inference-dev-build": 365, "/aws/sagemaker/TransformJobs": 365,
                      "/aws/sagemaker/ProcessingJobs": 365}
    for group in listed_groups:  # CloudWatch Logs may encrypt each with the key
        assert any(fnmatchcase(group["arn"].removesuffix(":*"), pattern) for pattern in logs_groups), group["arn"]

    trail = moto.client("cloudtrail").describe_trails(trailNameList=[outputs["TrailArn"]])["trailList"][0]
    assert trail["IsMultiRegionTrail"] is True and trail["KmsKeyId"] == outputs["KeyArn"]
    assert trail["LogFileValidationEnabled"] is True
    assert trail["S3BucketName"] == f"clinical-inference-dev-trail-{ACCOUNT}-{REGION}"
    assert moto.client("cloudtrail").get_trail_status(Name=outputs["TrailArn"])["IsLogging"] is True
    topic = moto.client("sns").get_topic_attributes(TopicArn=outputs["AlertTopicArn"])["Attributes"]
    assert topic["KmsMasterKeyId"] == outputs["KeyArn"]
    iam = moto.client("iam")
    role = iam.get_role(RoleName="clinical-inference-dev-sagemaker")["Role"]
    assert role["Arn"] == outputs["ExecutionRoleArn"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert sorted(iam.list_role_policies(RoleName="clinical-inference-dev-sagemaker")["PolicyNames"]) == [
        "endpoint-pat-endpoint", "endpoint-xgboost-endpoint", "pull-pat-inference", "pull-xgboost-inference",
        "sagemaker-execution"]
    assert sorted(iam.list_role_policies(RoleName="clinical-inference-dev-codebuild")["PolicyNames"]) == [
        "codebuild", "push-pat-inference", "push-xgboost-inference"]


def change_set_parameters(request: dict) -> dict[str, str]:
    """CreateChangeSet's Parameters as the query protocol sent them (Parameters.member.N.ParameterKey/Value)."""
    keys = {name.split(".")[2]: value for name, value in request.items() if name.endswith(".ParameterKey")}
    return {key: request[f"Parameters.member.{index}.ParameterValue"] for index, key in keys.items()}


@pytest.mark.deploy
def test_infra_again_changes_nothing_and_a_new_retention_is_an_update_of_the_same_stack(moto, tmp_path):
    run_infra(moto, tmp_path)
    key = stack_outputs(moto)["KeyArn"]
    again = run_infra(moto, tmp_path)
    assert "stack clinical-inference-dev is up to date: the change set has no changes" in again.stderr
    assert moto.operations().count("ExecuteChangeSet") == 1

    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    config["platform"]["log_retention_days"] = 731
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    stack_id = moto.client("cloudformation").describe_stacks(StackName="clinical-inference-dev")["Stacks"][0][
        "StackId"]
    update = run_infra(moto, tmp_path, path)
    assert "stack clinical-inference-dev: UPDATE_COMPLETE" in update.stderr
    requests = moto.requests("CreateChangeSet")
    assert [request["ChangeSetType"] for request in requests] == ["CREATE", "UPDATE", "UPDATE"]
    # What the tool sent: the same stack, the same template, only the retention changed.
    sent = [{key: value for key, value in request.items() if not key.startswith("Parameters.member.")
             and key != "ChangeSetName"} for request in requests]
    assert sent[1] == sent[2] and requests[1]["TemplateBody"] == requests[2]["TemplateBody"]
    assert change_set_parameters(requests[2])["LogRetentionDays"] == "731"
    assert {k: v for k, v in change_set_parameters(requests[2]).items() if k != "LogRetentionDays"} == \
        {k: v for k, v in change_set_parameters(requests[1]).items() if k != "LogRetentionDays"}
    # What moto kept: the same stack (not a replacement) and the same key. moto 5.2 applies no in-place update of
    # a log group, so the new retention itself is only proved on AWS (./build.sh verify reads it there).
    described = moto.client("cloudformation").describe_stacks(StackName="clinical-inference-dev")["Stacks"][0]
    assert described["StackId"] == stack_id and described["StackStatus"] == "UPDATE_COMPLETE"
    assert moto.client("kms").describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key


@pytest.mark.deploy
def test_the_deploy_tool_reads_the_stack_outputs_and_asks_for_infra_when_there_is_no_stack(moto, tmp_path):
    env = {**build_sh_env(moto, tmp_path, "127.0.0.1:1"), "PYTHONPATH": str(DEPLOY_CONFIGS)}
    push_plan = [sys.executable, "-m", "sagemaker_deploy", "--config", str(DEPLOY_CONFIGS / "dev.json"),
                 "--state-dir", str(tmp_path / "state"), "push-plan"]
    missing = subprocess.run(push_plan, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert "the platform stack clinical-inference-dev, which is not deployed" in missing.stderr
    assert "run ./build.sh infra first" in missing.stderr and missing.stderr.count("\n") == 1
    assert moto.operations() == ["DescribeStacks"]  # a read; nothing was created

    run_infra(moto, tmp_path)
    outputs = stack_outputs(moto)
    found = subprocess.run(push_plan, env=env, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    repositories = moto.client("ecr").describe_repositories()["repositories"]
    assert {repository["encryptionConfiguration"]["kmsKey"] for repository in repositories} == {outputs["KeyArn"]}


# --- The calls the deploy makes, against the policies the stack deployed ----------------------------------------
# moto keeps each role's inline policies as CloudFormation resolved them (real ARNs). A statement matches when its
# Action and Resource match with IAM's * and ? wildcards ("IAM JSON policy elements: Resource",
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html) and its conditions
# hold; a condition operator not handled here fails the test rather than passing it. tests/deploy/access* checks
# every recorded call with a policy engine that this project did not write; these pin the nine findings.


def role_documents(moto, role: str) -> list[dict]:
    iam = moto.client("iam")
    return [iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]]


def _holds(operator: str, values: dict, context: dict) -> bool:
    compare = {"StringEquals": str.__eq__, "StringLike": fnmatchcase}[operator.removesuffix("IfExists")]
    return all((key not in context and operator.endswith("IfExists"))
               or (key in context and any(compare(context[key], value) for value in listed(expected)))
               for key, expected in values.items())


def matching(documents: list[dict], effect: str, action: str, resource: str, context: dict) -> list[str]:
    return [statement.get("Sid", "") for document in documents for statement in statements(document)
            if statement["Effect"] == effect
            and any(fnmatchcase(action.lower(), pattern.lower()) for pattern in listed(statement["Action"]))
            and any(fnmatchcase(resource, pattern) for pattern in listed(statement["Resource"]))
            and all(_holds(operator, values, context) for operator, values in statement.get("Condition", {}).items())]


def denied(documents: list[dict], requests: list[tuple[str, str, dict]]) -> list[tuple[str, str]]:
    """The (action, resource) of each request that no statement allows or one denies."""
    return [(action, resource) for action, resource, context in requests
            if not matching(documents, "Allow", action, resource, context)
            or matching(documents, "Deny", action, resource, context)]


def s3_requests(operation: str, params: dict) -> list[tuple[str, str, dict]]:
    """The permissions an S3 call needs ("HeadObject": s3:GetObject, and s3:ListBucket for a 404 rather than a 403,
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html; "PutObject": s3:PutObject, with Tagging
    also s3:PutObjectTagging, https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html)."""
    bucket = f"arn:aws:s3:::{params['Bucket']}"
    item = f"{bucket}/{params['Key']}"
    if operation == "HeadObject":
        return [("s3:GetObject", item, {}), ("s3:ListBucket", bucket, {})]
    if operation == "PutObject":
        tagging = [("s3:PutObjectTagging", item, {})] if params.get("Tagging") else []
        return [("s3:PutObject", item, {"s3:x-amz-server-side-encryption-aws-kms-key-id": params["SSEKMSKeyId"]}),
                *tagging]
    raise AssertionError(f"S3 {operation}: add the permissions it needs to s3_requests")


@pytest.mark.deploy
def test_codebuild_may_upload_the_models_with_the_key_arn_and_store_its_artifacts(moto, tmp_path):
    """pipeline.sh's post_build runs `./build.sh train upload push register` as the CodeBuild role; upload sends
    the config's kms_key_arn as SSEKMSKeyId, which the buckets' DenyPutsNotEncryptedWithTheKey compares with the
    key ARN ("Requiring server-side encryption",
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html#require-sse-kms). CodeBuild itself
    needs s3:GetBucketAcl and s3:GetBucketLocation on the artifact bucket ("Allow CodeBuild to interact with other
    AWS services", https://docs.aws.amazon.com/codebuild/latest/userguide/setting-up-service-role.html)."""
    run_infra(moto, tmp_path)
    outputs = stack_outputs(moto)
    filled = configs.fill(configs.load(DEPLOY_CONFIGS / "dev.json"), ACCOUNT, REGION, "dev", outputs)
    key_sent = filled["kms_key_arn"]
    # The key id sent is the key's own ARN (an alias ARN describes as another ARN), the one the policies compare.
    assert moto.client("kms").describe_key(KeyId=key_sent)["KeyMetadata"]["Arn"] == key_sent
    deny = next(s for s in statements(properties("ModelBucketPolicy")["PolicyDocument"])
                if s["Sid"] == "DenyPutsNotEncryptedWithTheKey")
    assert deny["Condition"]["StringNotEqualsIfExists"]["s3:x-amz-server-side-encryption-aws-kms-key-id"] == \
        BODY["Outputs"]["KeyArn"]["Value"] and key_sent == outputs["KeyArn"]

    source = tmp_path / "model"
    source.mkdir()
    (source / "xgboost-model").write_bytes(b"booster")
    artifact = artifacts.package("xgboost-risk", source, tmp_path / "out")
    s3, calls = moto.client("s3"), []
    s3.meta.events.register("before-parameter-build.s3.*",
                            lambda params, model, **_: calls.append((model.name, dict(params))))
    artifacts.upload(s3, artifact, filled["model_bucket"], key_sent, [{"Key": "stage", "Value": "dev"}])
    assert [name for name, _ in calls] == ["HeadObject", "PutObject"]
    head = s3.head_object(Bucket=filled["model_bucket"], Key=artifact.key())
    assert head["SSEKMSKeyId"] == outputs["KeyArn"]

    bucket = f"arn:aws:s3:::{outputs['ModelBucket']}"
    requests = [request for name, params in calls for request in s3_requests(name, params)]
    requests += [("kms:GenerateDataKey", outputs["KeyArn"], {}),
                 ("s3:GetBucketAcl", bucket, {}), ("s3:GetBucketLocation", bucket, {}),
                 ("s3:PutObject", f"{bucket}/codebuild/registration/dev/registration.json", {})]
    assert denied(role_documents(moto, "clinical-inference-dev-codebuild"), requests) == []
    # Scoped: not the capture bucket, not another prefix.
    capture = f"arn:aws:s3:::{outputs['CaptureBucket']}/models/x"
    assert denied(role_documents(moto, "clinical-inference-dev-codebuild"), [
        ("s3:PutObject", capture, {}), ("s3:GetObject", f"{bucket}/other/x", {}),
        ("s3:ListBucket", bucket, {"s3:prefix": "codebuild/"})]) == [
        ("s3:PutObject", capture), ("s3:GetObject", f"{bucket}/other/x"), ("s3:ListBucket", bucket)]


@pytest.mark.deploy
def test_the_execution_role_may_read_the_rollback_alarms_and_write_job_logs_to_the_stacks_groups(moto, tmp_path):
    """A blue/green update reads the AutoRollbackConfiguration alarms as the execution role ("Auto-Rollback
    Configuration and Monitoring", https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html);
    batch transform and processing jobs log to /aws/sagemaker/TransformJobs and /aws/sagemaker/ProcessingJobs ("Log
    groups and streams that Amazon SageMaker AI sends to Amazon CloudWatch Logs",
    https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html), which the stack made."""
    run_infra(moto, tmp_path)
    outputs = stack_outputs(moto)
    filled = configs.fill(configs.load(DEPLOY_CONFIGS / "dev.json"), ACCOUNT, REGION, "dev", outputs)
    cloudwatch = moto.client("cloudwatch")
    rollback = [name for endpoint in stack.endpoint_names(filled)
                for name in alarms.put(cloudwatch, filled, next(
                    family for family, spec in filled["families"].items()
                    if endpoint in json.dumps(spec)), endpoint, [])]
    arns = [alarm["AlarmArn"] for alarm in cloudwatch.describe_alarms(AlarmNames=rollback)["MetricAlarms"]]
    assert len(arns) == len(rollback) == 4
    documents = role_documents(moto, "clinical-inference-dev-sagemaker")
    assert denied(documents, [("cloudwatch:DescribeAlarms", arn, {}) for arn in arns]) == []
    for name in JOB_LOG_GROUPS:
        group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}"
        assert denied(documents, [("logs:CreateLogStream", group, {}),
                                  ("logs:PutLogEvents", f"{group}:log-stream:job/i-1", {})]) == []
        # SageMaker cannot make the group itself, without the key, should it be missing.
        assert denied(documents, [("logs:CreateLogGroup", group, {})]) == [("logs:CreateLogGroup", group)]


@pytest.mark.deploy
def test_an_existing_organisation_trail_is_output_and_no_trail_is_created(moto, tmp_path):
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    existing = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/organisation"
    config["platform"]["existing_trail_arn"] = existing
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    run_infra(moto, tmp_path, path)
    assert stack_outputs(moto)["TrailArn"] == existing
    assert moto.client("cloudtrail").describe_trails()["trailList"] == []
    key = stack_outputs(moto)["KeyArn"]
    policy = json.loads(moto.client("kms").get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    assert "cloudtrail.amazonaws.com" not in json.dumps(policy)


# --- Bad input: one line that names the fix, and nothing sent ----------------------------------------------------


def run_tool(moto, tmp_path: Path, config: Path, command: str = "push-plan"):
    env = {**build_sh_env(moto, tmp_path, "127.0.0.1:1"), "PYTHONPATH": str(DEPLOY_CONFIGS)}
    return subprocess.run([sys.executable, "-m", "sagemaker_deploy", "--config", str(config), "--state-dir",
                           str(tmp_path / "state"), command], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.deploy
@pytest.mark.parametrize("field, value, fix", [
    ("kms_key_arn", "{platform.KeyAliasArn}", "use {platform.KeyArn}"),
    ("kms_key_arn", f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/clinical-inference-dev", "use {platform.KeyArn}"),
    ("model_bucket", "{platform.ModelBuckt}", "unknown placeholder {platform.ModelBuckt} (known: account"),
])
@pytest.mark.parametrize("command", ["push-plan", "upload"])
def test_a_config_that_a_policy_or_the_stack_would_refuse_prints_the_fix_on_one_line_and_sends_nothing(
        moto, tmp_path, field, value, fix, command):
    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    config[field] = value
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    result = run_tool(moto, tmp_path, path, command)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and fix in result.stderr, result.stderr
    assert moto.operations() == []


@pytest.mark.deploy
def test_a_log_group_left_outside_the_stack_stops_infra_in_one_line_before_the_change_set(moto, tmp_path):
    """A named group that exists (retained when its endpoint left the config or its stack was deleted, or made by
    SageMaker for batch jobs) makes CloudFormation's create fail with AlreadyExists ("AWS::Logs::LogGroup",
    https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-logs-loggroup.html)."""
    logs = moto.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/ProcessingJobs")  # SageMaker made it for an earlier job
    refused = run_infra(moto, tmp_path, check=False)
    assert refused.returncode != 0 and "CreateChangeSet" not in moto.operations()
    line = [text for text in refused.stderr.splitlines() if "sagemaker_deploy: error" in text]
    assert len(line) == 1 and "log group /aws/sagemaker/ProcessingJobs exists outside stack" in line[0]
    assert "set platform.sagemaker_job_log_groups to existing" in line[0]

    config = json.loads((DEPLOY_CONFIGS / "dev.json").read_text())
    config["platform"]["sagemaker_job_log_groups"] = "existing"
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(config))
    run_infra(moto, tmp_path, path)
    # An endpoint added back to the config whose group was kept when it left.
    logs.create_log_group(logGroupName="/aws/sagemaker/Endpoints/xgboost-risk-endpoint")
    config["families"]["xgboost"]["mode"] = "SingleModel"
    path.write_text(json.dumps(config))
    again = run_infra(moto, tmp_path, path, check=False)
    assert again.returncode != 0 and moto.operations().count("CreateChangeSet") == 1
    assert "log group /aws/sagemaker/Endpoints/xgboost-risk-endpoint exists outside stack" in again.stderr
    assert "import it into the stack" in again.stderr
