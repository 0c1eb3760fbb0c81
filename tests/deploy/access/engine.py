"""The decision on each request comes from principalmapper's local policy simulation (NCC Group's Principal
Mapper), not from code of this project; this module only hands it the principal's policies and the resource's
policy, and names the statements that matched for the table."""

from __future__ import annotations

import collections
import collections.abc
from dataclasses import dataclass

# principalmapper 1.1.5 imports Mapping and MutableMapping from collections, where Python 3.10 removed them: put
# the abc aliases back before importing it (in this process only; nothing installed is changed).
for _name in ("Mapping", "MutableMapping"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

from principalmapper.common import Node, Policy as EnginePolicy  # noqa: E402 (after the shim)
from principalmapper.querying import local_policy_simulation as simulation  # noqa: E402
from principalmapper.querying.query_interface import local_check_authorization_full  # noqa: E402
from principalmapper.util.case_insensitive_dict import CaseInsensitiveDict  # noqa: E402

from .stack import Policy, StackPolicies  # noqa: E402

DEPLOYER = "deployer"  # a person or pipeline with administrator rights in the account (AdministratorAccess)
ADMINISTRATOR = Policy("AdministratorAccess", {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass
class Decision:
    allowed: bool
    statements: list[str]  # the Allow statements that matched when allowed, else the Deny statements


def principal_arn(principal: str, account: str) -> str:
    return f"arn:aws:iam::{account}:user/{DEPLOYER}" if principal == DEPLOYER else principal


def _identity(principal: str, policies: StackPolicies) -> list[Policy]:
    return [ADMINISTRATOR] if principal == DEPLOYER else policies.identity.get(principal, [])


def _node(arn: str, identity: list[Policy]) -> Node:
    trust = None if ":user/" in arn else {"Version": "2012-10-17", "Statement": []}
    attached = [EnginePolicy(arn, policy.name, policy.document) for policy in identity]
    return Node(arn, arn.rsplit("/", 1)[-1].upper(), attached, [], trust, None, 0, False, False, None, False, {})


def evaluate(principal: str, action: str, resource: str, context: dict, policies: StackPolicies,
             resource_policy: Policy | None) -> Decision:
    """principal: the deployer, a role ARN of the stack, or a service principal (logs.us-east-1.amazonaws.com)."""
    keys = CaseInsensitiveDict(context)
    service = "." in principal and ":" not in principal
    if service:
        # A service principal has no identity policy: the resource's policy alone decides.
        result = (simulation.resource_policy_authorization(principal, policies.account, resource_policy.document,
                                                           action, resource, keys)
                  if resource_policy else simulation.ResourcePolicyEvalResult.NO_MATCH)
        allowed = result is simulation.ResourcePolicyEvalResult.SERVICE_MATCH
        subject: Node | str = principal
        identity: list[Policy] = []
    else:
        identity = _identity(principal, policies)
        subject = _node(principal_arn(principal, policies.account), identity)
        allowed = local_check_authorization_full(subject, action, resource, dict(context),
                                                 resource_policy.document if resource_policy else None,
                                                 policies.account)
    effect = "Allow" if allowed else "Deny"
    matched = [name for policy in identity for name, statement in policy.statements()
               if simulation.policy_has_matching_statement({"Statement": [statement]}, effect, action, resource, keys)]
    if resource_policy is not None:
        matched += [name for name, statement in resource_policy.statements() if statement["Effect"] == effect and
                    simulation.resource_policy_matching_statements(subject, {"Statement": [statement]}, action,
                                                                   resource, keys)]
    return Decision(allowed, matched)
