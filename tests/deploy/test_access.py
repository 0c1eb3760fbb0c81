"""The access check (README "Access check"): the deploy runs against moto with every AWS call recorded, each call
and what AWS services do with our roles become the requests AWS would authorize, and principalmapper evaluates
them against the platform stack's identity, bucket, key, topic and trust policies. Any denied request fails."""

from __future__ import annotations

import json
import sys

import pytest

from .conftest import ACCOUNT, DEPLOY_CONFIGS, REGION, ROOT

sys.path.insert(0, str(DEPLOY_CONFIGS))
from .access import check, engine, scenario, stack  # noqa: E402

REPORT = ROOT / "build" / "access"
MODEL_BUCKET = f"clinical-inference-dev-models-{ACCOUNT}-{REGION}"


def shipped_config(stage: str = "dev") -> dict:
    return json.loads((DEPLOY_CONFIGS / f"{stage}.json").read_text())


@pytest.fixture(scope="session")
def deploy_run(moto_server, registry, tiny_images, call_logs, tmp_path_factory):
    moto_server.reset()
    steps = scenario.run(moto_server, registry, tiny_images, call_logs, tmp_path_factory.mktemp("access"))
    journal = moto_server.operations()
    key_id = moto_server.client("cloudformation").describe_stack_resource(
        StackName="clinical-inference-dev", LogicalResourceId="Key")["StackResourceDetail"]["PhysicalResourceId"]
    return steps, key_id.rsplit("/", 1)[-1], journal


@pytest.fixture(scope="session")
def access_rows(deploy_run):
    steps, key_id, _ = deploy_run
    policies = stack.load(shipped_config(), ACCOUNT, REGION, key_id)
    requests, built = check.build(policies, [(s.label, s.principal, s.calls) for s in steps])
    rows = check.evaluate(policies, built)
    REPORT.mkdir(parents=True, exist_ok=True)
    (REPORT / "access-check.md").write_text(check.markdown(rows))
    (REPORT / "access-check-readme.md").write_text(check.markdown(rows, resources=False))
    (REPORT / "access-check.json").write_text(json.dumps([row.__dict__ for row in rows], indent=1) + "\n")
    return requests, rows


@pytest.mark.deploy
@pytest.mark.docker
def test_the_recorder_sees_every_call_that_reaches_aws(deploy_run):
    """Both recorders (sagemaker_deploy's --call-log and the AWS CLI plugin) together saw every operation that
    moto's journal received (the JSON and query protocols; S3's REST calls have no operation name there)."""
    steps, _, journal = deploy_run
    recorded = {call["operation"] for step in steps for call in step.calls}
    assert {operation for operation in journal if not operation.startswith("/")} - recorded == set()
    push = next(step for step in steps if "push" in step.command)
    assert [c["operation"] for c in push.calls].count("GetAuthorizationToken") >= 2  # the CLI's login, the tool's
    commands = [step.command[0] for step in steps]
    assert {"infra", "upload", "deploy", "smoke", "batch", "destroy"} <= set(commands)


@pytest.mark.deploy
@pytest.mark.docker
def test_every_request_of_the_deploy_is_allowed_by_the_stacks_policies(access_rows):
    requests, rows = access_rows
    assert requests.unknown == [], f"S3 operations without a rule in tests/deploy/access/requests.py: " \
                                   f"{sorted(set(requests.unknown))}"
    denied = [f"{row.call} | {row.principal} | {row.action} | {row.resource} | {row.verdict}"
              for row in rows if not row.allowed]
    assert denied == [], f"{len(denied)} requests denied (table: {REPORT / 'access-check.md'}):\n" + "\n".join(denied)


@pytest.mark.deploy
@pytest.mark.docker
def test_the_readme_shows_the_table_the_check_produces(access_rows):
    _, rows = access_rows
    assert check.readme_table(ROOT / "README.md") == check.markdown(rows, resources=False), \
        "README.md's access-check table is stale: python -m tests.deploy.access.update_readme"


# --- the engine on its own (no moto) ---------------------------------------------------------------------------

KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"


@pytest.fixture(scope="module")
def dev_policies():
    return stack.load(shipped_config(), ACCOUNT, REGION, KEY_ID)


def upload_put(key_id: str) -> dict:
    return {"service": "s3", "operation": "PutObject", "params": {
        "Bucket": MODEL_BUCKET, "Key": "models/m/x/model.tar.gz", "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": key_id, "BucketKeyEnabled": True}}


def verdicts(policies, principal: str, *calls: dict) -> list[str]:
    _, built = check.build(policies, [("build.sh upload", principal, list(calls))])
    return [row.verdict for row in check.evaluate(policies, built)
            if row.action == "s3:PutObject" and row.call.startswith("build.sh")]


def test_the_model_bucket_refuses_a_put_that_names_the_key_by_its_alias_and_takes_the_key_arn(dev_policies):
    alias = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/clinical-inference-dev"
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"
    assert verdicts(dev_policies, "deployer", upload_put(alias)) == [
        "**denied** by bucket policy ModelBucketPolicy: DenyPutsNotEncryptedWithTheKey"]
    assert verdicts(dev_policies, "deployer", upload_put(key)) == ["allowed by AdministratorAccess: statement 1"]


def test_a_call_the_role_has_no_statement_for_is_denied(dev_policies):
    """A new call without a permission fails the check: the CodeBuild role deleting an endpoint."""
    call = {"service": "sagemaker", "operation": "DeleteEndpoint", "params": {"EndpointName": "xgboost-endpoint"}}
    _, built = check.build(dev_policies, [("build.sh destroy", "CodeBuildRole", [call])])
    rows = [row for row in check.evaluate(dev_policies, built) if row.action == "sagemaker:DeleteEndpoint"]
    assert [(row.allowed, row.verdict) for row in rows] == [(False, "**denied** by no statement allowing it")]


def test_an_operation_without_a_rule_is_asked_on_every_resource_and_an_unknown_s3_one_fails(dev_policies):
    calls = [{"service": "kms", "operation": "GetKeyRotationStatus", "params": {"KeyId": KEY_ID}},
             {"service": "s3", "operation": "GetBucketLifecycleConfiguration", "params": {"Bucket": MODEL_BUCKET}}]
    requests, built = check.build(dev_policies, [("build.sh verify", "deployer", calls)])
    assert [(r.action, r.resource) for r in built if r.call.startswith("build.sh")] == [("kms:GetKeyRotationStatus",
                                                                                      "*")]
    assert requests.unknown == ["s3 GetBucketLifecycleConfiguration"]


def test_the_engine_is_principalmappers_and_needs_the_shim_only_in_this_process():
    import collections
    import principalmapper

    assert engine.simulation.__name__ == "principalmapper.querying.local_policy_simulation"
    assert principalmapper.__version__ == "1.1.5"
    assert collections.Mapping is collections.abc.Mapping  # the shim, set at import time
