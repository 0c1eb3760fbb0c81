"""The stage's platform stack (containers/infra/platform.yaml): its parameters come from the deploy config, it is
created or updated through a change set that is printed before it is executed, and its outputs fill the config's
{platform.NAME} placeholders.

CloudFormation does the provisioning; this module only builds the request, prints the plan and waits.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import yaml
from botocore.exceptions import ClientError, WaiterError

from . import DeployError, plan as plans, say
from .aws import DRY_RUN_ACCOUNT, error_code

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "platform.yaml"
# NAMED_IAM: the roles have names; AUTO_EXPAND: the AWS::LanguageExtensions transform (Fn::ForEach).
CAPABILITIES = ["CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
_NAME_PROPERTIES = ("BucketName", "TableName", "LogGroupName", "RoleName", "PolicyName", "TopicName", "AliasName",
                    "AlarmName", "Name")
# The region's one group per kind of SageMaker job, made by the first stage's stack (SageMakerJobLogGroups).
TRANSFORM_LOG_GROUP = "/aws/sagemaker/TransformJobs"
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
JOB_LOG_GROUPS = (TRANSFORM_LOG_GROUP, PROCESSING_LOG_GROUP)
_WAIT = {"Delay": 10, "MaxAttempts": 360}  # an hour: the stack's creation takes minutes, a key's policy checks too


def stack_name(stage: str) -> str:
    return f"clinical-inference-{stage}"


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, !GetAtt a.b, ...) read as their long forms."""


def _short_form(loader: yaml.SafeLoader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_form)


def template(path: Path = TEMPLATE) -> dict:
    return yaml.load(path.read_text(), Loader=_TemplateLoader)  # noqa: S506 (a SafeLoader subclass)


def output_names(path: Path = TEMPLATE) -> list[str]:
    return list(template(path)["Outputs"])


def endpoint_names(config: dict) -> list[str]:
    """The endpoints the config deploys (each gets its log group before SageMaker creates it)."""
    # Read from the config as plans.build names them: building a plan would need the images (a GPU family's labels)
    # and the models' artifacts, which the stack comes before.
    return [name for family in config["families"].values() for name in
            ([family["multi_model_endpoint"]["endpoint_name"]] if family["mode"] == "MultiModel"
             else [model["endpoint_name"] for model in family["models"]])]


def parameters(config: dict) -> dict[str, str]:
    """The stack's parameters for a stage config (its "platform" section, stage, endpoints and repositories)."""
    platform = config.get("platform")
    if platform is None:
        raise DeployError('the config has no "platform" section: add at least platform.source (the repository '
                          "CodeBuild builds); see containers/deploy/config.schema.json")
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", config["stage"]):
        raise DeployError(f"stage '{config['stage']}': the platform stack needs a stage of at most 8 lowercase "
                          "letters and digits, starting with a letter (bucket names carry it, the account and the "
                          "region within S3's 63 characters)")
    values = {
        "Stage": config["stage"],
        "EndpointNames": ",".join(endpoint_names(config)),
        "RepositoryNames": ",".join(sorted({family["image"]["repository"]
                                            for family in config["families"].values()})),
        "SourceType": platform["source"]["type"],
        "SourceLocation": platform["source"]["location"],
    }
    if "namespace" in config.get("metrics", {}):
        values["MetricsNamespace"] = config["metrics"]["namespace"]
    optional = {"LogRetentionDays": "log_retention_days", "PredictionTtlDays": "prediction_ttl_days",
                "AlertEmail": "alert_email", "BuildImage": "build_image", "ExistingTrailArn": "existing_trail_arn",
                "SageMakerJobLogGroups": "sagemaker_job_log_groups"}
    values.update({name: str(platform[key]) for name, key in optional.items() if key in platform})
    return values


def creates_job_log_groups(values: dict[str, str]) -> bool:
    """Whether the stack makes the region's SageMaker job log groups (not another stage's stack)."""
    return values.get("SageMakerJobLogGroups", "create") == "create"


def outputs(aws, stage: str) -> dict[str, str]:
    """The stack's outputs; in a dry run, <platform.NAME> for each (nothing is read)."""
    if aws.dry_run:
        say(f"dry run: the outputs of stack {stack_name(stage)} are shown as <platform.NAME>")
        return {name: f"<platform.{name}>" for name in output_names()}
    stack = _describe(aws.client("cloudformation"), stack_name(stage))
    if stack is not None and stack["StackStatus"] == "ROLLBACK_COMPLETE":
        raise DeployError(rolled_back(stack_name(stage)))
    if stack is None or stack["StackStatus"] == "REVIEW_IN_PROGRESS":
        raise DeployError(not_deployed(stage, aws.region))
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def render(config: dict, path: Path = TEMPLATE) -> dict:
    """The template as CloudFormation expands it for this config: Fn::ForEach unrolled, the config's parameter
    values as defaults. What checkov scans, since it does not expand the transform itself. Needs cfn-lint."""
    from cfnlint.decode import decode
    from cfnlint.template import Template
    from cfnlint.template.transforms.transform import Transform

    body, problems = decode(str(path))
    if problems:
        raise DeployError(f"{path} cannot be read: {problems[0]}")
    for key, value in parameters(config).items():
        body["Parameters"][key]["Default"] = value
    expanded = Template(str(path), body, ["us-east-1"])
    problems = Transform().transform(expanded)
    if problems:
        raise DeployError(f"{path}: Fn::ForEach cannot be expanded: {problems[0]}")
    result = dict(expanded.template)
    result.pop("Transform")
    return result


def env_name(output: str) -> str:
    """XgboostPredictionTtlDays -> XGBOOST_PREDICTION_TTL_DAYS."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", output).upper()


# The guides' names for what the outputs and the config call otherwise.
GUIDE_NAMES = {"PAT_ENDPOINT": "PAT_ENDPOINT_NAME", "KEY_ARN": "XGBOOST_KMS_KEY_ID"}


def service_env(config: dict, values: dict[str, str], region: str) -> dict[str, str]:
    """The rest of the guides' variables (clinical_services reads them): each model's endpoint under its env_name
    (a multi-model endpoint's name for each of its models), the key and the region."""
    env = {"AWS_REGION": region}
    for family in config["families"].values():
        for model in family["models"]:
            env[model["env_name"]] = (family["multi_model_endpoint"]["endpoint_name"]
                                      if family["mode"] == "MultiModel" else model["endpoint_name"])
    known = {**{env_name(key): value for key, value in values.items()}, **env}
    env.update({guide: known[name] for name, guide in GUIDE_NAMES.items() if name in known})
    return env


def deploy(stage) -> None:
    """Creates or updates the stage's stack through a change set, printed before it is executed; writes the
    outputs to STATE/<stage>/platform.json and platform.env."""
    config, aws, name = stage.config, stage.aws, stack_name(stage.name)
    values = parameters(config)
    cloudformation = aws.client("cloudformation")
    current = None if aws.dry_run else _describe(cloudformation, name)
    status = current["StackStatus"] if current else None
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(rolled_back(name))
    if status and status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        raise DeployError(f"stack {name} is {status}: wait until it settles, then run ./build.sh infra again")
    kind = "UPDATE" if status and status != "REVIEW_IN_PROGRESS" else "CREATE"
    if not aws.dry_run:
        in_the_way = _log_groups_in_the_way(aws.client("logs"), cloudformation, name, values, kind == "UPDATE")
        if in_the_way:
            raise DeployError(f"log group {', '.join(in_the_way)} exists outside stack {name} (kept from an earlier "
                              "stack or endpoint, or made by SageMaker), so creating it would fail: import it into "
                              "the stack (a change set of type IMPORT) or export and delete it"
                              + (f"; for {' and '.join(JOB_LOG_GROUPS)}, or set "
                                 "platform.sagemaker_job_log_groups to existing"
                                 if set(JOB_LOG_GROUPS) & set(in_the_way) else "")
                              + "; then run ./build.sh infra again")
    change_set = time.strftime("infra-%Y%m%d-%H%M%S", time.gmtime())
    request = {"StackName": name, "ChangeSetName": change_set, "ChangeSetType": kind,
               "Parameters": [{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()],
               "Capabilities": CAPABILITIES, "Tags": plans.tags(config),
               "Description": f"./build.sh infra, stage {stage.name}"}
    if aws.dry_run:
        _print_dry_run(request, stage)
        return
    cloudformation.create_change_set(TemplateBody=TEMPLATE.read_text(), **request)
    if not _wait_for_change_set(cloudformation, name, change_set):
        say(f"stack {name} is up to date: the change set has no changes (deleted)")
    else:
        _print_changes(cloudformation, name, change_set)
        say(f"executing change set {change_set} on stack {name}")
        cloudformation.execute_change_set(StackName=name, ChangeSetName=change_set)
        _wait_for_stack(cloudformation, name, kind)
    values = outputs(aws, stage.name)
    env = {**{env_name(key): value for key, value in values.items()}, **service_env(config, values, aws.region)}
    stage.write("platform.env", "".join(f"{key}={value}\n" for key, value in sorted(env.items())))
    print(stage.write("platform.json", {"stack": name, "region": aws.region, "outputs": values}))


def _log_groups_in_the_way(logs, cloudformation, name: str, values: dict, exists: bool) -> list[str]:
    """The named log groups the template creates that exist outside the stack: CloudFormation's create of each would
    fail with AlreadyExists ("AWS::Logs::LogGroup",
    https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-logs-loggroup.html)."""
    wanted = [f"/aws/sagemaker/Endpoints/{endpoint}" for endpoint in values["EndpointNames"].split(",")]
    wanted.append(f"/aws/codebuild/{name}-build")
    if creates_job_log_groups(values):
        wanted += JOB_LOG_GROUPS
    ours = set()
    if exists:
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=name):
            ours.update(resource["PhysicalResourceId"] for resource in page["StackResourceSummaries"]
                        if resource["ResourceType"] == "AWS::Logs::LogGroup")
    return [group for group in wanted if group not in ours and any(
        found["logGroupName"] == group for found in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"])]


def not_deployed(stage: str, region: str) -> str:
    return (f"the config uses the outputs of the platform stack {stack_name(stage)}, which is not deployed in "
            f"{region}: run ./build.sh infra first (STAGE={stage})")


def rolled_back(name: str) -> str:
    # RetainExceptOnCreate: the rollback of a failed create deleted what it had created, so nothing named is left
    # to collide with ("DeletionPolicy attribute",
    # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-attribute-deletionpolicy.html).
    return (f"stack {name} failed its creation and was rolled back (its events say why); CloudFormation cannot "
            f"update it: delete it (aws cloudformation delete-stack --stack-name {name}), fix the cause and run "
            "./build.sh infra again")


def _describe(cloudformation, name: str) -> dict | None:
    try:
        return cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as error:
        if error_code(error) == "ValidationError" and "does not exist" in str(error):
            return None
        raise


def _wait_for_change_set(cloudformation, name: str, change_set: str) -> bool:
    """True when the change set is ready; False (and deleted) when it holds no changes."""
    try:
        cloudformation.get_waiter("change_set_create_complete").wait(
            StackName=name, ChangeSetName=change_set, WaiterConfig={"Delay": 5, "MaxAttempts": 120})
        return True
    except WaiterError:
        described = cloudformation.describe_change_set(StackName=name, ChangeSetName=change_set)
        reason = described.get("StatusReason", "")
        if any(text in reason for text in _NO_CHANGES):
            cloudformation.delete_change_set(StackName=name, ChangeSetName=change_set)
            return False
        raise DeployError(f"CloudFormation could not create change set {change_set} for stack {name}: "
                          f"{described.get('Status')}: {reason}") from None


def _print_changes(cloudformation, name: str, change_set: str) -> None:
    say(f"change set {change_set} for stack {name}:")
    for page in cloudformation.get_paginator("describe_change_set").paginate(StackName=name,
                                                                            ChangeSetName=change_set):
        for detail in (change["ResourceChange"] for change in page["Changes"] if "ResourceChange" in change):
            replacement = detail.get("Replacement")
            say(f"  {detail['Action']:<8} {detail['ResourceType']:<28} {detail['LogicalResourceId']}"
                + (f" (replacement: {replacement})" if replacement and replacement != "False" else ""))


def _wait_for_stack(cloudformation, name: str, kind: str) -> None:
    waiter = "stack_create_complete" if kind == "CREATE" else "stack_update_complete"
    try:
        cloudformation.get_waiter(waiter).wait(StackName=name, WaiterConfig=_WAIT)
    except WaiterError:
        events = cloudformation.describe_stack_events(StackName=name)["StackEvents"]
        failures = [f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason', '')}"
                    for event in events if event["ResourceStatus"].endswith("_FAILED")][:10]
        raise DeployError(f"stack {name} did not reach {kind}_COMPLETE; CloudFormation rolls it back. Failed: "
                          + ("; ".join(failures) or "see the stack's events")) from None
    say(f"stack {name}: {kind}_COMPLETE")


# --- Dry run ---------------------------------------------------------------------------------------------------


def _print_dry_run(request: dict, stage) -> None:
    """The change set request as an AWS CLI command, then what the template creates for these parameters."""
    parameters_text = " ".join(f"ParameterKey={p['ParameterKey']},ParameterValue={_cli_value(p['ParameterValue'])}"
                               for p in request["Parameters"])
    say(f"dry run: stack {request['StackName']} is taken to be absent, so its change set creates everything")
    print(f"+ aws cloudformation create-change-set --stack-name {request['StackName']} --change-set-name "
          f"{request['ChangeSetName']} --change-set-type {request['ChangeSetType']} --template-body "
          f"file://{os.path.relpath(TEMPLATE)} --capabilities {' '.join(CAPABILITIES)} --parameters {parameters_text}", file=sys.stderr)
    print(f"+ aws cloudformation execute-change-set --stack-name {request['StackName']} --change-set-name "
          f"{request['ChangeSetName']}", file=sys.stderr)
    values = {p["ParameterKey"]: p["ParameterValue"] for p in request["Parameters"]}
    body = template()
    for key, spec in body["Parameters"].items():
        values.setdefault(key, str(spec.get("Default", "")))
    pseudo = {"AWS::AccountId": DRY_RUN_ACCOUNT, "AWS::Region": stage.aws.region, "AWS::Partition": "aws"}
    say(f"plan for stack {request['StackName']} ({TEMPLATE.name}), parameters: "
        + ", ".join(f"{key}={value}" for key, value in values.items()))
    for logical_id, resource, variables in _resources(body, values):
        name = next((resource.get("Properties", {})[key] for key in _NAME_PROPERTIES
                     if key in resource.get("Properties", {})), None)
        shown = _substitute(name, {**values, **pseudo, **variables}) if name is not None else ""
        condition = f" (only when {resource['Condition']})" if "Condition" in resource else ""
        say(f"  Add      {resource['Type']:<28} {logical_id} {shown}".rstrip() + condition)
    say(f"  outputs: {', '.join(body['Outputs'])}")


def _resources(body: dict, values: dict):
    """(logical id, resource, loop variables) of every resource, Fn::ForEach loops unrolled."""
    for key, resource in body["Resources"].items():
        if not key.startswith("Fn::ForEach::"):
            yield key, resource, {}
            continue
        variable, collection, fragment = resource
        items = values[collection["Ref"]].split(",") if isinstance(collection, dict) else collection
        for item in items:
            for logical_id, inner in fragment.items():
                expanded = logical_id.replace(f"&{{{variable}}}", re.sub(r"[^A-Za-z0-9]", "", item))
                yield expanded, inner, {variable: item}


def _substitute(value, variables: dict) -> str:
    """A name as CloudFormation resolves it: Fn::Sub of parameters and pseudo parameters, Ref of a parameter."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        value = value["Fn::Sub"] if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"][0]
    elif isinstance(value, dict) and "Ref" in value:
        return variables.get(value["Ref"], str(value))
    return re.sub(r"\$\{([^}]+)\}", lambda match: variables.get(match.group(1), match.group(0)), str(value))


def _cli_value(value: str) -> str:
    return value.replace(",", "\\,") if value else '""'
