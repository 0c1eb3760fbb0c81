"""boto3 clients, with a dry-run mode that prints every call as an AWS CLI command instead of sending it."""

from __future__ import annotations

import base64
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from botocore import xform_name
from botocore.handlers import validate_bucket_name

from . import DeployError

DRY_RUN_ACCOUNT = "<account>"

# Dry run: reads answer "absent" so that the printed plan shows what a first deployment creates.
_ABSENT = {
    "DescribeRepositories": "RepositoryNotFoundException",
    "DescribeModel": "ValidationException",
    "DescribeEndpointConfig": "ValidationException",
    "DescribeEndpoint": "ValidationException",
    "HeadObject": "404",
    "DescribeProcessingJob": "ValidationException",
    "DescribeDataQualityJobDefinition": "ValidationException",
    "DescribeMonitoringSchedule": "ValidationException",
}
_CANNED: dict[str, Callable[[dict], dict]] = {
    "GetCallerIdentity": lambda _: {"Account": DRY_RUN_ACCOUNT},
    "GetRole": lambda params: {"Role": {"RoleName": params["RoleName"], "AssumeRolePolicyDocument": quote(json.dumps(
        {"Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}}]}))}},
    "GetAuthorizationToken": lambda _: {"authorizationData": [
        {"authorizationToken": base64.b64encode(b"AWS:dry-run").decode()}]},
}


class _Status:
    def __init__(self, status_code: int):
        self.status_code = status_code
        self.headers: dict = {}


def _as_cli(service: str, operation: str, params: dict) -> str:
    command = f"+ aws {service} {xform_name(operation, '-')}"
    if params:
        command += " --cli-input-json " + shlex.quote(json.dumps(params, default=str, sort_keys=True))
    return command


def _loggable(value: Any) -> Any:
    """The parameters as JSON, without bodies (an artifact, a sample: bytes or files, never written down)."""
    if isinstance(value, dict):
        return {key: _loggable(item) for key, item in value.items() if key != "Body"}
    if isinstance(value, (list, tuple)):
        return [_loggable(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"


class Aws:
    """One session for one region; clients are created on first use."""

    def __init__(self, region: str, dry_run: bool = False, call_log: Path | None = None):
        self.region = region
        self.dry_run = dry_run
        self.call_log = call_log
        self._session = boto3.session.Session(region_name=region)
        self._clients: dict[str, Any] = {}

    def client(self, service: str):
        if service not in self._clients:
            client = self._session.client(service)
            if self.call_log is not None:
                client.meta.events.register("before-parameter-build.*.*", self._log_call)
            if self.dry_run:
                self._print_instead_of_sending(client, service)
            self._clients[service] = client
        return self._clients[service]

    def _log_call(self, params: dict, model, **_) -> None:
        """Appends the call (service, operation, parameters without request bodies) to the call log, one JSON object
        a line; the access check evaluates these against the stack's policies."""
        entry = {"service": model.service_model.service_name, "operation": model.name,
                 "params": _loggable(params)}
        with open(self.call_log, "a") as log:
            log.write(json.dumps(entry, sort_keys=True) + "\n")

    @staticmethod
    def _print_instead_of_sending(client, service: str) -> None:
        # botocore validates the parameters, then emits before-call; a handler's answer replaces the HTTP request.
        def remember(params, context, **_):
            context["dry_run_params"] = params

        def answer(model, context, **_):
            params = context.get("dry_run_params", {})
            print(_as_cli(service, model.name, params), file=sys.stderr)
            if model.name in _ABSENT:
                error = {"Code": _ABSENT[model.name], "Message": "Could not find it (dry run: assumed absent)"}
                return _Status(400), {"Error": error, "ResponseMetadata": {}}
            return _Status(200), _CANNED.get(model.name, lambda _: {})(params)

        client.meta.events.register("before-parameter-build.*.*", remember)
        client.meta.events.register("before-call.*.*", answer)
        if service == "s3":  # the dry run's bucket names hold "<account>"
            client.meta.events.unregister("before-parameter-build.s3", validate_bucket_name)

    def account(self) -> str:
        try:
            return self.client("sts").get_caller_identity()["Account"]
        except (ClientError, BotoCoreError) as error:
            raise DeployError(f"cannot identify the AWS account (sts get-caller-identity): {error}. "
                              "Check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the CodeBuild role) "
                              "and AWS_ENDPOINT_URL when using a local endpoint.") from error


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def is_not_found(error: ClientError) -> bool:
    """SageMaker answers Describe* for a missing resource with ValidationException 'Could not find ...'."""
    message = error.response.get("Error", {}).get("Message", "")
    return error_code(error) in ("ResourceNotFound", "ValidationException") and "Could not find" in message


def describe_or_none(describe: Callable[..., dict], **params) -> dict | None:
    try:
        return describe(**params)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
