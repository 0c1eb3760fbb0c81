"""Evaluates every request of a run and writes the table: call, principal, action, resource, and the statements
that allowed it, or denied it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import engine, services
from .requests import NO_PERMISSION, Request, Requests
from .stack import Policy, StackPolicies
from .update_readme import README_BEGIN, README_END



@dataclass
class Row:
    call: str
    principal: str
    action: str
    resource: str
    allowed: bool
    statements: list[str]

    @property
    def verdict(self) -> str:
        if self.action == NO_PERMISSION:
            return "allowed: needs no permission"
        if self.allowed:
            return "allowed by " + "; ".join(self.statements)
        return "**denied** by " + ("; ".join(self.statements) if self.statements else "no statement allowing it")


def resource_policy(policies: StackPolicies, request: Request) -> Policy | None:
    """The resource-based policy AWS evaluates with the request: the bucket's, the key's, the topic's, or the
    role's trust policy for sts:AssumeRole."""
    resource = request.resource
    if resource.startswith("arn:aws:s3:::"):
        return policies.resource.get(resource.split("/", 1)[0])
    if resource.startswith("arn:aws:kms:") or resource.startswith("arn:aws:sns:"):
        return policies.resource.get(resource)
    if request.action == "sts:AssumeRole":
        return policies.resource.get(resource)
    return None


def build(policies: StackPolicies, steps) -> tuple[Requests, list[Request]]:
    """steps: (command, principal, recorded calls); principal "deployer" or a role's logical id."""
    requests = Requests(policies)
    ordered = []
    for command, principal, calls in steps:
        arn = principal if principal == engine.DEPLOYER else policies.role_arn(principal)
        for call in calls:
            requests.recorded(command, arn, call)
            ordered.append((command, call))
    services.sagemaker(requests, ordered)
    services.template(requests)
    return requests, requests.out


def evaluate(policies: StackPolicies, requests: list[Request]) -> list[Row]:
    names = {resource["Arn"]: logical for logical, resource in policies.resources.items()
             if resource["Type"] == "AWS::IAM::Role"}
    rows, seen = [], set()
    for request in requests:
        if request.action == NO_PERMISSION:
            decision = engine.Decision(True, [])
        else:
            decision = engine.evaluate(request.principal, request.action, request.resource, request.context,
                                       policies, resource_policy(policies, request))
        principal = names.get(request.principal, request.principal)
        row = Row(request.call, principal, request.action, _generic(request.resource, policies), decision.allowed,
                  decision.statements)
        key = (row.call, row.principal, row.action, row.resource, row.verdict)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def _generic(resource: str, policies: StackPolicies) -> str:
    """The resource with the account, the region and content hashes shortened, for a table that reads well."""
    resource = resource.replace(policies.account, "ACCOUNT").replace(policies.region, "REGION")
    resource = re.sub(r"[0-9a-f]{64}", "SHA256", resource)
    return re.sub(r"key/[0-9a-f-]{36}", "key/KEY_ID", resource)


def markdown(rows: list[Row], resources: bool = True) -> str:
    """The table; without resources, one row per call, principal, action and decision (what the README shows:
    the resources' names carry content hashes that change with every build)."""
    header = ["call", "principal", "action"] + (["resource"] if resources else []) + ["decision"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    seen = set()
    for row in rows:
        cells = [row.call, row.principal, row.action] + ([row.resource] if resources else []) + [row.verdict]
        if tuple(cells) not in seen:
            seen.add(tuple(cells))
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def readme_table(readme: Path) -> str | None:
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        return None
    return text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"
