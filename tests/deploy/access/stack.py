"""The platform stack's policies as CloudFormation would create them: the template expanded for a stage config
(sagemaker_deploy.stack.render: Fn::ForEach through cfn-lint), then Ref, Fn::Sub, Fn::GetAtt, Fn::If and friends
resolved with the stage's account, region and the key id that the stack got."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sagemaker_deploy import stack as stacks

_NO_VALUE = object()
_ARN_ATTRIBUTES = {
    "AWS::KMS::Key": "arn:{p}:kms:{r}:{a}:key/{id}",
    "AWS::S3::Bucket": "arn:{p}:s3:::{id}",
    "AWS::IAM::Role": "arn:{p}:iam::{a}:role/{id}",
    "AWS::Logs::LogGroup": "arn:{p}:logs:{r}:{a}:log-group:{id}:*",
    "AWS::DynamoDB::Table": "arn:{p}:dynamodb:{r}:{a}:table/{id}",
    "AWS::SNS::Topic": "{id}",
    "AWS::CloudTrail::Trail": "arn:{p}:cloudtrail:{r}:{a}:trail/{id}",
}
_NAME_PROPERTY = {"AWS::S3::Bucket": "BucketName", "AWS::IAM::Role": "RoleName", "AWS::Logs::LogGroup": "LogGroupName",
                  "AWS::DynamoDB::Table": "TableName", "AWS::KMS::Alias": "AliasName",
                  "AWS::CloudTrail::Trail": "TrailName", "AWS::CloudWatch::Alarm": "AlarmName",
                  "AWS::CodeBuild::Project": "Name"}


@dataclass
class Policy:
    """One policy document and the name the table gives its statements (a Sid, else the statement's number)."""
    name: str
    document: dict

    def statements(self) -> list[tuple[str, dict]]:
        statements = self.document["Statement"]
        statements = statements if isinstance(statements, list) else [statements]
        return [(f"{self.name}: {s.get('Sid') or f'statement {i + 1}'}", s) for i, s in enumerate(statements)]


@dataclass
class StackPolicies:
    account: str
    region: str
    key_arn: str
    alias_arns: dict[str, str]  # alias ARN -> key ARN
    identity: dict[str, list[Policy]] = field(default_factory=dict)  # role ARN -> its policies
    resource: dict[str, Policy] = field(default_factory=dict)  # bucket/key/topic/role ARN -> its policy
    resources: dict = field(default_factory=dict)  # logical id -> the resolved resource
    topic_keys: dict[str, str] = field(default_factory=dict)  # topic ARN -> its KMS key
    outputs: dict[str, str] = field(default_factory=dict)  # the stack's outputs, resolved

    def role_arn(self, logical_id: str) -> str:
        return self.resources[logical_id]["Arn"]

    def key_arn_of(self, key_id: str) -> str:
        """The key a request's key id names, as KMS resolves it (an alias ARN, a key ARN or a bare key id)."""
        if key_id in self.alias_arns:
            return self.alias_arns[key_id]
        if key_id.startswith("arn:"):
            return key_id
        return f"arn:aws:kms:{self.region}:{self.account}:key/{key_id}"


class _Resolver:
    def __init__(self, template: dict, account: str, region: str, physical_ids: dict[str, str]):
        self.template, self.physical_ids = template, physical_ids
        self.pseudo = {"AWS::AccountId": account, "AWS::Region": region, "AWS::Partition": "aws",
                       "AWS::URLSuffix": "amazonaws.com", "AWS::NoValue": _NO_VALUE}
        self.parameters = {name: spec.get("Default", "") for name, spec in template.get("Parameters", {}).items()}
        self.format = {"p": "aws", "r": region, "a": account}

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def ref(self, name: str):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            spec = self.template["Parameters"][name]
            value = str(self.parameters[name])
            return value.split(",") if spec.get("Type") == "CommaDelimitedList" else value
        return self.physical_id(name)

    def physical_id(self, logical_id: str) -> str:
        if logical_id in self.physical_ids:
            return self.physical_ids[logical_id]
        resource = self.template["Resources"][logical_id]
        kind = resource["Type"]
        if kind == "AWS::SNS::Topic":
            return "arn:aws:sns:{r}:{a}:".format(**self.format) + self.value(resource["Properties"]["TopicName"])
        return self.value(resource["Properties"][_NAME_PROPERTY[kind]])

    def get_att(self, logical_id: str, attribute: str) -> str:
        kind = self.template["Resources"][logical_id]["Type"]
        if attribute != "Arn" or kind not in _ARN_ATTRIBUTES:
            raise ValueError(f"the access check cannot resolve {logical_id}.{attribute} ({kind})")
        return _ARN_ATTRIBUTES[kind].format(id=self.physical_id(logical_id), **self.format)

    def sub(self, text: str, variables: dict) -> str:
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(self.value(variables[name]))
            if "." in name and not name.startswith("AWS::"):
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def value(self, node):
        if isinstance(node, list):
            return [item for item in (self.value(item) for item in node) if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, argument), = node.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                return self.sub(text, variables)
            if key == "Fn::GetAtt":
                return self.get_att(*(argument.split(".", 1) if isinstance(argument, str) else argument))
            if key == "Fn::If":
                return self.value(argument[1] if self.condition(argument[0]) else argument[2])
            if key == "Fn::Equals":
                return self.value(argument[0]) == self.value(argument[1])
            if key == "Fn::Not":
                return not self.value(argument[0])
            if key == "Fn::And":
                return all(self.value(item) for item in argument)
            if key == "Fn::Or":
                return any(self.value(item) for item in argument)
            if key == "Condition":
                return self.condition(argument)
            if key == "Fn::Join":
                return argument[0].join(str(item) for item in self.value(argument[1]))
            if key == "Fn::Select":
                return self.value(argument[1])[int(self.value(argument[0]))]
            if key == "Fn::Split":
                return self.value(argument[1]).split(argument[0])
            if key.startswith("Fn::"):
                raise ValueError(f"the access check cannot resolve {key}")
        return {key: value for key, value in ((k, self.value(v)) for k, v in node.items()) if value is not _NO_VALUE}


def load(config: dict, account: str, region: str, key_id: str, template: Path = stacks.TEMPLATE) -> StackPolicies:
    """The policies of the stack that `./build.sh infra` creates for this (unfilled) stage config; key_id: the id
    CloudFormation gave the stack's key."""
    rendered = stacks.render(config, template)
    key_ids = {logical: key_id for logical, resource in rendered["Resources"].items()
               if resource["Type"] == "AWS::KMS::Key"}
    if len(key_ids) != 1:
        raise ValueError(f"the access check expects one KMS key in the template, found {len(key_ids)}")
    resolver = _Resolver(rendered, account, region, key_ids)
    present = {logical: resource for logical, resource in rendered["Resources"].items()
               if "Condition" not in resource or resolver.condition(resource["Condition"])}
    resources = {logical: {"Type": resource["Type"], **resolver.value(resource.get("Properties", {}))}
                 for logical, resource in present.items()}
    for logical, resource in resources.items():
        if resource["Type"] in _ARN_ATTRIBUTES:
            resource["Arn"] = resolver.get_att(logical, "Arn")
    key_logical, = key_ids
    key_arn = resources[key_logical]["Arn"]
    policies = StackPolicies(account, region, key_arn, {})
    policies.resources = resources
    policies.outputs = {name: str(resolver.value(output["Value"])) for name, output in rendered["Outputs"].items()}
    for logical, resource in resources.items():
        kind = resource["Type"]
        if kind == "AWS::KMS::Key":
            policies.resource[resource["Arn"]] = Policy(f"key policy {logical}", resource["KeyPolicy"])
        elif kind == "AWS::KMS::Alias":
            policies.alias_arns[f"arn:aws:kms:{region}:{account}:{resource['AliasName']}"] = key_arn
        elif kind == "AWS::IAM::Role":
            policies.resource[resource["Arn"]] = Policy(f"trust policy {logical}", resource["AssumeRolePolicyDocument"])
            if resource.get("ManagedPolicyArns"):
                raise ValueError(f"{logical} has managed policies, which the access check cannot read")
            policies.identity.setdefault(resource["Arn"], []).extend(
                Policy(f"{logical} {inline['PolicyName']}", inline["PolicyDocument"])
                for inline in resource.get("Policies", []))
        elif kind == "AWS::IAM::Policy":
            for role in resource.get("Roles", []):
                arn = f"arn:aws:iam::{account}:role/{role}"
                policies.identity.setdefault(arn, []).append(Policy(resource["PolicyName"], resource["PolicyDocument"]))
        elif kind == "AWS::S3::BucketPolicy":
            policies.resource[f"arn:aws:s3:::{resource['Bucket']}"] = Policy(f"bucket policy {logical}",
                                                                           resource["PolicyDocument"])
        elif kind == "AWS::SNS::Topic" and resource.get("KmsMasterKeyId"):
            policies.topic_keys[resource["Arn"]] = resource["KmsMasterKeyId"]
        elif kind == "AWS::SNS::TopicPolicy":
            for topic in resource["Topics"]:
                policies.resource[topic] = Policy(f"topic policy {logical}", resource["PolicyDocument"])
    return policies
