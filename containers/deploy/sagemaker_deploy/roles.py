"""The roles' policies judged by cloudsplaining (Salesforce's IAM analyser, with policy_sentry's database of every
IAM action): no `*` action, no NotAction, and none of its risk findings on unconstrained resources.

The policies are read as IAM holds them now: GetAccountAuthorizationDetails (the input cloudsplaining is built for),
then GetPolicyVersion for each customer or AWS managed policy attached to a role.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from . import DeployError

# ecr:GetAuthorizationToken has no resource to name (ECR's "Actions, resources, and condition keys" page), and
# SageMaker needs it to pull the image; cloudsplaining lists it under credentials exposure.
UNSCOPABLE = ["ecr:GetAuthorizationToken"]
RISKS = {"privilege escalation": "allows_privilege_escalation", "data exfiltration": "allows_data_exfiltration_actions",
         "resource exposure": "permissions_management_without_constraints",
         "infrastructure modification": "infrastructure_modification", "credentials exposure": "credentials_exposure"}


def document(text) -> dict:
    """IAM returns policy documents URL-encoded (boto3 decodes some of them)."""
    return text if isinstance(text, dict) else json.loads(unquote(text))


def statements(aws, detail: dict) -> list[dict]:
    """Every statement of a role's inline and attached policies."""
    found = [statement for policy in detail.get("RolePolicyList", [])
             for statement in listed(document(policy["PolicyDocument"])["Statement"])]
    iam = aws.client("iam")
    for attached in detail.get("AttachedManagedPolicies", []):
        version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"].get("DefaultVersionId", "v1")
        text = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
        found += listed(document(text)["Statement"])
    return found


def findings(policy: dict) -> list[str]:
    """What cloudsplaining finds in one policy document; empty when it is clean."""
    try:
        from cloudsplaining.scan.policy_document import PolicyDocument
        from cloudsplaining.shared.exclusions import Exclusions
    except ImportError:
        raise DeployError("cloudsplaining is not installed: ./build.sh install python (or pip install -e '.[test]')") \
            from None

    # A `*` action is one even under a condition, so the wildcard scan counts conditional statements too.
    wildcards = PolicyDocument(policy, flag_conditional_statements=True).service_wildcard
    scanned = PolicyDocument(policy, exclusions=Exclusions({"exclude-actions": UNSCOPABLE}))
    found = [f"`*` actions of {', '.join(sorted(wildcards)[:5])}" + (" ..." if len(wildcards) > 5 else "")] \
        if wildcards else []
    found += ["an Allow with NotAction"] if scanned.contains_statement_using_not_action else []
    for risk, attribute in RISKS.items():
        actions = [item["type"] if isinstance(item, dict) else item for item in getattr(scanned, attribute)]
        found += [f"{risk}: {', '.join(sorted(actions)[:5])}" + (" ..." if len(actions) > 5 else "")] if actions else []
    return found


def judge(aws, role_arns: list[str]) -> dict[str, list[str] | None]:
    """cloudsplaining's findings per role (empty: clean); None for a role IAM does not have."""
    pages = aws.client("iam").get_paginator("get_account_authorization_details").paginate(Filter=["Role"])
    details = {detail["Arn"]: detail for page in pages for detail in page.get("RoleDetailList", [])}
    return {arn: None if arn not in details and not aws.dry_run else findings(
        {"Version": "2012-10-17", "Statement": statements(aws, details.get(arn, {}))}) for arn in role_arns}


def listed(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]
