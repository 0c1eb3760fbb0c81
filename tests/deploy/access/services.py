"""What AWS services do with our roles, keys and topic, derived from the requests the deploy sent (the models,
endpoint configs, endpoints, transform jobs, monitor's processing jobs and alarms it asked for) and from the template (CodeBuild's project,
the log groups, the tables, the buckets' access logs). None of these calls passes through botocore here."""

from __future__ import annotations

from .requests import Requests, s3_location

REGION_SERVICE = "{service}.{region}.amazonaws.com"
# Model Monitor's data-quality metrics of a real-time endpoint (what the drift alarms and dashboards read).
DATA_METRICS = "aws/sagemaker/Endpoints/data-metrics"


def _repository(image: str) -> str:
    """host/REPOSITORY@sha256:... (ECR, or the tests' registry standing in for it) -> REPOSITORY."""
    return image.split("/", 1)[1].split("@")[0].split(":")[0]


def sagemaker(requests: Requests, calls: list[tuple[str, dict]]) -> None:
    """calls: (command, recorded call) in the order they were made."""
    for command, call in calls:
        operation, params = call["operation"], call["params"]
        if operation in ("CreateEndpoint", "UpdateEndpoint"):
            config = requests.endpoint_configs.get(params["EndpointConfigName"])
            if config is None:
                raise AssertionError(f"{operation} {params['EndpointName']}: no recorded CreateEndpointConfig "
                                     f"{params['EndpointConfigName']}")
            models = [requests.models[variant["ModelName"]] for variant in config["ProductionVariants"]]
            where = f"SageMaker, endpoint {params['EndpointName']}"
            for model in models:
                _runs_model(requests, where, model)
                _logs(requests, where, model["ExecutionRoleArn"], f"/aws/sagemaker/Endpoints/{params['EndpointName']}")
            capture = config.get("DataCaptureConfig")
            if capture and capture.get("EnableCapture", True):
                bucket, prefix = s3_location(capture["DestinationS3Uri"])
                key = f"{prefix.rstrip('/')}/{params['EndpointName']}/AllTraffic/2026/01/01/00/capture.jsonl".lstrip("/")
                for model in models:
                    requests.s3_put(f"{where}: writes the data capture", model["ExecutionRoleArn"], bucket, key,
                                    "aws:kms", capture.get("KmsKeyId"), bucket_key=False)
            rollback = ((params.get("DeploymentConfig") or {}).get("AutoRollbackConfiguration") or {})
            for alarm in rollback.get("Alarms", []):
                # "Auto-Rollback Configuration and Monitoring": SageMaker reads the alarms as the execution role.
                # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html
                for model in models:
                    requests.add(f"{where}: reads the rollback alarms", model["ExecutionRoleArn"],
                                 "cloudwatch:DescribeAlarms",
                                 requests.arn("cloudwatch", f"alarm:{alarm['AlarmName']}"))
        elif operation == "CreateTransformJob":
            model = requests.models[params["ModelName"]]
            role, where = model["ExecutionRoleArn"], "SageMaker, the transform job"
            _runs_model(requests, where, model)
            bucket, prefix = s3_location(params["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"])
            requests.add(f"{where}: lists the input", role, "s3:ListBucket", f"arn:aws:s3:::{bucket}",
                         **{"s3:prefix": prefix})
            requests.s3_get(f"{where}: reads the input", role, bucket, f"{prefix}part-0001.csv")
            output = params["TransformOutput"]
            bucket, prefix = s3_location(output["S3OutputPath"])
            requests.s3_put(f"{where}: writes the output", role, bucket, f"{prefix}part-0001.csv.out", "aws:kms",
                            output.get("KmsKeyId"), bucket_key=False)
            _logs(requests, where, role, "/aws/sagemaker/TransformJobs")
        elif operation == "CreateProcessingJob":
            _processing_job(requests, "SageMaker, monitor's baseline job", params["RoleArn"],
                            params["ProcessingJobName"], params.get("Environment") or {})
        elif operation == "CreateDataQualityJobDefinition":
            # The schedule starts one such job an hour, named by SageMaker.
            _processing_job(requests, "SageMaker, monitor's hourly data-quality job", params["RoleArn"],
                            "model-monitoring-202612060500-0123456789abcdef01234567",
                            params["DataQualityAppSpecification"].get("Environment") or {})
        elif operation == "PutMetricAlarm":
            for action in params.get("AlarmActions", []) + params.get("OKActions", []):
                _alarm_publishes(requests, params["AlarmName"], action, "an alarm that deploy puts")


def _runs_model(requests: Requests, where: str, model: dict) -> None:
    """Pulls the image, reads the artifact(s), attaches to the VPC: "Give SageMaker AI access to resources in your
    Amazon VPC" and "Use your own inference code with hosting services" (image pulls by the execution role)."""
    role, container = model["ExecutionRoleArn"], model["PrimaryContainer"]
    repository = requests.arn("ecr", f"repository/{_repository(container['Image'])}")
    requests.add(f"{where}: pulls the image", role, "ecr:GetAuthorizationToken", "*")
    for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
        requests.add(f"{where}: pulls the image", role, action, repository)
    bucket, key = s3_location(container["ModelDataUrl"])
    keys = [key] if container.get("Mode") != "MultiModel" else sorted(
        artifact for artifact_bucket, artifact in requests.artifact_keys
        if artifact_bucket == bucket and artifact.startswith(key))
    for artifact in keys:
        requests.s3_get(f"{where}: reads the model artifact", role, bucket, artifact)
    vpc = model.get("VpcConfig")
    if vpc:
        for subnet in vpc["Subnets"]:
            requests.add(f"{where}: attaches to the VPC", role, "ec2:CreateNetworkInterface",
                         requests.arn("ec2", f"subnet/{subnet}"))
        for group in vpc["SecurityGroupIds"]:
            requests.add(f"{where}: attaches to the VPC", role, "ec2:CreateNetworkInterface",
                         requests.arn("ec2", f"security-group/{group}"))
        requests.add(f"{where}: attaches to the VPC", role, "ec2:CreateNetworkInterface",
                     requests.arn("ec2", "network-interface/eni-0"))
        for action in ("ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
                       "ec2:DescribeSecurityGroups", "ec2:DescribeDhcpOptions"):
            requests.add(f"{where}: attaches to the VPC", role, action, "*")
    requests.add(f"{where}: publishes the instance metrics", role, "cloudwatch:PutMetricData", "*",
                 **{"cloudwatch:namespace": "/aws/sagemaker/Endpoints"})


def _processing_job(requests: Requests, where: str, role: str, job: str, environment: dict) -> None:
    """A processing job runs as its role: it logs to the region's /aws/sagemaker/ProcessingJobs ("Log groups and
    streams that Amazon SageMaker AI sends to Amazon CloudWatch Logs",
    https://docs.aws.amazon.com/sagemaker/latest/dg/logging-cloudwatch.html) and publishes its instance metrics
    (/aws/sagemaker/ProcessingJobs, "Amazon SageMaker AI metrics in Amazon CloudWatch",
    https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html); with publish_cloudwatch_metrics
    Enabled, also the metrics the analyzer writes to /opt/ml/output/metrics/cloudwatch ("CloudWatch Metrics for Bring
    Your Own Containers", https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-cloudwatch.html). The
    role's permissions for it include cloudwatch:PutMetricData ("CreateProcessingJob API: Execution Role
    Permissions", https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html)."""
    _logs(requests, where, role, "/aws/sagemaker/ProcessingJobs", f"{job}/algo-1-1765000000")
    requests.add(f"{where}: publishes the instance metrics", role, "cloudwatch:PutMetricData", "*",
                 **{"cloudwatch:namespace": "/aws/sagemaker/ProcessingJobs"})
    if environment.get("publish_cloudwatch_metrics") == "Enabled":
        requests.add(f"{where}: publishes the drift metrics", role, "cloudwatch:PutMetricData", "*",
                     **{"cloudwatch:namespace": DATA_METRICS})


def _logs(requests: Requests, where: str, role: str, group: str, stream_name: str = "AllTraffic/i-0") -> None:
    stream = requests.arn("logs", f"log-group:{group}:log-stream:{stream_name}")
    requests.add(f"{where}: writes its logs", role, "logs:CreateLogStream", stream)
    requests.add(f"{where}: writes its logs", role, "logs:PutLogEvents", stream)


def _alarm_publishes(requests: Requests, alarm: str, topic: str, what: str) -> None:
    """CloudWatch publishes to the encrypted topic as its service principal: "Amazon SNS topic encryption"
    (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html) and the SNS access policy."""
    principal = "cloudwatch.amazonaws.com"
    source = {"aws:SourceAccount": requests.account, "aws:SourceArn": requests.arn("cloudwatch", f"alarm:{alarm}")}
    where = f"CloudWatch, {what}: publishes to the alert topic"
    requests.add(where, principal, "sns:Publish", topic, **source)
    key = requests.p.topic_keys.get(topic)
    if key:
        requests.kms(where, principal, ["kms:GenerateDataKey", "kms:Decrypt"], key, None, **source)


def template(requests: Requests) -> None:
    """What the template's resources make services do: CodeBuild as its role, CloudWatch Logs with the key,
    DynamoDB's grants, S3's access logs, the roles' trust, the template's own alarms."""
    p, region = requests.p, requests.region
    for logical, resource in p.resources.items():
        kind = resource["Type"]
        if kind == "AWS::CodeBuild::Project":
            _codebuild(requests, logical, resource)
        elif kind == "AWS::Logs::LogGroup" and resource.get("KmsKeyId"):
            # "Encrypt log data in CloudWatch Logs using AWS KMS": the service principal, with the group's ARN as
            # the encryption context. https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
            group = requests.arn("logs", f"log-group:{resource['LogGroupName']}")
            requests.kms(f"CloudWatch Logs: encrypts {resource['LogGroupName']}", f"logs.{region}.amazonaws.com",
                         ["kms:GenerateDataKey", "kms:Decrypt"], resource["KmsKeyId"], None,
                         **{"kms:EncryptionContext:aws:logs:arn": group})
        elif kind == "AWS::DynamoDB::Table" and (resource.get("SSESpecification") or {}).get("KMSMasterKeyId"):
            # "DynamoDB encryption at rest: how it uses AWS KMS": grants created as the table's creator.
            # https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/encryption.howitworks.html
            where = "CloudFormation, as the deployer: creates the tables (SSE-KMS)"
            key = resource["SSESpecification"]["KMSMasterKeyId"]
            requests.kms(where, "deployer", ["kms:DescribeKey"], key, "dynamodb")
            requests.kms(where, "deployer", ["kms:CreateGrant"], key, "dynamodb",
                         **{"kms:GrantIsForAWSResource": "true"})
        elif kind == "AWS::S3::Bucket" and resource.get("LoggingConfiguration"):
            # "Permissions for log delivery": https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html
            logging = resource["LoggingConfiguration"]
            requests.add("S3: delivers the buckets' access logs", "logging.s3.amazonaws.com",
                         "s3:PutObject", requests.s3_object(logging["DestinationBucketName"],
                                                            f"{logging.get('LogFilePrefix', '')}2026-01-01-00-00-00"),
                         **{"aws:SourceAccount": requests.account, "aws:SourceArn": resource["Arn"]})
        elif kind == "AWS::IAM::Role":
            for statement in resource["AssumeRolePolicyDocument"]["Statement"]:
                for service in _listify((statement.get("Principal") or {}).get("Service")):
                    requests.add(f"{service}: assumes {resource['RoleName']}", service, "sts:AssumeRole",
                                 resource["Arn"], **{"aws:SourceAccount": requests.account})
        elif kind == "AWS::CloudTrail::Trail":
            _cloudtrail(requests, resource)
        elif kind == "AWS::CloudWatch::Alarm":
            for action in resource.get("AlarmActions", []):
                _alarm_publishes(requests, resource["AlarmName"], action, f"alarm {resource['AlarmName']}")


def _codebuild(requests: Requests, logical: str, project: dict) -> None:
    """CodeBuild runs the build as its service role: logs, reports, S3 artifacts ("Allow CodeBuild to interact
    with other AWS services", https://docs.aws.amazon.com/codebuild/latest/userguide/setting-up-service-role.html)."""
    role, name = project["ServiceRole"], project["Name"]
    where = f"CodeBuild, project {name}"
    group = ((project.get("LogsConfig") or {}).get("CloudWatchLogs") or {}).get("GroupName")
    if group:
        stream = requests.arn("logs", f"log-group:{group}:log-stream:build-0")
        for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
            requests.add(f"{where}: writes the build log", role, action, stream)
    report_group = requests.arn("codebuild", f"report-group/{name}-pytest")
    for action in ("codebuild:CreateReportGroup", "codebuild:CreateReport", "codebuild:UpdateReport",
                   "codebuild:BatchPutTestCases"):
        requests.add(f"{where}: publishes the test report", role, action, report_group)
    artifacts = project.get("Artifacts") or {}
    if artifacts.get("Type") == "S3":
        bucket = artifacts["Location"]
        for action in ("s3:GetBucketAcl", "s3:GetBucketLocation"):
            requests.add(f"{where}: checks the artifact bucket", role, action, f"arn:aws:s3:::{bucket}")
        key = f"{artifacts.get('Path', '')}/registration/dev/registration.json".lstrip("/")
        encryption = None if artifacts.get("EncryptionDisabled") else "aws:kms"
        requests.s3_put(f"{where}: uploads the artifacts", role, bucket, key, encryption,
                        project.get("EncryptionKey"), bucket_key=False)


def _cloudtrail(requests: Requests, trail: dict) -> None:
    """CloudTrail checks the bucket, writes the log files with the trail's key: "Amazon S3 bucket policy for
    CloudTrail" (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-s3-bucket-policy-for-cloudtrail.html)
    and "Configure AWS KMS key policies for CloudTrail"
    (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-kms-key-policy-for-cloudtrail.html)."""
    principal, where = "cloudtrail.amazonaws.com", f"CloudTrail, trail {trail['TrailName']}"
    source = {"aws:SourceAccount": requests.account, "aws:SourceArn": trail["Arn"]}
    bucket = trail["S3BucketName"]
    requests.add(f"{where}: checks the bucket", principal, "s3:GetBucketAcl", f"arn:aws:s3:::{bucket}", **source)
    key = f"AWSLogs/{requests.account}/CloudTrail/{requests.region}/2026/01/01/log.json.gz"
    encryption = {"s3:x-amz-server-side-encryption": "aws:kms"} if trail.get("KMSKeyId") else {}
    if trail.get("KMSKeyId"):
        encryption["s3:x-amz-server-side-encryption-aws-kms-key-id"] = trail["KMSKeyId"]
        requests.kms(f"{where}: encrypts the log files", principal, ["kms:GenerateDataKey"], trail["KMSKeyId"],
                     None, **source, **{"kms:EncryptionContext:aws:cloudtrail:arn": trail["Arn"]})
        requests.kms(f"{where}: checks the key", principal, ["kms:DescribeKey"], trail["KMSKeyId"], None, **source)
    requests.add(f"{where}: writes the log files", principal, "s3:PutObject", requests.s3_object(bucket, key),
                 **source, **encryption, **{"s3:x-amz-acl": "bucket-owner-full-control"})


def _listify(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]
