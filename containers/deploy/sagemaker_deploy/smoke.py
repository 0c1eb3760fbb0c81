"""Smoke test: each deployed endpoint (each model of a multi-model endpoint) invoked once with a sample made from
the model artifact it serves, read back from S3, and the answer's shape checked against that artifact:

- XGBoost (metadata.json): two CSV rows of zeros, one value per feature; the answer holds two predictions of the
  same width, each a score or a list of scores, one per class where metadata.json lists more than two classes.
- PAT (config.json): one week of zero activity (7 x 1440 minutes) asking for the task scores; the answer holds
  one prediction with a probability per task of the artifact.
The sample is synthetic and neither it nor the answer is logged; a failure says which shape was wrong.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from dataclasses import dataclass
from typing import Callable

from . import DeployError, say

PAT_MINUTES = 7 * 1440
XGBOOST_ROWS = 2


@dataclass(frozen=True)
class Check:
    content_type: str
    body: bytes
    verify: Callable[[object], str | None]  # the parsed JSON answer -> what is wrong, or None


def _member(archive: bytes, name: str) -> dict | None:
    """A JSON file at the archive's root, or None."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = set(tar.getnames())
        found = next((candidate for candidate in (name, f"./{name}") if candidate in names), None)
        member = tar.extractfile(found) if found else None
        return json.loads(member.read()) if member else None


def _predictions(answer: object, count: int) -> tuple[list, str | None]:
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        return [], "the answer has no 'predictions' list"
    if len(predictions) != count:
        return [], f"{len(predictions)} predictions for {count} sample rows"
    return predictions, None


def xgboost_check(metadata: dict) -> Check:
    features = metadata.get("feature_names")
    if not features:
        raise DeployError("the XGBoost artifact's metadata.json lists no feature_names: cannot make a sample")
    classes = len(metadata.get("class_labels") or [])
    body = ("\n".join(",".join("0" for _ in features) for _ in range(XGBOOST_ROWS)) + "\n").encode()

    def verify(answer: object) -> str | None:
        predictions, problem = _predictions(answer, XGBOOST_ROWS)
        widths = set()
        for index, record in enumerate(predictions, 1):
            score = record.get("score") if isinstance(record, dict) else None
            values = score if isinstance(score, list) else [score]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                return f"prediction {index} has no number(s) under 'score'"
            widths.add(len(values))
        if len(widths) > 1:
            return "the predictions differ in width"
        if classes > 2 and widths != {classes}:
            return f"a prediction does not hold one score per class ({classes} classes)"
        return problem

    return Check("text/csv", body, verify)


def pat_check(config: dict) -> Check:
    tasks = set(config.get("tasks") or {})
    if not tasks:
        raise DeployError("the PAT artifact's config.json lists no tasks: cannot check the scores")
    body = json.dumps({"instances": [[0.0] * PAT_MINUTES], "outputs": ["scores"]}).encode()

    def verify(answer: object) -> str | None:
        predictions, problem = _predictions(answer, 1)
        if problem:
            return problem
        scores = predictions[0].get("scores") if isinstance(predictions[0], dict) else None
        if not isinstance(scores, dict) or set(scores) != tasks:
            return f"the prediction's 'scores' are not the artifact's {len(tasks)} tasks"
        if not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in scores.values()):
            return "a task score is not a probability"
        return None

    return Check("application/json", body, verify)


def check_for(archive: bytes, where: str) -> Check:
    metadata = _member(archive, "metadata.json")
    if metadata is not None and "feature_names" in metadata:
        return xgboost_check(metadata)
    config = _member(archive, "config.json")
    if config is not None and "tasks" in config:
        return pat_check(config)
    raise DeployError(f"{where}: neither an XGBoost artifact (metadata.json) nor a PAT artifact (config.json)")


def targets(config: dict) -> list[tuple[str, str | None, str]]:
    """(endpoint name, TargetModel or None, model data URL) for every model the config deploys."""
    found = []
    for family in config["families"].values():
        multi = family.get("multi_model_endpoint") if family["mode"] == "MultiModel" else None
        for model in family["models"]:
            url = model["model_data_url"]
            if multi:
                found.append((multi["endpoint_name"], url[len(multi["model_data_prefix"]):], url))
            else:
                found.append((model["endpoint_name"], None, url))
    return found


def _read_s3(s3, url: str) -> bytes:
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def run(s3, runtime, config: dict, dry_run: bool = False) -> list[str]:
    """Invokes every target once; returns the failures (empty when every answer had the expected shape)."""
    failures = []
    for endpoint, target, url in targets(config):
        what = endpoint + (f" (TargetModel {target})" if target else "")
        if dry_run:
            print(f"+ aws s3 cp {url} -  # the artifact the sample is made from", file=sys.stderr)
            check = Check("application/octet-stream", b"<sample>", lambda _: None)
        else:
            check = check_for(_read_s3(s3, url), url)
        request = {"EndpointName": endpoint, "ContentType": check.content_type, "Accept": "application/json",
                   "Body": check.body, **({"TargetModel": target} if target else {})}
        response = runtime.invoke_endpoint(**request)
        if dry_run:
            continue
        try:
            answer = json.loads(response["Body"].read())
        except ValueError:
            answer = None
        problem = check.verify(answer) if answer is not None else "the answer is not JSON"
        if problem:
            failures.append(f"{what}: {problem}")
        say(f"smoke {what}: " + (f"FAILED, {problem}" if problem else "answer has the expected shape"))
    return failures
