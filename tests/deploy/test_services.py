"""clinical_services end to end on real parts: the real `serve` (XGBoost, and PAT on CPU) behind the stand-in for
SageMaker's runtime front end (tests/deploy/runtime_standin.py), so that boto3's invoke_endpoint is the client, and
the platform stack deployed on moto by `./build.sh infra` (prod's config: one endpoint per model), so that the tables
and the bucket are the stack's own. The services are built from platform.env alone."""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import boto3
import numpy as np
import pytest
import xgboost as xgb

from clinical_services import (BadInput, ConfigurationError, EndpointError, MissingResource, ServiceError,
                               UnknownModelType, create_pat_service_from_env, create_xgboost_service_from_env)
from models.xgboost.examples import FEATURES, package, train, write_samples
from serve.process import ServeProcess
from tests.pat_models import WEEK, build_artifact, weeks

from .conftest import DEPLOY_CONFIGS, REGION, ROOT
from .runtime_standin import RuntimeStandIn
from .test_platform_stack import run_infra

pytestmark = pytest.mark.deploy
MARKER = "PATIENT-MARKER-7f3a"  # an identifier that must never reach an error message or a log line
ENDPOINTS = {"risk": "xgboost-risk-endpoint", "treatment": "xgboost-treatment-endpoint", "pat": "pat-endpoint"}


@dataclass
class Served:
    standin: RuntimeStandIn
    boosters: dict
    model_dirs: dict


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("served")
    boosters, model_dirs, processes = {}, {}, {}
    for kind in ("risk", "treatment"):
        booster, metadata = train(kind, rows=400, rounds=8, depth=3)
        boosters[kind], model_dirs[kind] = booster, package(booster, metadata, work / "xgboost", kind)
    model_dirs["pat"] = build_artifact(work / "pat")
    standin = RuntimeStandIn()
    try:
        for kind, endpoint in ENDPOINTS.items():
            env = {"SM_MODEL_DIR": str(model_dirs[kind]), "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
            if kind == "pat":
                env.update(SERVE_HANDLER="pat", SERVE_DEVICE="cpu", SERVE_TORCH_THREADS="1")
            processes[kind] = ServeProcess(env, work / f"{kind}.log", deadline_s=180)
        for kind, process in processes.items():
            standin.endpoints[ENDPOINTS[kind]] = process.wait_ready().url
        yield Served(standin, boosters, model_dirs)
    finally:
        standin.close()
        for process in processes.values():
            process.stop()


@pytest.fixture(scope="module")
def platform(moto_server, tmp_path_factory) -> dict[str, str]:
    """platform.env of the prod stack deployed on moto by ./build.sh infra."""
    moto_server.reset()
    work = tmp_path_factory.mktemp("infra")
    run_infra(moto_server, work, config=DEPLOY_CONFIGS / "prod.json")
    text = (work / "state" / "prod" / "platform.env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if line)


@pytest.fixture
def aws(served, moto_server, platform, monkeypatch):
    """The process environment of an application: platform.env, moto for DynamoDB and S3, the stand-in for the
    runtime; a boto3 session whose S3 and DynamoDB requests are recorded."""
    for key, value in {**platform, "AWS_ENDPOINT_URL": moto_server.url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_CONFIG_FILE": "/nonexistent",
                       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                       "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": served.standin.url}.items():
        monkeypatch.setenv(key, value)
    session = boto3.Session()
    sent = []
    session.events.register("before-send", lambda request, **_: sent.append(request))
    return type("Aws", (), {"session": session, "sent": sent, "env": platform,
                            "dynamodb": session.client("dynamodb", region_name=REGION),
                            "s3": session.client("s3", region_name=REGION)})


def our_log(caplog) -> str:
    """This package's log lines (botocore's own DEBUG lines carry bodies: never enable them with patient data)."""
    return "\n".join(record.getMessage() for record in caplog.records if record.name.startswith("clinical_services"))


def scan(aws, variable: str) -> list[dict]:
    from boto3.dynamodb.types import TypeDeserializer
    items = aws.dynamodb.scan(TableName=aws.env[variable])["Items"]
    return [{key: TypeDeserializer().deserialize(value) for key, value in item.items()} for item in items]


def objects(aws) -> list[str]:
    listing = aws.s3.list_objects_v2(Bucket=aws.env["PAT_BUCKET_NAME"])
    return [entry["Key"] for entry in listing.get("Contents", [])]


def empty(aws) -> None:
    for variable, keys in (("XGBOOST_PREDICTIONS_TABLE", ("prediction_id", "patient_id")),
                           ("XGBOOST_FEATURE_IMPORTANCE_TABLE", ("prediction_id", "patient_id")),
                           ("PAT_ANALYSES_TABLE", ("analysis_id", "patient_id")),
                           ("PAT_EMBEDDINGS_TABLE", ("analysis_id", "patient_id"))):
        for item in aws.dynamodb.scan(TableName=aws.env[variable])["Items"]:
            aws.dynamodb.delete_item(TableName=aws.env[variable], Key={key: item[key] for key in keys})
    for key in objects(aws):
        aws.s3.delete_object(Bucket=aws.env["PAT_BUCKET_NAME"], Key=key)


def patient(n: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(n)
    return {name: float(round(rng.normal(30, 10), 3)) for name in FEATURES}


def test_platform_env_names_every_variable_of_both_guides(platform):
    guide = ["XGBOOST_PREDICTIONS_TABLE", "XGBOOST_FEATURE_IMPORTANCE_TABLE", "XGBOOST_INTEGRATIONS_TABLE",
             "XGBOOST_MODEL_INFO_TABLE", "XGBOOST_PREDICTION_TTL_DAYS", "XGBOOST_KMS_KEY_ID", "XGBOOST_RISK_ENDPOINT",
             "XGBOOST_TREATMENT_ENDPOINT", "XGBOOST_OUTCOME_ENDPOINT", "AWS_REGION", "PAT_ENDPOINT_NAME",
             "PAT_BUCKET_NAME", "PAT_ANALYSES_TABLE", "PAT_EMBEDDINGS_TABLE", "PAT_INTEGRATIONS_TABLE"]
    assert [name for name in guide if not platform.get(name)] == []
    assert platform["XGBOOST_RISK_ENDPOINT"] == "xgboost-risk-endpoint" and platform["AWS_REGION"] == REGION
    assert platform["PAT_ENDPOINT_NAME"] == "pat-endpoint" and platform["XGBOOST_KMS_KEY_ID"] == platform["KEY_ARN"]


def test_a_risk_prediction_is_kept_with_its_ttl_and_contributions_that_sum_to_the_margin(aws, served):
    empty(aws)
    service = create_xgboost_service_from_env(session=aws.session)
    features = patient()
    before = int(time.time())
    result = service.predict("risk", MARKER, features)
    assert result.model_version == "1.0.0"  # metadata.json's, through CustomAttributes
    (item,) = scan(aws, "XGBOOST_PREDICTIONS_TABLE")
    assert item["prediction_id"] == result.prediction_id and item["patient_id"] == MARKER
    assert item["model_type"] == "risk" and item["model_version"] == "1.0.0" and item["created_at"] == result.created_at
    ttl_days = int(aws.env["XGBOOST_PREDICTION_TTL_DAYS"])
    assert before + ttl_days * 86400 <= int(item["expires_at"]) <= int(time.time()) + ttl_days * 86400
    # The stack's TTL attribute (moto's CloudFormation does not apply TimeToLiveSpecification: the stack's output)
    assert aws.env["XGBOOST_PREDICTION_TTL_ATTRIBUTE"] == "expires_at"

    (importance,) = scan(aws, "XGBOOST_FEATURE_IMPORTANCE_TABLE")
    assert (importance["prediction_id"], importance["patient_id"]) == (result.prediction_id, MARKER)
    contributions = {name: float(value) for name, value in importance["contributions"].items()}
    assert set(contributions) == {*FEATURES, "bias"}
    row = xgb.DMatrix(np.array([[features[name] for name in FEATURES]]), feature_names=FEATURES)
    margin = float(served.boosters["risk"].predict(row, output_margin=True)[0])
    assert math.isclose(sum(contributions.values()), margin, abs_tol=1e-4)
    assert math.isclose(1 / (1 + math.exp(-sum(contributions.values()))), float(item["scores"][0]), abs_tol=1e-5)
    assert result.scores == [float(item["scores"][0])]


def test_a_multiclass_prediction_from_a_sequence_in_the_models_order(aws, served):
    empty(aws)
    service = create_xgboost_service_from_env(session=aws.session)
    features = patient(1)
    result = service.predict("treatment", "p-2", [features[name] for name in FEATURES])
    assert len(result.scores) == 3 and math.isclose(sum(result.scores), 1, abs_tol=1e-5)
    (importance,) = scan(aws, "XGBOOST_FEATURE_IMPORTANCE_TABLE")
    row = xgb.DMatrix(np.array([[features[name] for name in FEATURES]]), feature_names=FEATURES)
    margins = served.boosters["treatment"].predict(row, output_margin=True)[0]
    per_class = list(importance["contributions"].values())
    assert len(per_class) == 3
    for contributions, margin in zip(per_class, margins):
        assert math.isclose(sum(float(value) for value in contributions.values()), float(margin), abs_tol=1e-4)


def test_a_pat_analysis_keeps_the_week_and_the_embedding_encrypted_with_the_stage_key(aws, served):
    empty(aws)
    service = create_pat_service_from_env(session=aws.session)
    week = weeks(1)[0].tolist()
    result = service.analyze(MARKER, week)
    (analysis,) = scan(aws, "PAT_ANALYSES_TABLE")
    assert (analysis["analysis_id"], analysis["patient_id"]) == (result.analysis_id, MARKER)
    assert analysis["model_version"] == result.model_version and result.model_version.startswith("sha256:")
    assert set(analysis["scores"]) == {"depression", "ssri"} and "interdaily_stability" in analysis["metrics"]
    (embedding,) = scan(aws, "PAT_EMBEDDINGS_TABLE")
    assert embedding["analysis_id"] == result.analysis_id and len(embedding["embedding"]) == 96
    assert result.embedding_uri is None and "embedding_uri" not in embedding
    bucket, key = aws.env["PAT_BUCKET_NAME"], f"analyses/{result.analysis_id}/week.json"
    assert objects(aws) == [key] and analysis["week_uri"] == f"s3://{bucket}/{key}"
    stored = aws.s3.get_object(Bucket=bucket, Key=key)
    assert json.loads(stored["Body"].read()) == week
    assert stored["ServerSideEncryption"] == "aws:kms" and stored["SSEKMSKeyId"] == aws.env["KEY_ARN"]
    puts = [request for request in aws.sent if request.method == "PUT" and key in request.url]
    assert [(put.headers["x-amz-server-side-encryption"], put.headers["x-amz-server-side-encryption-aws-kms-key-id"])
            for put in puts] == [(b"aws:kms", aws.env["KEY_ARN"].encode())]


def test_an_embedding_too_large_for_an_item_goes_to_the_bucket(aws, served):
    empty(aws)
    service = create_pat_service_from_env(session=aws.session)
    service.max_item_bytes = 500  # a 96-float item is larger than this
    result = service.analyze("p-3", weeks(1, seed=3)[0].tolist())
    (embedding,) = scan(aws, "PAT_EMBEDDINGS_TABLE")
    assert "embedding" not in embedding and embedding["embedding_uri"] == result.embedding_uri
    bucket = aws.env["PAT_BUCKET_NAME"]
    assert result.embedding_uri == f"s3://{bucket}/analyses/{result.analysis_id}/embedding.json"
    stored = aws.s3.get_object(Bucket=bucket, Key=f"analyses/{result.analysis_id}/embedding.json")
    assert stored["SSEKMSKeyId"] == aws.env["KEY_ARN"]
    assert np.allclose(json.loads(stored["Body"].read()), result.embedding) and len(result.embedding) == 96


def test_an_unavailable_runtime_is_retried_and_the_prediction_is_written_once(aws, served):
    empty(aws)
    service = create_xgboost_service_from_env(session=aws.session)
    served.standin.invocations.clear()
    served.standin.unavailable = 2
    service.predict("risk", "p-4", patient(4))
    assert served.standin.invocations == ["xgboost-risk-endpoint"] * 3
    assert len(scan(aws, "XGBOOST_PREDICTIONS_TABLE")) == len(scan(aws, "XGBOOST_FEATURE_IMPORTANCE_TABLE")) == 1


def test_integrations_are_kept_under_the_guides_keys(aws, served):
    service = create_xgboost_service_from_env(session=aws.session)
    integration_id = service.record_integration("p-5", "ehr", {"system_patient_ref": "ref-1"})
    items = [item for item in scan(aws, "XGBOOST_INTEGRATIONS_TABLE") if item["integration_id"] == integration_id]
    assert [(item["patient_id"], item["system"], item["details"]) for item in items] == [
        ("p-5", "ehr", {"system_patient_ref": "ref-1"})]


BAD_PREDICTIONS = {
    "unknown model type": (lambda f: ("mortality", f), UnknownModelType),
    "a feature the model lacks": (lambda f: ("risk", {**f, MARKER: 1.0}), (BadInput, EndpointError)),
    "too few features": (lambda f: ("risk", list(f.values())[:-1]), (BadInput, EndpointError)),
    "a non-finite feature": (lambda f: ("risk", {**f, "age": math.inf}), BadInput),
    "an endpoint that does not exist": (lambda f: ("outcome", f), MissingResource),
}


@pytest.mark.parametrize("case", BAD_PREDICTIONS)
def test_bad_predictions_are_typed_errors_that_write_nothing_and_name_no_patient(aws, served, case, caplog):
    empty(aws)
    make, expected = BAD_PREDICTIONS[case]
    model_type, features = make({**patient(6), "bmi": 12345.678})
    service = create_xgboost_service_from_env(session=aws.session)
    with caplog.at_level(logging.DEBUG, logger="clinical_services"), pytest.raises(expected) as raised:
        service.predict(model_type, MARKER, features)
    assert MARKER not in str(raised.value) and "12345.678" not in str(raised.value) and "\n" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None  # the AWS error may quote the body
    assert MARKER not in our_log(caplog) and "12345.678" not in our_log(caplog)
    assert scan(aws, "XGBOOST_PREDICTIONS_TABLE") == scan(aws, "XGBOOST_FEATURE_IMPORTANCE_TABLE") == []


BAD_WEEKS = {
    "a week too short": lambda week: week[:-1],
    "a negative count": lambda week: week[:5] + [-1.0] + week[6:],
    "a NaN count": lambda week: week[:5] + [math.nan] + week[6:],
    "an infinite count": lambda week: week[:5] + [math.inf] + week[6:],
}


@pytest.mark.parametrize("case", BAD_WEEKS)
def test_bad_weeks_are_typed_errors_that_write_nothing(aws, served, case, caplog):
    empty(aws)
    service = create_pat_service_from_env(session=aws.session)
    served.standin.invocations.clear()
    with caplog.at_level(logging.DEBUG, logger="clinical_services"), pytest.raises(BadInput) as raised:
        service.analyze(MARKER, BAD_WEEKS[case]([1.0] * WEEK))
    assert MARKER not in str(raised.value) + our_log(caplog)
    assert served.standin.invocations == []
    assert scan(aws, "PAT_ANALYSES_TABLE") == scan(aws, "PAT_EMBEDDINGS_TABLE") == [] and objects(aws) == []


@pytest.mark.parametrize("variable", ["XGBOOST_PREDICTIONS_TABLE", "XGBOOST_FEATURE_IMPORTANCE_TABLE"])
def test_a_missing_xgboost_table_is_a_typed_error_and_nothing_is_written(aws, served, variable):
    empty(aws)
    service = create_xgboost_service_from_env({**aws.env, variable: "clinical-inference-prod-absent"},
                                              session=aws.session)
    with pytest.raises(MissingResource, match=variable):
        service.predict("risk", MARKER, patient(7))
    assert scan(aws, "XGBOOST_PREDICTIONS_TABLE") == scan(aws, "XGBOOST_FEATURE_IMPORTANCE_TABLE") == []


@pytest.mark.parametrize("variable", ["PAT_EMBEDDINGS_TABLE", "PAT_BUCKET_NAME", "PAT_ENDPOINT_NAME"])
def test_a_missing_pat_table_bucket_or_endpoint_is_a_typed_error_and_nothing_is_written(aws, served, variable):
    empty(aws)
    service = create_pat_service_from_env({**aws.env, variable: "clinical-inference-prod-absent"},
                                          session=aws.session)
    with pytest.raises(MissingResource, match=variable):
        service.analyze(MARKER, weeks(1)[0].tolist())
    assert scan(aws, "PAT_ANALYSES_TABLE") == scan(aws, "PAT_EMBEDDINGS_TABLE") == [] and objects(aws) == []


def test_the_factories_name_every_missing_or_malformed_variable_in_one_line(platform):
    env = {**platform, "XGBOOST_PREDICTION_TTL_DAYS": "ninety", "AWS_REGION": "mars"}
    del env["XGBOOST_MODEL_INFO_TABLE"], env["XGBOOST_OUTCOME_ENDPOINT"]
    with pytest.raises(ConfigurationError) as raised:
        create_xgboost_service_from_env(env)
    message = str(raised.value)
    assert "\n" not in message and "ninety" not in message
    assert "missing XGBOOST_MODEL_INFO_TABLE, XGBOOST_OUTCOME_ENDPOINT" in message
    assert "malformed XGBOOST_PREDICTION_TTL_DAYS, AWS_REGION" in message
    with pytest.raises(ConfigurationError, match="missing PAT_BUCKET_NAME"):
        create_pat_service_from_env({key: value for key, value in platform.items() if key != "PAT_BUCKET_NAME"})


def test_an_endpoint_4xx_names_the_status_and_the_model(aws, served):
    service = create_xgboost_service_from_env(session=aws.session)
    with pytest.raises(EndpointError) as raised:  # named features, unknown to a model without a model-info row
        service.predict("treatment", MARKER, {**patient(8), "not_a_feature": 1.0})
    assert (raised.value.status, raised.value.model) == (400, "treatment")
    assert str(raised.value) == "endpoint of the treatment model answered 400"
    assert isinstance(raised.value, ServiceError)


def test_the_package_imports_without_the_serving_runtime():
    code = ("import sys, clinical_services; heavy = sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'xgboost', 'serve', 'models', 'numpy', 'flask', 'gunicorn'}); print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_the_service_reads_the_model_info_row_the_deploy_writes_and_checks_features_before_invoking(aws, served):
    from sagemaker_deploy import register

    empty(aws)
    filled = {"families": {"xgboost": {"models": [
        {"name": f"xgboost-{kind}", "source": str(served.model_dirs[kind]),
         "model_data_url": f"s3://models/xgboost-{kind}/{kind}0/model.tar.gz"} for kind in ("risk", "treatment")]}}}
    images = {"families": {"xgboost": {"uri": "registry/xgboost-inference@sha256:" + "d" * 64,
                                       "digest": "sha256:" + "d" * 64}}}
    rows = register.model_info_rows(filled, images, {"xgboost-risk": {"sha256": "a" * 64}})
    table = aws.env["XGBOOST_MODEL_INFO_TABLE"]
    register.put_model_info(aws.dynamodb, table, rows)
    try:
        service = create_xgboost_service_from_env(session=aws.session)
        info = service.model_info("risk")
        assert (info.name, info.version, info.features) == ("xgboost-risk", "1.0.0", tuple(FEATURES))
        assert (info.artifact_uri, info.artifact_sha256, info.image_digest) == (
            "s3://models/xgboost-risk/risk0/model.tar.gz", "a" * 64, "sha256:" + "d" * 64)
        assert service.model_info("outcome") is None
        served.standin.invocations.clear()
        with pytest.raises(BadInput, match="1 feature name"):
            service.predict("risk", MARKER, {**patient(9), MARKER: 1.0})
        with pytest.raises(BadInput, match="takes 40 features, got 39"):
            service.predict("treatment", MARKER, list(patient(9).values())[:-1])
        assert served.standin.invocations == []
        partial = {name: value for name, value in patient(9).items() if name != "age"}  # a missing value is None
        assert service.predict("risk", "p-9", partial).model_version == "1.0.0"
    finally:
        for row in rows:
            aws.dynamodb.delete_item(TableName=table, Key={"model_type": {"S": row["model_type"]}})


def readme_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The application side: `clinical_services`", 1)[1].split("\n### ", 1)[0]
    (block,) = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return block


def test_the_readme_block_runs_as_pasted(aws, served, tmp_path, monkeypatch, capsys):
    """With platform.env in the environment and the demo's samples under build/ (as `./build.sh demo` writes them),
    from the process environment alone (the default boto3 session)."""
    empty(aws)
    (tmp_path / "build" / "models" / "xgboost").mkdir(parents=True)
    write_samples(tmp_path / "build" / "models" / "xgboost", "risk")
    monkeypatch.chdir(tmp_path)
    block = readme_block()
    assert len(block.strip().splitlines()) <= 10
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and "1.0.0" in printed[0] and "s3://" in printed[1]
    assert len(scan(aws, "XGBOOST_PREDICTIONS_TABLE")) == len(scan(aws, "PAT_ANALYSES_TABLE")) == 1


@pytest.mark.parametrize("sent, echoed", [
    ("contributions=true", "contributions=true"),
    ("contributions=true;provenance=true", "contributions=true;provenance=true;model_version=1.0.0"),
    ("provenance=false", "provenance=false"),
])
def test_serve_appends_the_model_version_to_the_custom_attributes_only_when_asked(served, sent, echoed):
    import urllib.request

    body = json.dumps({"instances": [list(patient(10).values())]}).encode()
    request = urllib.request.Request(served.standin.endpoints["xgboost-risk-endpoint"] + "/invocations", data=body,
                                     headers={"Content-Type": "application/json",
                                              "X-Amzn-SageMaker-Custom-Attributes": sent})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Amzn-SageMaker-Custom-Attributes"] == echoed


def test_a_second_write_of_the_same_id_changes_nothing(aws):
    """The condition on the id (and the transaction's token): a retried or repeated write keeps the first item."""
    from clinical_services import aws as calls

    empty(aws)
    table = aws.env["XGBOOST_PREDICTIONS_TABLE"]
    first = {"prediction_id": "id-1", "patient_id": "p-11", "scores": [Decimal("0.25")]}
    calls.write_new(aws.dynamodb, [(table, "prediction_id", first)], "id-1")
    try:
        calls.write_new(aws.dynamodb, [(table, "prediction_id", {**first, "scores": [Decimal("0.75")]})], "id-1")
    except ServiceError as error:  # moto does not keep tokens; DynamoDB answers a repeated token with success
        assert str(error) == "a record with this id exists already: nothing was written"
    assert [item["scores"] for item in scan(aws, "XGBOOST_PREDICTIONS_TABLE")] == [[Decimal("0.25")]]
