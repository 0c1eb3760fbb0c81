"""The AWS calls both services make: clients in botocore's standard retry mode, one invocation, conditional writes.

Every failure becomes a typed error (clinical_services.errors) whose message names the variable or model, never an
identifier, a value or a body; the AWS error is not chained (its message may carry them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import unquote

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from clinical_services.errors import EndpointError, MissingResource, ServiceError

# Throttling and transient errors are retried with backoff ("Retry behavior", standard mode:
# https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html).
RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})
_SERIALIZE, _DESERIALIZE = TypeSerializer(), TypeDeserializer()


def clients(region: str, session: boto3.Session | None = None) -> dict[str, Any]:
    session = session or boto3.Session()
    return {name: session.client(name, region_name=region, config=RETRIES)
            for name in ("sagemaker-runtime", "dynamodb", "s3")}


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


@dataclass(frozen=True)
class Answer:
    body: dict
    model_version: str | None


def _call(call, failure):
    """call() or the typed error failure(code, response) makes of its ClientError, raised outside the handler so that
    the AWS error (whose message may carry a body) is not even its context."""
    try:
        return call()
    except ClientError as error:
        raised = failure(_code(error), error.response)
    except BotoCoreError as error:
        raised = ServiceError(f"the request failed: {type(error).__name__}")
    raise raised


def invoke(runtime, endpoint: str, body: dict, model: str, variable: str, attributes: str,
           target_model: str | None = None) -> Answer:
    """One JSON InvokeEndpoint ("InvokeEndpoint",
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html): the container's 4xx
    or 5xx arrives as ModelError with OriginalStatusCode; an endpoint that does not exist as ValidationError. The
    model's version comes back in CustomAttributes (`model_version=`, asked for with `provenance=true`)."""
    request = {"EndpointName": endpoint, "Body": json.dumps(body).encode(), "ContentType": "application/json",
               "Accept": "application/json", "CustomAttributes": attributes}
    if target_model:
        request["TargetModel"] = target_model

    def failure(code: str, response: dict) -> ServiceError:
        if code == "ModelError":
            return EndpointError(int(response.get("OriginalStatusCode")
                                     or response["ResponseMetadata"]["HTTPStatusCode"]), model)
        if code == "ValidationError" and "not found" in response.get("Error", {}).get("Message", ""):
            return MissingResource(f"the {model} endpoint named by {variable} does not exist")
        return ServiceError(f"InvokeEndpoint for the {model} model failed: {code or 'error'}")

    response = _call(lambda: runtime.invoke_endpoint(**request), failure)
    payload = _call(lambda: response["Body"].read(), failure)
    try:
        parsed = json.loads(payload, parse_float=Decimal)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ServiceError(f"the {model} endpoint's answer is not JSON")
    return Answer(parsed, _attribute(response.get("CustomAttributes", ""), "model_version"))


def _attribute(header: str, name: str) -> str | None:
    for item in header.split(";"):
        key, sep, value = item.partition("=")
        if sep and key.strip().lower() == name:
            return unquote(value.strip()) or None
    return None


def check_tables(dynamodb, tables: Mapping[str, str]) -> None:
    """Each table (variable -> name) exists; checked before anything is invoked or written."""
    for variable, name in tables.items():
        _call(lambda: dynamodb.describe_table(TableName=name), _failure("DescribeTable", variable, "table"))


def _failure(operation: str, variable: str, what: str):
    def failure(code: str, response: dict) -> ServiceError:
        if code in ("ResourceNotFoundException", "NoSuchBucket", "404"):
            return MissingResource(f"the {what} named by {variable} does not exist")
        return ServiceError(f"{operation} on {variable} failed: {code or 'error'}")
    return failure


def item(values: Mapping[str, Any]) -> dict:
    """A DynamoDB item (numbers as Decimal; None attributes left out)."""
    return {key: _SERIALIZE.serialize(value) for key, value in values.items() if value is not None}


def plain(value: Any) -> Any:
    """Decimals back to floats (ints where integral), through lists and maps."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, list):
        return [plain(entry) for entry in value]
    if isinstance(value, dict):
        return {key: plain(entry) for key, entry in value.items()}
    return value


def read_item(dynamodb, table: str, key: Mapping[str, str], variable: str) -> dict | None:
    found = _call(lambda: dynamodb.get_item(TableName=table, Key=item(key), ConsistentRead=True),
                  _failure("GetItem", variable, "table")).get("Item")
    return None if found is None else {name: _DESERIALIZE.deserialize(value) for name, value in found.items()}


def write_new(dynamodb, puts: list[tuple[str, str, dict]], token: str) -> None:
    """Puts (table, hash key name, item) in one transaction, each only if its id is new; `token` (the record's id)
    makes a retried transaction a no-op ("TransactWriteItems", ClientRequestToken:
    https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html)."""
    items = [{"Put": {"TableName": table, "Item": item(values), "ConditionExpression": "attribute_not_exists(#id)",
                      "ExpressionAttributeNames": {"#id": key}}} for table, key, values in puts]

    def failure(code: str, response: dict) -> ServiceError:
        if code == "ResourceNotFoundException":
            return MissingResource("a table of the configuration does not exist")
        if "ConditionalCheckFailed" in [reason.get("Code") for reason in response.get("CancellationReasons", [])]:
            return ServiceError("a record with this id exists already: nothing was written")
        return ServiceError(f"TransactWriteItems failed: {code or 'error'}")

    _call(lambda: dynamodb.transact_write_items(TransactItems=items, ClientRequestToken=token), failure)


def bucket_key(s3, bucket: str, variable: str) -> str:
    """The KMS key the bucket encrypts with by default (the stage's key): objects are put with it explicitly, as the
    bucket's policy requires."""
    rules = _call(lambda: s3.get_bucket_encryption(Bucket=bucket),
                  _failure("GetBucketEncryption", variable, "bucket"))["ServerSideEncryptionConfiguration"]["Rules"]
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if default.get("SSEAlgorithm") == "aws:kms" and default.get("KMSMasterKeyID"):
            return default["KMSMasterKeyID"]
    raise ServiceError(f"the bucket named by {variable} has no default SSE-KMS key: deploy it with ./build.sh infra")


def put_object(s3, bucket: str, key: str, body: bytes, kms_key: str, variable: str) -> str:
    """A new object, SSE-KMS with the stage's key; returns its s3:// URI."""
    _call(lambda: s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json",
                                ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key, BucketKeyEnabled=True,
                                IfNoneMatch="*"), _failure("PutObject", variable, "bucket"))
    return f"s3://{bucket}/{key}"


def now() -> tuple[int, str]:
    """Epoch seconds and the same instant in ISO 8601 (UTC)."""
    seconds = int(time.time())
    return seconds, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
