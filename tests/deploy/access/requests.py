"""Each recorded call (and each thing an AWS service does with our roles) as the authorization requests AWS makes
of it: principal, action, resource ARN, and the condition keys the request carries.

Which actions and resources an operation is authorized on: the Service Authorization Reference
(https://docs.aws.amazon.com/service-authorization/latest/reference/reference_policies_actions-resources-contextkeys.html),
its pages for S3, SageMaker, ECR, CloudWatch, Application Auto Scaling, CloudFormation, IAM and KMS. The pages
behind the rules that are not one operation to one action are cited where they are used. An operation without a
rule is asked as the action of its name on every resource ("*"), which only a statement for all resources allows;
an S3 operation without a rule fails the check (S3's action names differ from its operations): add its rule here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlparse

from .stack import StackPolicies

NO_PERMISSION = "needs no permission"


@dataclass
class Request:
    call: str  # what makes it: "build.sh upload: s3 PutObject", "SageMaker, endpoint X: writes the data capture"
    principal: str  # "deployer", a role ARN, or a service principal
    action: str
    resource: str
    context: dict = field(default_factory=dict)


class Requests:
    """Builds the requests of one stage's run; `unknown` collects the operations that have no rule."""

    def __init__(self, policies: StackPolicies):
        self.p = policies
        self.account, self.region = policies.account, policies.region
        self.out: list[Request] = []
        self.unknown: list[str] = []
        self.endpoint_configs: dict[str, dict] = {}  # name -> CreateEndpointConfig params
        self.models: dict[str, dict] = {}  # name -> CreateModel params
        self.artifact_keys: set[tuple[str, str]] = set()  # (bucket, key) that upload checked or put

    # --- helpers ---------------------------------------------------------------------------------------------

    def arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if region else ''}:{self.account}:{resource}"

    def base(self, principal: str) -> dict:
        context = {"aws:SecureTransport": "true", "aws:PrincipalAccount": self.account}
        if not principal.endswith(".amazonaws.com"):
            context["aws:PrincipalArn"] = principal if principal.startswith("arn:") else \
                f"arn:aws:iam::{self.account}:user/{principal}"
        return context

    def add(self, call: str, principal: str, action: str, resource: str, **context) -> None:
        self.out.append(Request(call, principal, action, resource, {**self.base(principal), **context}))

    def kms(self, call: str, principal: str, actions: list[str], key_id: str, via: str | None, **context) -> None:
        """A use of the key through a service (via) or by a service principal (via None)."""
        extra = {"kms:CallerAccount": self.account, **context}
        if via:
            extra["kms:ViaService"] = f"{via}.{self.region}.amazonaws.com"
        for action in actions:
            self.add(call, principal, action, self.p.key_arn_of(key_id), **extra)

    def tags(self, tags) -> dict:
        items = tags.items() if isinstance(tags, dict) else [(t.get("Key") or t.get("key"), t.get("Value") or
                                                              t.get("value")) for t in tags or []]
        context = {f"aws:RequestTag/{key}": value for key, value in items}
        if context:
            context["aws:TagKeys"] = [key for key, _ in items]
        return context

    def s3_object(self, bucket: str, key: str) -> str:
        return f"arn:aws:s3:::{bucket}/{key}"

    def s3_put(self, call: str, principal: str, bucket: str, key: str, encryption: str | None,
               key_id: str | None, bucket_key: bool = True) -> None:
        """PutObject, and the data key S3 asks KMS for as the caller: "Using server-side encryption with AWS KMS
        keys (SSE-KMS)", https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingKMSEncryption.html (with an
        S3 Bucket Key the encryption context is the bucket's ARN)."""
        sse = {}
        if encryption:
            sse["s3:x-amz-server-side-encryption"] = encryption
        if key_id:
            sse["s3:x-amz-server-side-encryption-aws-kms-key-id"] = key_id
        self.add(call, principal, "s3:PutObject", self.s3_object(bucket, key), **sse)
        if encryption == "aws:kms":
            context = f"arn:aws:s3:::{bucket}" + ("" if bucket_key else f"/{key}")
            self.kms(call, principal, ["kms:GenerateDataKey"], key_id or self.p.key_arn, "s3",
                     **{"kms:EncryptionContext:aws:s3:arn": context})

    def s3_get(self, call: str, principal: str, bucket: str, key: str) -> None:
        self.add(call, principal, "s3:GetObject", self.s3_object(bucket, key))
        self.kms(call, principal, ["kms:Decrypt"], self.p.key_arn, "s3",
                 **{"kms:EncryptionContext:aws:s3:arn": f"arn:aws:s3:::{bucket}"})

    # --- the recorded calls ----------------------------------------------------------------------------------

    def recorded(self, command: str, principal: str, call: dict) -> None:
        service, operation, params = call["service"], call["operation"], call["params"]
        label = f"{command}: {service} {operation}"
        rule = getattr(self, f"_{service.replace('-', '_')}_{operation}", None)
        if rule is not None:
            rule(label, principal, params)
        elif (service, operation) in _SIMPLE:
            action, resource = _SIMPLE[(service, operation)]
            self.add(label, principal, action, resource(self, params) if callable(resource) else resource)
        elif service == "s3":
            self.unknown.append(f"{service} {operation}")
        else:
            prefix = {"sagemaker-runtime": "sagemaker"}.get(service, service)
            self.add(label + " (no rule: its own name, every resource)", principal, f"{prefix}:{operation}", "*")

    def _sts_GetCallerIdentity(self, label, principal, params):
        # "No permissions are required to perform this operation." (STS API reference, GetCallerIdentity)
        self.out.append(Request(label, principal, NO_PERMISSION, "*"))

    def _cloudformation_CreateChangeSet(self, label, principal, params):
        stack = self.arn("cloudformation", f"stack/{params['StackName']}/*")
        self.add(label, principal, "cloudformation:CreateChangeSet", stack)
        if params.get("RoleARN"):
            self.add(label, principal, "iam:PassRole", params["RoleARN"],
                     **{"iam:PassedToService": "cloudformation.amazonaws.com"})

    def _s3_HeadObject(self, label, principal, params):
        # "HeadObject": s3:GetObject; without s3:ListBucket a missing key answers 403, not 404.
        # https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
        self.artifact_keys.add((params["Bucket"], params["Key"]))
        self.add(label, principal, "s3:GetObject", self.s3_object(params["Bucket"], params["Key"]))
        self.add(label + " (a missing key)", principal, "s3:ListBucket", f"arn:aws:s3:::{params['Bucket']}")

    def _s3_PutObject(self, label, principal, params):
        self.artifact_keys.add((params["Bucket"], params["Key"]))
        self.s3_put(label, principal, params["Bucket"], params["Key"], params.get("ServerSideEncryption"),
                    params.get("SSEKMSKeyId"), bool(params.get("BucketKeyEnabled")))
        if params.get("Tagging"):
            # "PutObject": a put with tags needs s3:PutObjectTagging too.
            # https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html
            tags = dict(parse_qsl(params["Tagging"]))
            self.add(label + " (Tagging)", principal, "s3:PutObjectTagging",
                     self.s3_object(params["Bucket"], params["Key"]),
                     **{f"s3:RequestObjectTag/{key}": value for key, value in tags.items()},
                     **{"s3:RequestObjectTagKeys": list(tags)})

    def _s3_GetObject(self, label, principal, params):
        self.s3_get(label, principal, params["Bucket"], params["Key"])

    # verify's bucket reads. "Required permissions for Amazon S3 API operations":
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html
    def _s3_GetBucketEncryption(self, label, principal, params):
        self.add(label, principal, "s3:GetEncryptionConfiguration", f"arn:aws:s3:::{params['Bucket']}")

    def _s3_GetBucketPolicy(self, label, principal, params):
        self.add(label, principal, "s3:GetBucketPolicy", f"arn:aws:s3:::{params['Bucket']}")

    def _s3_GetBucketVersioning(self, label, principal, params):
        self.add(label, principal, "s3:GetBucketVersioning", f"arn:aws:s3:::{params['Bucket']}")

    def _ecr_CreateRepository(self, label, principal, params):
        repository = self.arn("ecr", f"repository/{params['repositoryName']}")
        self.add(label, principal, "ecr:CreateRepository", repository, **self.tags(params.get("tags")))
        if params.get("tags"):
            self.add(label + " (tags)", principal, "ecr:TagResource", repository, **self.tags(params.get("tags")))
        key = (params.get("encryptionConfiguration") or {}).get("kmsKey")
        if key:
            # "Encryption at rest" (ECR): the creator needs kms:CreateGrant and kms:DescribeKey on the key.
            # https://docs.aws.amazon.com/AmazonECR/latest/userguide/encryption-at-rest.html
            self.kms(label + " (KMS)", principal, ["kms:DescribeKey"], key, "ecr")
            self.kms(label + " (KMS)", principal, ["kms:CreateGrant"], key, "ecr",
                     **{"kms:GrantIsForAWSResource": "true"})

    def _ecr_DescribeRepositories(self, label, principal, params):
        for name in params.get("repositoryNames", []):
            self.add(label, principal, "ecr:DescribeRepositories", self.arn("ecr", f"repository/{name}"))

    def _sagemaker_CreateModel(self, label, principal, params):
        self.models[params["ModelName"]] = params
        model = self.arn("sagemaker", f"model/{params['ModelName'].lower()}")
        vpc = params.get("VpcConfig") or {}
        self.add(label, principal, "sagemaker:CreateModel", model, **self.tags(params.get("Tags")),
                 **{"sagemaker:VpcSubnets": vpc.get("Subnets", []),
                    "sagemaker:VpcSecurityGroupIds": vpc.get("SecurityGroupIds", []),
                    "sagemaker:NetworkIsolation": str(bool(params.get("EnableNetworkIsolation"))).lower()})
        self._tagging(label, principal, model, params)
        self.add(label + " (its role)", principal, "iam:PassRole", params["ExecutionRoleArn"],
                 **{"iam:PassedToService": "sagemaker.amazonaws.com"})

    def _sagemaker_CreateEndpointConfig(self, label, principal, params):
        self.endpoint_configs[params["EndpointConfigName"]] = params
        config = self.arn("sagemaker", f"endpoint-config/{params['EndpointConfigName'].lower()}")
        self.add(label, principal, "sagemaker:CreateEndpointConfig", config, **self.tags(params.get("Tags")))
        self._tagging(label, principal, config, params)

    def _sagemaker_CreateEndpoint(self, label, principal, params):
        endpoint = self.arn("sagemaker", f"endpoint/{params['EndpointName'].lower()}")
        config = self.arn("sagemaker", f"endpoint-config/{params['EndpointConfigName'].lower()}")
        for resource in (endpoint, config):
            self.add(label, principal, "sagemaker:CreateEndpoint", resource, **self.tags(params.get("Tags")))
        self._tagging(label, principal, endpoint, params)
        self._volume_key(label, principal, params["EndpointConfigName"])

    def _sagemaker_UpdateEndpoint(self, label, principal, params):
        for resource in (f"endpoint/{params['EndpointName'].lower()}",
                         f"endpoint-config/{params['EndpointConfigName'].lower()}"):
            self.add(label, principal, "sagemaker:UpdateEndpoint", self.arn("sagemaker", resource))
        self._volume_key(label, principal, params["EndpointConfigName"])

    def _sagemaker_CreateTransformJob(self, label, principal, params):
        job = self.arn("sagemaker", f"transform-job/{params['TransformJobName'].lower()}")
        self.add(label, principal, "sagemaker:CreateTransformJob", job, **self.tags(params.get("Tags")))
        self._tagging(label, principal, job, params)
        key = (params.get("TransformResources") or {}).get("VolumeKmsKeyId")
        if key:
            self._grant(label, principal, key)

    # build.sh monitor. What each job then does as its role (RoleArn) is asked of that role here: the baseline job
    # reads the baseline and writes its results; the hourly job reads the captures and those results and writes
    # the report ("Amazon SageMaker Model Monitor" permissions of the execution role, "How to use SageMaker AI
    # execution roles", https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html).
    def _sagemaker_CreateProcessingJob(self, label, principal, params):
        job = self.arn("sagemaker", f"processing-job/{params['ProcessingJobName'].lower()}")
        self.add(label, principal, "sagemaker:CreateProcessingJob", job, **self.tags(params.get("Tags")))
        self._tagging(label, principal, job, params)
        self._passes(label, principal, params["RoleArn"])
        key = params["ProcessingResources"]["ClusterConfig"].get("VolumeKmsKeyId")
        if key:
            self._grant(label, principal, key)
        output = params["ProcessingOutputConfig"]
        self._job_data("SageMaker, monitor's baseline job", params["RoleArn"], output.get("KmsKeyId"),
                       reads=[("its input", source["S3Input"]["S3Uri"]) for source in params["ProcessingInputs"]],
                       writes=[("its results", f"{target['S3Output']['S3Uri']}/statistics.json")
                               for target in output["Outputs"]])

    def _sagemaker_CreateDataQualityJobDefinition(self, label, principal, params):
        definition = self.arn("sagemaker", f"data-quality-job-definition/{params['JobDefinitionName'].lower()}")
        self.add(label, principal, "sagemaker:CreateDataQualityJobDefinition", definition,
                 **self.tags(params.get("Tags")))
        self._tagging(label, principal, definition, params)
        self._passes(label, principal, params["RoleArn"])
        role, job_label = params["RoleArn"], "SageMaker, monitor's hourly data-quality job"
        endpoint = params["DataQualityJobInput"]["EndpointInput"]["EndpointName"]
        reads = [("the baseline's results", resource["S3Uri"])
                 for resource in params["DataQualityBaselineConfig"].values()]
        for config in self.endpoint_configs.values():
            capture = config.get("DataCaptureConfig")
            if capture and capture["DestinationS3Uri"]:
                bucket = s3_location(capture["DestinationS3Uri"])[0]
                self.add(f"{job_label}: lists the hour's captures", role, "s3:ListBucket", f"arn:aws:s3:::{bucket}")
                reads.append(("the hour's captures", f"{capture['DestinationS3Uri'].rstrip('/')}/{endpoint}/"
                                                     "AllTraffic/2026/12/06/05/capture.jsonl"))
                break
        output = params["DataQualityJobOutputConfig"]
        self._job_data(job_label, role, output.get("KmsKeyId"), reads=reads,
                       writes=[("the report", f"{target['S3Output']['S3Uri']}/constraint_violations.json")
                               for target in output["MonitoringOutputs"]])

    def _sagemaker_CreateMonitoringSchedule(self, label, principal, params):
        schedule = self.arn("sagemaker", f"monitoring-schedule/{params['MonitoringScheduleName'].lower()}")
        self.add(label, principal, "sagemaker:CreateMonitoringSchedule", schedule, **self.tags(params.get("Tags")))
        self._tagging(label, principal, schedule, params)

    def _job_data(self, job_label, role, key, reads, writes):
        """What a monitoring job reads and writes (SSE-KMS with the output key) as its role."""
        for what, uri in reads:
            self.s3_get(f"{job_label}: reads {what}", role, *s3_location(uri))
        for what, uri in writes:
            self.s3_put(f"{job_label}: writes {what}", role, *s3_location(uri), "aws:kms", key, bucket_key=False)

    def _passes(self, label, principal, role):
        self.add(label + " (its role)", principal, "iam:PassRole", role,
                 **{"iam:PassedToService": "sagemaker.amazonaws.com"})

    def _tagging(self, label, principal, resource, params):
        # A Create* with Tags is also authorized as sagemaker:AddTags ("Add tags when creating a resource",
        # https://docs.aws.amazon.com/sagemaker/latest/dg/security_iam_id-based-policy-examples.html).
        if params.get("Tags"):
            self.add(label + " (Tags)", principal, "sagemaker:AddTags", resource, **self.tags(params["Tags"]))

    def _volume_key(self, label, principal, config_name):
        key = (self.endpoint_configs.get(config_name) or {}).get("KmsKeyId")
        if key:
            self._grant(label, principal, key)

    def _grant(self, label, principal, key):
        # SageMaker encrypts the ML storage volume through a grant it creates as the caller ("KmsKeyId",
        # CreateEndpointConfig / TransformResources API reference).
        self.kms(label + " (volume key)", principal, ["kms:DescribeKey"], key, "sagemaker")
        self.kms(label + " (volume key)", principal, ["kms:CreateGrant"], key, "sagemaker",
                 **{"kms:GrantIsForAWSResource": "true"})

    def _cloudwatch_PutMetricAlarm(self, label, principal, params):
        alarm = self.arn("cloudwatch", f"alarm:{params['AlarmName']}")
        self.add(label, principal, "cloudwatch:PutMetricAlarm", alarm, **self.tags(params.get("Tags")))
        if params.get("Tags"):
            self.add(label + " (Tags)", principal, "cloudwatch:TagResource", alarm, **self.tags(params["Tags"]))

    def _cloudwatch_DeleteAlarms(self, label, principal, params):
        for name in params["AlarmNames"]:
            self.add(label, principal, "cloudwatch:DeleteAlarms", self.arn("cloudwatch", f"alarm:{name}"))

    def _cloudwatch_DescribeAlarms(self, label, principal, params):
        names = params.get("AlarmNames") or [f"{params.get('AlarmNamePrefix', '')}*"]
        for name in names:
            self.add(label, principal, "cloudwatch:DescribeAlarms", self.arn("cloudwatch", f"alarm:{name}"))


def _sagemaker(kind: str, key: str):
    return lambda self, params: self.arn("sagemaker", f"{kind}/{params[key].lower()}")


def _stack(self, params):
    return self.arn("cloudformation", f"stack/{params['StackName']}/*")


def _role(self, params):
    return f"arn:aws:iam::{self.account}:role/{params['RoleName']}"


# One operation, one action on one resource (or "*" where the action has no resource type).
_SIMPLE = {
    ("cloudformation", "DescribeStacks"): ("cloudformation:DescribeStacks", _stack),
    ("cloudformation", "DescribeChangeSet"): ("cloudformation:DescribeChangeSet", _stack),
    ("cloudformation", "ExecuteChangeSet"): ("cloudformation:ExecuteChangeSet", _stack),
    ("ecr", "GetAuthorizationToken"): ("ecr:GetAuthorizationToken", "*"),
    ("iam", "GetRole"): ("iam:GetRole", _role),
    ("sagemaker", "DescribeModel"): ("sagemaker:DescribeModel", _sagemaker("model", "ModelName")),
    ("sagemaker", "DeleteModel"): ("sagemaker:DeleteModel", _sagemaker("model", "ModelName")),
    ("sagemaker", "DescribeEndpointConfig"): ("sagemaker:DescribeEndpointConfig",
                                              _sagemaker("endpoint-config", "EndpointConfigName")),
    ("sagemaker", "DeleteEndpointConfig"): ("sagemaker:DeleteEndpointConfig",
                                            _sagemaker("endpoint-config", "EndpointConfigName")),
    ("sagemaker", "DescribeEndpoint"): ("sagemaker:DescribeEndpoint", _sagemaker("endpoint", "EndpointName")),
    ("sagemaker", "DeleteEndpoint"): ("sagemaker:DeleteEndpoint", _sagemaker("endpoint", "EndpointName")),
    ("sagemaker", "DescribeTransformJob"): ("sagemaker:DescribeTransformJob",
                                            _sagemaker("transform-job", "TransformJobName")),
    ("sagemaker", "DescribeProcessingJob"): ("sagemaker:DescribeProcessingJob",
                                             _sagemaker("processing-job", "ProcessingJobName")),
    ("sagemaker", "DescribeDataQualityJobDefinition"): ("sagemaker:DescribeDataQualityJobDefinition",
                                                        _sagemaker("data-quality-job-definition", "JobDefinitionName")),
    ("sagemaker", "DescribeMonitoringSchedule"): ("sagemaker:DescribeMonitoringSchedule",
                                                  _sagemaker("monitoring-schedule", "MonitoringScheduleName")),
    ("sagemaker", "UpdateMonitoringSchedule"): ("sagemaker:UpdateMonitoringSchedule",
                                                _sagemaker("monitoring-schedule", "MonitoringScheduleName")),
    ("sagemaker", "ListModels"): ("sagemaker:ListModels", "*"),
    ("sagemaker", "ListEndpointConfigs"): ("sagemaker:ListEndpointConfigs", "*"),
    ("sagemaker", "ListEndpoints"): ("sagemaker:ListEndpoints", "*"),
    ("sagemaker", "ListTags"): ("sagemaker:ListTags", lambda self, params: params["ResourceArn"]),
    ("dynamodb", "PutItem"): ("dynamodb:PutItem", lambda self, params: self.arn("dynamodb",
                                                                                  f"table/{params['TableName']}")),
    ("sagemaker-runtime", "InvokeEndpoint"): ("sagemaker:InvokeEndpoint", _sagemaker("endpoint", "EndpointName")),
    ("application-autoscaling", "RegisterScalableTarget"): ("application-autoscaling:RegisterScalableTarget", "*"),
    ("application-autoscaling", "DeregisterScalableTarget"): ("application-autoscaling:DeregisterScalableTarget",
                                                              "*"),
    ("application-autoscaling", "DescribeScalableTargets"): ("application-autoscaling:DescribeScalableTargets", "*"),
    ("application-autoscaling", "PutScalingPolicy"): ("application-autoscaling:PutScalingPolicy", "*"),
    ("application-autoscaling", "DescribeScalingPolicies"): ("application-autoscaling:DescribeScalingPolicies", "*"),
    ("application-autoscaling", "DeleteScalingPolicy"): ("application-autoscaling:DeleteScalingPolicy", "*"),
}


def s3_location(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")
