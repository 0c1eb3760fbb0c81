"""The PAT guide's service: one week of minute counts analysed by the PAT endpoint, kept in pat-analyses and
pat-embeddings, the raw week (and an embedding too large for an item) in the PAT bucket, SSE-KMS."""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping, Sequence

from clinical_services import aws, records, settings
from clinical_services.errors import BadInput, ServiceError

log = logging.getLogger("clinical_services.pat")
WEEK_MINUTES = 10080
TABLES = {"PAT_ANALYSES_TABLE": "name", "PAT_EMBEDDINGS_TABLE": "name", "PAT_INTEGRATIONS_TABLE": "name"}
VARIABLES = {"PAT_ENDPOINT_NAME": "name", "PAT_BUCKET_NAME": "bucket", **TABLES, "AWS_REGION": "region"}
OUTPUTS = ["embedding", "scores", "metrics"]
# DynamoDB's item limit is 400 KB ("Service, account, and table quotas in Amazon DynamoDB",
# https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html); an embedding whose item would
# come near it goes to the bucket.
MAX_ITEM_BYTES = 350_000


@dataclass(frozen=True)
class PatAnalysis:
    analysis_id: str
    model_version: str | None
    scores: dict
    metrics: dict
    embedding: list
    embedding_uri: str | None  # where the embedding is when its item would be too large, else None
    week_uri: str
    created_at: str

    def __repr__(self) -> str:  # no results in logs
        return f"PatAnalysis(model_version={self.model_version!r})"


class PatService:
    def __init__(self, values: Mapping[str, str], clients: Mapping[str, Any], max_item_bytes: int = MAX_ITEM_BYTES):
        self.values = dict(values)
        self.runtime, self.dynamodb, self.s3 = clients["sagemaker-runtime"], clients["dynamodb"], clients["s3"]
        self.max_item_bytes = max_item_bytes
        self._kms_key: str | None = None

    def analyze(self, patient_id: str, week: Sequence[float | None]) -> PatAnalysis:
        records.patient(patient_id)
        activity = _week(week)
        bucket = self.values["PAT_BUCKET_NAME"]
        if self._kms_key is None:
            aws.check_tables(self.dynamodb, {name: self.values[name] for name in TABLES})
            self._kms_key = aws.bucket_key(self.s3, bucket, "PAT_BUCKET_NAME")
        answer = aws.invoke(self.runtime, self.values["PAT_ENDPOINT_NAME"],
                            {"instances": [{"activity": activity}], "outputs": OUTPUTS}, "PAT", "PAT_ENDPOINT_NAME",
                            "provenance=true")
        predictions = answer.body.get("predictions") if isinstance(answer.body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != 1 or "embedding" not in predictions[0]:
            raise ServiceError("the PAT endpoint answered without an embedding")
        prediction = predictions[0]
        analysis_id = str(uuid.uuid4())
        _, created_at = aws.now()
        keys = {"analysis_id": analysis_id, "patient_id": patient_id}
        prefix = f"analyses/{analysis_id}"
        week_uri = aws.put_object(self.s3, bucket, f"{prefix}/week.json", json.dumps(activity).encode(),
                                  self._kms_key, "PAT_BUCKET_NAME")
        embedding = prediction["embedding"]
        embedding_item = {**keys, "embedding": embedding, "model_version": answer.model_version,
                          "created_at": created_at}
        embedding_uri = None
        if len(json.dumps(aws.plain(embedding_item))) > self.max_item_bytes:
            embedding_uri = aws.put_object(self.s3, bucket, f"{prefix}/embedding.json",
                                           json.dumps(aws.plain(embedding)).encode(), self._kms_key,
                                           "PAT_BUCKET_NAME")
            embedding_item = {**keys, "embedding_uri": embedding_uri, "model_version": answer.model_version,
                              "created_at": created_at}
        aws.write_new(self.dynamodb, [
            (self.values["PAT_ANALYSES_TABLE"], "analysis_id", {
                **keys, "scores": prediction.get("scores"), "metrics": prediction.get("metrics"),
                "model_version": answer.model_version, "week_uri": week_uri, "created_at": created_at}),
            (self.values["PAT_EMBEDDINGS_TABLE"], "analysis_id", embedding_item),
        ], analysis_id)
        log.info("analysis written (version %s, embedding in %s)", answer.model_version,
                 "the bucket" if embedding_uri else "its item")
        return PatAnalysis(analysis_id, answer.model_version, aws.plain(prediction.get("scores") or {}),
                           aws.plain(prediction.get("metrics") or {}), aws.plain(embedding), embedding_uri, week_uri,
                           created_at)

    def record_integration(self, patient_id: str, system: str, details: Mapping[str, str]) -> str:
        return records.record_integration(self.dynamodb, self.values["PAT_INTEGRATIONS_TABLE"],
                                          "PAT_INTEGRATIONS_TABLE", patient_id, system, details)


def _week(week: Sequence[float | None]) -> list:
    """A week of minute counts: 10080 finite, non-negative numbers (None: a missing minute)."""
    if isinstance(week, (str, bytes)) or not isinstance(week, Sequence) and not hasattr(week, "__len__"):
        raise BadInput(f"week must be a sequence of {WEEK_MINUTES} minute counts")
    if len(week) != WEEK_MINUTES:
        raise BadInput(f"week must have {WEEK_MINUTES} minute counts, got {len(week)}")
    counts = []
    for value in week:
        if value is None:
            counts.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, Real):
            raise BadInput("week holds a count that is not a number")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise BadInput("week holds a negative or non-finite count")
        counts.append(value)
    return counts


def create_pat_service_from_env(env: Mapping[str, str] | None = None, session=None) -> PatService:
    """The service from the guide's variables (the process environment by default)."""
    values = settings.read(os.environ if env is None else env, VARIABLES)
    return PatService(values, aws.clients(values["AWS_REGION"], session))
