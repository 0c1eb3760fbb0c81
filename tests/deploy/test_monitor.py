"""build.sh monitor: Model Monitor data quality on the captured endpoints (sagemaker_deploy/monitor.py), the baseline
train writes, and the captured records that Model Monitor reads."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import xgboost as xgb

from .conftest import ACCOUNT, DEPLOY_CONFIGS, REGION, ROOT, platform_outputs

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import DeployError, config as configs, monitor, teardown  # noqa: E402
from sagemaker_deploy.plan import CAPTURE_CONTENT_TYPES  # noqa: E402

XGBOOST_ENDPOINTS = ["xgboost-risk-endpoint", "xgboost-treatment-endpoint", "xgboost-outcome-endpoint"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The example risk model as train writes it (fewer rounds: the bytes of the booster do not matter here)."""
    from models.xgboost import examples

    out = tmp_path_factory.mktemp("models")
    booster, metadata = examples.train("risk", rows=300, rounds=3)
    examples.package(booster, metadata, out, "risk")
    return out


def prod_config(tmp_path: Path, baseline: Path) -> Path:
    """prod.json with the platform outputs filled in and every XGBoost model's source beside this baseline."""
    text = (DEPLOY_CONFIGS / "prod.json").read_text()
    for name, value in platform_outputs("prod").items():
        text = text.replace(f"{{platform.{name}}}", value)
    config = json.loads(text)
    config.pop("$schema")
    for model in config["families"]["xgboost"]["models"]:
        source = tmp_path / model["name"]
        (tmp_path / f"{model['name']}{monitor.BASELINE_SUFFIX}").write_bytes(baseline.read_bytes())
        model["source"] = str(source)
    path = tmp_path / "prod.json"
    path.write_text(json.dumps(config))
    return path


def test_the_analyzer_image_is_the_one_aws_documents_for_the_region():
    assert monitor.image_uri("us-east-1") == \
        "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
    assert monitor.image_uri("eu-west-2") == \
        "749857270468.dkr.ecr.eu-west-2.amazonaws.com/sagemaker-model-monitor-analyzer"
    assert monitor.image_uri("cn-north-1") == \
        "453000072557.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-model-monitor-analyzer"
    with pytest.raises(DeployError, match="no Model Monitor analyzer image for xx-nowhere-1"):
        monitor.image_uri("xx-nowhere-1")


def test_the_baseline_train_writes_holds_the_models_features_with_a_header_and_nothing_else(trained):
    metadata = json.loads((trained / "risk" / "metadata.json").read_text())
    booster = xgb.Booster()
    booster.load_model(bytearray((trained / "risk" / "xgboost-model").read_bytes()))
    with (trained / "risk.baseline.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == metadata["feature_names"] == booster.feature_names
    assert len(rows) > 1000 and {len(row) for row in rows[1:]} == {booster.num_features()}
    assert not (trained / "risk" / "risk.baseline.csv").exists()  # beside the model, not in its artifact
    assert monitor.features(trained / "risk.baseline.csv") == booster.feature_names


def test_the_shipped_configs_monitor_single_model_xgboost_endpoints_and_say_why_not_the_others():
    for stage, expected in (("prod", XGBOOST_ENDPOINTS), ("dev", [])):
        config = configs.load(DEPLOY_CONFIGS / f"{stage}.json")
        monitored, skipped = monitor.targets(config)
        assert [target.endpoint_name for target in monitored] == expected
        assert any(line.startswith("pat-endpoint: family pat has no data_quality block") for line in skipped)
    _, skipped = monitor.targets(configs.load(DEPLOY_CONFIGS / "dev.json"))
    assert "xgboost-endpoint: a multi-model endpoint, which Model Monitor does not support" in skipped


class MonitoringStandIn:
    """The monitoring-schedule operations, which moto does not implement, answered on the client after botocore
    has validated the parameters against SageMaker's service model (the before-call event comes after the
    validation, as in the dry run)."""

    def __init__(self, client):
        self.schedules: dict[str, dict] = {}
        self.calls: list[tuple[str, dict]] = []
        client.meta.events.register("before-parameter-build.sagemaker.*", self._remember)
        client.meta.events.register("before-call.sagemaker.*", self._answer)

    def _remember(self, params, context, **_):
        context["stand_in_params"] = params

    def _answer(self, model, context, **_):
        params = context["stand_in_params"]
        name = params.get("MonitoringScheduleName")
        if model.name == "DescribeMonitoringSchedule":
            if name not in self.schedules:
                return _Status(400), {"Error": {"Code": "ResourceNotFound", "Message": f"{name} not found"}}
            return _Status(200), {"MonitoringScheduleName": name, **self.schedules[name]}
        if model.name in ("CreateMonitoringSchedule", "UpdateMonitoringSchedule"):
            self.calls.append((model.name, params))
            self.schedules[name] = {"MonitoringScheduleConfig": params["MonitoringScheduleConfig"]}
            return _Status(200), {"MonitoringScheduleArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:"
                                                           f"monitoring-schedule/{name}"}
        return None  # everything else goes to moto


class _Status:
    def __init__(self, status_code: int):
        self.status_code, self.headers = status_code, {}


class MotoAws:
    region, dry_run = REGION, False

    def __init__(self, moto):
        self.clients = {service: moto.client(service) for service in ("s3", "sagemaker", "cloudwatch")}
        self.stand_in = MonitoringStandIn(self.clients["sagemaker"])

    def client(self, service: str):
        return self.clients[service]


def test_monitor_starts_the_baseline_and_creates_the_schedule_and_the_alarms_of_every_captured_endpoint(
        moto, trained, tmp_path):
    config = configs.load(prod_config(tmp_path, trained / "risk.baseline.csv"))
    outputs = platform_outputs("prod")
    aws = MotoAws(moto)
    aws.client("s3").create_bucket(Bucket=outputs["ModelBucket"])
    summary = monitor.run(aws, config, dry_run=False)
    assert list(summary) == XGBOOST_ENDPOINTS
    sagemaker, s3 = aws.client("sagemaker"), aws.client("s3")
    features = monitor.features(trained / "risk.baseline.csv")
    capture_bucket = outputs["CaptureBucket"]
    for endpoint, done in summary.items():
        job = sagemaker.describe_processing_job(ProcessingJobName=done["baseline_job"])
        assert job["AppSpecification"]["ImageUri"] == monitor.image_uri(REGION)
        assert job["RoleArn"] == outputs["ExecutionRoleArn"]
        assert job["NetworkConfig"]["EnableNetworkIsolation"] is True
        assert job["NetworkConfig"]["VpcConfig"]["Subnets"] == config["vpc"]["subnets"]
        assert job["ProcessingOutputConfig"]["KmsKeyId"] == outputs["KeyArn"]
        baseline_uri = job["ProcessingInputs"][0]["S3Input"]["S3Uri"]
        bucket, key = baseline_uri[5:].split("/", 1)
        head = s3.head_object(Bucket=bucket, Key=key)
        assert (bucket, head["ServerSideEncryption"], head["SSEKMSKeyId"]) == \
            (outputs["ModelBucket"], "aws:kms", outputs["KeyArn"])
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == (trained / "risk.baseline.csv").read_bytes()
        results = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        assert results.startswith(f"s3://{capture_bucket}/monitoring/{endpoint}/")
        definition = sagemaker.describe_data_quality_job_definition(JobDefinitionName=done["job_definition"])
        assert definition["DataQualityJobInput"]["EndpointInput"]["EndpointName"] == endpoint
        assert definition["DataQualityBaselineConfig"]["ConstraintsResource"]["S3Uri"] == \
            f"{results}/constraints.json"
        output = definition["DataQualityJobOutputConfig"]
        assert output["KmsKeyId"] == outputs["KeyArn"]
        assert output["MonitoringOutputs"][0]["S3Output"]["S3Uri"] == \
            f"s3://{capture_bucket}/monitoring/{endpoint}/reports"
        assert definition["JobResources"]["ClusterConfig"]["VolumeKmsKeyId"] == outputs["KeyArn"]
        assert definition["RoleArn"] == outputs["ExecutionRoleArn"]
    created = [params for operation, params in aws.stand_in.calls if operation == "CreateMonitoringSchedule"]
    assert [(p["MonitoringScheduleName"], p["MonitoringScheduleConfig"]["ScheduleConfig"]["ScheduleExpression"],
             p["MonitoringScheduleConfig"]["MonitoringJobDefinitionName"]) for p in created] == \
        [(f"{endpoint}-data-quality", "cron(0 * ? * * *)", summary[endpoint]["job_definition"])
         for endpoint in XGBOOST_ENDPOINTS]
    alarms = aws.client("cloudwatch").describe_alarms(AlarmNamePrefix="xgboost-risk-endpoint-data-drift")
    alarms = alarms["MetricAlarms"]
    assert len(alarms) == 4  # 40 features, 10 per alarm
    watched = [query["MetricStat"]["Metric"] for alarm in alarms for query in alarm["Metrics"] if "MetricStat" in query]
    assert sorted(metric["MetricName"] for metric in watched) == sorted(f"feature_baseline_drift_{f}" for f in features)
    assert {metric["Namespace"] for metric in watched} == {"aws/sagemaker/Endpoints/data-metrics"}
    assert {json.dumps(metric["Dimensions"], sort_keys=True) for metric in watched} == {json.dumps(
        [{"Name": "Endpoint", "Value": "xgboost-risk-endpoint"},
         {"Name": "MonitoringSchedule", "Value": "xgboost-risk-endpoint-data-quality"}], sort_keys=True)}
    assert {tuple(alarm["AlarmActions"]) for alarm in alarms} == {(outputs["AlertTopicArn"],)}
    assert {alarm["Threshold"] for alarm in alarms} == {0.1}

    # Again: nothing new is started or created; the schedules are pointed at the same definitions.
    jobs = sagemaker.list_processing_jobs()["ProcessingJobSummaries"]
    assert monitor.run(aws, config, dry_run=False) == {**{e: {**d, "action": "updated"} for e, d in summary.items()}}
    assert sagemaker.list_processing_jobs()["ProcessingJobSummaries"] == jobs

    # destroy deletes the drift alarms with the endpoints' other alarms.
    removed = teardown.destroy(sagemaker, moto.client("application-autoscaling"), aws.client("cloudwatch"),
                               config)
    assert sorted(removed["alarms"]) == sorted(f"{endpoint}-data-drift-{index}" for endpoint in XGBOOST_ENDPOINTS
                                               for index in range(1, 5))
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []


def test_a_missing_baseline_is_one_line_that_says_to_train(tmp_path, trained):
    config = configs.load(prod_config(tmp_path, trained / "risk.baseline.csv"))
    (tmp_path / "xgboost-treatment.baseline.csv").unlink()
    target = monitor.targets(config)[0][1]
    with pytest.raises(DeployError, match=r"no baseline .*xgboost-treatment\.baseline\.csv: run ./build.sh train"):
        monitor.features(target.baseline)


def test_dry_run_monitor_prints_the_baseline_job_the_schedule_and_the_alarms_of_every_captured_endpoint(
        tmp_path, trained):
    path = prod_config(tmp_path, trained / "risk.baseline.csv")
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL="http://127.0.0.1:1", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               DEPLOY_CONFIG=str(path), DEPLOY_STATE_DIR=str(tmp_path / "state"), IMAGE_TAG="1.0.0-aaaaaaa")
    result = subprocess.run([str(ROOT / "build.sh"), "--dry-run", "monitor"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [line for line in result.stderr.splitlines() if line.startswith("+ aws ")]
    requests = [(line.split()[2], line.split()[3], json.loads(line.split("--cli-input-json ", 1)[1].strip("'")))
                for line in printed if "--cli-input-json" in line]
    for endpoint in XGBOOST_ENDPOINTS:
        mine = [(service, operation) for service, operation, params in requests if endpoint in json.dumps(params)]
        assert ("sagemaker", "create-processing-job") in mine
        assert ("sagemaker", "create-data-quality-job-definition") in mine
        assert ("sagemaker", "create-monitoring-schedule") in mine
        assert mine.count(("cloudwatch", "put-metric-alarm")) == 4
    assert not any("pat-endpoint" in json.dumps(params) for _, _, params in requests)
    assert "not monitored: pat-endpoint" in result.stderr
    # The baseline's rows are never printed: the put shows the file's path.
    second_row = (trained / "risk.baseline.csv").read_text().splitlines()[1]
    assert second_row not in result.stderr
    puts = [params for service, operation, params in requests if operation == "put-object"]
    assert len(puts) == 3 and all(put["SSEKMSKeyId"] == platform_outputs("prod")["KeyArn"] for put in puts)


def capture_record(request: tuple[str, bytes], response: tuple[str, bytes], header: dict) -> str:
    """One line of a capture file as SageMaker writes it: each side's data as text when its content type is one
    of the config's CSV or JSON types, otherwise base64 ("Data capture", "View the captured data",
    https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html)."""
    def side(mode: str, content_type: str, data: bytes) -> dict:
        if content_type in header["CsvContentTypes"]:
            encoding, text = "CSV", data.decode()
        elif content_type in header["JsonContentTypes"]:
            encoding, text = "JSON", data.decode()
        else:
            encoding, text = "BASE64", base64.b64encode(data).decode()
        return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}

    return json.dumps({"captureData": {"endpointInput": side("INPUT", *request),
                                       "endpointOutput": side("OUTPUT", *response)},
                       "eventMetadata": {"eventId": "6ece5c74-7497-43f1-a263-4833557ffd63",
                                         "inferenceTime": "2026-12-06T05:00:00Z"},
                       "eventVersion": "0"})


def read_as_model_monitor(line: str) -> tuple[list[list[str]], list[list[str]]]:
    """The analyzer's reading of a CSV capture: each side's data decoded per its encoding, then parsed as CSV
    without a header; a side that holds no CSV is the "Encoding mismatch" it fails with."""
    record = json.loads(line)["captureData"]
    sides = []
    for name in ("endpointInput", "endpointOutput"):
        side = record[name]
        data = base64.b64decode(side["data"]).decode() if side["encoding"] == "BASE64" else side["data"]
        if side["encoding"] not in ("CSV", "BASE64") or side["observedContentType"] != "text/csv":
            raise ValueError(f"Encoding mismatch: {name} is {side['encoding']} ({side['observedContentType']})")
        sides.append([row for row in csv.reader(io.StringIO(data)) if row])
    return sides[0], sides[1]


def test_a_captured_xgboost_request_is_csv_in_and_csv_out_with_the_baselines_columns(trained):
    from serve.app import create_app
    from serve.loading import build_handler
    from serve.settings import Settings

    settings = Settings(model_dir=trained / "risk", workers=1)
    client = create_app(build_handler(settings), settings).test_client()
    baseline = (trained / "risk.baseline.csv").read_text().splitlines()
    body = "\n".join(baseline[1:4]).encode()
    response = client.post("/invocations", data=body, content_type="text/csv")  # no Accept: the default
    assert response.status_code == 200
    line = capture_record(("text/csv", body), (response.content_type, response.data), CAPTURE_CONTENT_TYPES)
    inputs, outputs = read_as_model_monitor(line)
    header = next(csv.reader([baseline[0]]))
    assert [len(row) for row in inputs] == [len(header)] * 3
    assert len(outputs) == 3 and all(float(row[0]) >= 0 for row in outputs)
    # The same request answered in JSON is what the analyzer refuses (sagemaker-python-sdk #2785).
    answered = client.post("/invocations", data=body, content_type="text/csv", headers={"Accept": "application/json"})
    with pytest.raises(ValueError, match="Encoding mismatch: endpointOutput is JSON"):
        read_as_model_monitor(capture_record(("text/csv", body), (answered.content_type, answered.data),
                                             CAPTURE_CONTENT_TYPES))
    # A type outside the config's lists is captured as base64, which the reader decodes before parsing.
    line = capture_record(("text/csv", body), ("text/csv", response.data), {"CsvContentTypes": [],
                                                                              "JsonContentTypes": []})
    assert json.loads(line)["captureData"]["endpointInput"]["encoding"] == "BASE64"
    assert read_as_model_monitor(line) == (inputs, outputs)
