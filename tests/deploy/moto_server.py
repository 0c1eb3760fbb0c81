"""moto's server, plus what the deployment tests need from SageMaker, CloudFormation and KMS that moto lacks.
Each rule names the AWS page it follows.

- UpdateEndpoint, which moto does not implement: the endpoint moves to the new config when every image of the
  new config can be pulled; otherwise the update fails as SageMaker's blue/green update fails, leaving the
  endpoint InService on its previous config with a FailureReason. CreateEndpoint likewise ends Failed.
  Images on a loopback registry are checked for real (HEAD of the manifest, with the ECR token moto hands out);
  other images are taken as pullable. As the API reference says: the variants take their instance count,
  weight and data capture from the new config unless RetainAllVariantProperties is true (then the current ones
  stay, less ExcludeRetainedVariantProperties), and a canary larger than 50% of the variant's instance count
  (rounded up to whole instances) is refused.
  ("UpdateEndpoint", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html;
  "TrafficRoutingConfig", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html;
  "CreateEndpoint", https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpoint.html)
- CloudFormation's AWS::LanguageExtensions transform (Fn::ForEach), which moto does not expand: a change set's
  template is expanded with cfn-lint's implementation of it, for the change set's parameter values, as
  CloudFormation expands it before it computes the changes. And a stack made or changed by a change set gets
  the new template's outputs and parameters, which moto 5.2 leaves behind; a key's KeyPolicy object is kept as
  the JSON text that GetKeyPolicy returns (moto keeps the object and then fails on it).
  ("AWS::LanguageExtensions transform",
  https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/transform-aws-languageextensions.html;
  "ExecuteChangeSet", https://docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_ExecuteChangeSet.html;
  "GetKeyPolicy", https://docs.aws.amazon.com/kms/latest/APIReference/API_GetKeyPolicy.html)
- AWS::CloudTrail::Trail, which moto's CloudFormation does not create: CreateTrail with the resource's properties,
  then StartLogging when IsLogging is true; Fn::GetAtt Arn is the trail's ARN. ("AWS::CloudTrail::Trail",
  https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-cloudtrail-trail.html)
- A journal of every request (operation and parameters, one JSON object per line) for the fields that moto
  accepts and then drops, such as CreateModel's EnableNetworkIsolation and UpdateEndpoint's DeploymentConfig.

Usage: python tests/deploy/moto_server.py --journal PATH --port PORT
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import threading
import urllib.error
import urllib.parse
import urllib.request

from moto.cloudformation.models import CloudFormationBackend
from moto.cloudtrail.models import cloudtrail_backends
from moto.core.common_models import CloudFormationModel
from moto.core.responses import ActionResult
from moto.kms.models import Key
from moto.core.utils import utcnow
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse
from werkzeug.serving import run_simple

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def unpullable_image(backend: SageMakerModelBackend, config: dict) -> str | None:
    """Why an image of the endpoint config cannot be pulled, or None."""
    for variant in config["ProductionVariants"]:
        image = backend._models[variant["ModelName"]].primary_container.get("Image", "")
        host, _, path = image.partition("/")
        if host.split(":")[0] not in LOOPBACK_HOSTS:
            continue
        repository, _, reference = path.partition("@")
        token = base64.b64encode(f"AWS:{backend.account_id}-auth-token".encode()).decode()
        request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{reference}", method="HEAD",
                                         headers={"Authorization": f"Basic {token}", "Accept": "*/*"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except (urllib.error.URLError, OSError) as error:
            return f"CannotStartContainerError: the image {image} could not be pulled ({error})"
    return None


RETAINED = {"DesiredInstanceCount": ("CurrentInstanceCount", "DesiredInstanceCount"),
            "DesiredWeight": ("CurrentWeight", "DesiredWeight")}


def variants_after_update(endpoint, config: dict, retain: bool, excluded: set[str]) -> list[dict]:
    variants = endpoint._process_production_variants(config["ProductionVariants"])
    if retain:
        current = {variant["VariantName"]: variant for variant in endpoint.production_variants}
        for variant in variants:
            for prop, keys in RETAINED.items():
                if prop not in excluded and variant["VariantName"] in current:
                    variant.update({key: current[variant["VariantName"]][key] for key in keys})
    return variants


def canary_refusal(deployment: dict | None, variants: list[dict]) -> str | None:
    """TrafficRoutingConfig.CanarySize: 'Value must be less than or equal to 50% of the variant's total instance
    count'."""
    routing = ((deployment or {}).get("BlueGreenUpdatePolicy") or {}).get("TrafficRoutingConfiguration") or {}
    size = routing.get("CanarySize")
    if routing.get("Type") != "CANARY" or size is None:
        return None
    for variant in variants:
        count = variant["DesiredInstanceCount"]
        instances = size["Value"] if size["Type"] == "INSTANCE_COUNT" else math.ceil(count * size["Value"] / 100)
        if instances * 2 > count:
            return (f"Canary size of {instances} instance(s) exceeds 50% of the {count} instance(s) of variant "
                    f"{variant['VariantName']}.")
    return None


def update_endpoint(self: SageMakerResponse) -> ActionResult:
    backend = self.sagemaker_backend
    name = self._get_param("EndpointName")
    endpoint = backend.endpoints.get(name)
    if endpoint is None:
        raise ValidationError(message=f"Could not find endpoint '{name}'.")
    config_name = self._get_param("EndpointConfigName")
    config = backend.describe_endpoint_config(config_name)
    retain = bool(self._get_param("RetainAllVariantProperties"))
    excluded = {item["VariantPropertyType"] for item in self._get_param("ExcludeRetainedVariantProperties") or []}
    variants = variants_after_update(endpoint, config, retain, excluded)
    refusal = canary_refusal(self._get_param("DeploymentConfig"), variants)
    if refusal:
        raise ValidationError(message=refusal)
    endpoint.failure_reason = unpullable_image(backend, config)
    if endpoint.failure_reason is None:
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = variants
        if not retain or "DataCaptureConfig" in excluded:
            endpoint.data_capture_config = config.get("DataCaptureConfig")
    endpoint.last_modified_time = utcnow()
    return ActionResult({"EndpointArn": endpoint.arn})


_create_endpoint = SageMakerModelBackend.create_endpoint


def create_endpoint(self: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str, tags):
    endpoint = _create_endpoint(self, endpoint_name, endpoint_config_name, tags)
    endpoint.failure_reason = unpullable_image(self, self.describe_endpoint_config(endpoint_config_name))
    if endpoint.failure_reason:
        endpoint.endpoint_status = "Failed"
    return endpoint


def expand_language_extensions(template: str, parameters: dict[str, str]) -> str:
    """The template with Fn::ForEach unrolled for these parameter values (unchanged without the transform)."""
    from cfnlint.decode import decode_str  # imported here: it slows the server's start by seconds
    from cfnlint.template import Template
    from cfnlint.template.transforms.transform import Transform

    body, problems = decode_str(template)
    if problems or "AWS::LanguageExtensions" not in str(body.get("Transform", "")):
        return template
    for name, value in parameters.items():
        if name in body.get("Parameters", {}):
            body["Parameters"][name]["Default"] = value
    expanded = Template("change-set.yaml", body, ["us-east-1"])
    problems = Transform().transform(expanded)
    if problems:
        raise ValueError(f"Transform AWS::LanguageExtensions failed: {problems[0].message}")
    result = dict(expanded.template)
    result.pop("Transform")
    return json.dumps(result, default=str)


_create_change_set = CloudFormationBackend.create_change_set


def create_change_set(self: CloudFormationBackend, **request):
    request["template"] = expand_language_extensions(request["template"], request["parameters"])
    return _create_change_set(self, **request)


_execute_change_set = CloudFormationBackend.execute_change_set


def execute_change_set(self: CloudFormationBackend, change_set_name: str, stack_name: str | None = None) -> None:
    _execute_change_set(self, change_set_name, stack_name)
    change_set = self.describe_change_set(change_set_name)
    stack = self.stacks[change_set.stack_id]
    stack.parameters = change_set.parameters
    stack._parse_template()
    stack.output_map = stack._create_output_map()


_create_key = Key.create_from_cloudformation_json.__func__


def create_key(cls, *args, **kwargs) -> Key:
    key = _create_key(cls, *args, **kwargs)
    if isinstance(key.policy, dict):
        key.policy = json.dumps(key.policy)
    return key


def _true(value) -> bool:
    return str(value).lower() == "true"


class CloudFormationTrail(CloudFormationModel):
    """AWS::CloudTrail::Trail for moto's CloudFormation (see the module's docstring)."""

    __module__ = "moto.cloudtrail.stand_in"  # moto files its models by the service in their module's name

    def __init__(self, trail):
        self.trail = trail

    @staticmethod
    def cloudformation_name_type() -> str:
        return "TrailName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudTrail::Trail"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name,
                                        **kwargs) -> "CloudFormationTrail":
        properties = cloudformation_json["Properties"]
        backend = cloudtrail_backends[account_id][region_name]
        trail = backend.create_trail(
            name=properties.get("TrailName", resource_name), bucket_name=properties["S3BucketName"],
            s3_key_prefix=properties.get("S3KeyPrefix"), sns_topic_name=properties.get("SnsTopicName"),
            is_global=_true(properties.get("IncludeGlobalServiceEvents", True)),
            is_multi_region=_true(properties.get("IsMultiRegionTrail", False)),
            log_validation=_true(properties.get("EnableLogFileValidation", False)),
            is_org_trail=_true(properties.get("IsOrganizationTrail", False)),
            cw_log_group_arn=properties.get("CloudWatchLogsLogGroupArn"),
            cw_role_arn=properties.get("CloudWatchLogsRoleArn"), kms_key_id=properties.get("KMSKeyId"),
            tags_list=properties.get("Tags", []))
        if _true(properties.get("IsLogging")):
            backend.start_logging(trail.trail_name)
        return cls(trail)

    @property
    def physical_resource_id(self) -> str:
        return self.trail.trail_name

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.trail.arn


class Journal:
    """WSGI middleware that appends each request's operation and parameters to a file."""

    def __init__(self, app, path: str):
        self.app, self.path, self.lock = app, path, threading.Lock()

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:  # JSON protocols: SageMaker, ECR, Application Auto Scaling
            entry = {"operation": target.rsplit(".", 1)[-1], "params": json.loads(body or b"{}")}
        else:  # query protocols: STS, IAM
            form = {key: values[0] for key, values in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
            entry = {"operation": form.pop("Action", environ.get("PATH_INFO", "")), "params": form}
        with self.lock, open(self.path, "a") as journal:
            journal.write(json.dumps(entry) + "\n")
        return self.app(environ, start_response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journal", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    SageMakerResponse.update_endpoint = update_endpoint
    SageMakerModelBackend.create_endpoint = create_endpoint
    CloudFormationBackend.create_change_set = create_change_set
    CloudFormationBackend.execute_change_set = execute_change_set
    Key.create_from_cloudformation_json = classmethod(create_key)
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, Journal(app, args.journal), threaded=True)


if __name__ == "__main__":
    main()
