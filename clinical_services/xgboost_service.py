"""The XGBoost guide's service: one prediction with its TreeSHAP contributions, kept in the predictions and
feature-importance tables."""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from numbers import Real
from typing import Any, Mapping, Sequence

from clinical_services import aws, records, settings
from clinical_services.errors import BadInput, ServiceError, UnknownModelType

log = logging.getLogger("clinical_services.xgboost")
MODEL_TYPES = ("risk", "treatment", "outcome")
DAY_SECONDS = 86400
TABLES = {"XGBOOST_PREDICTIONS_TABLE": "name", "XGBOOST_FEATURE_IMPORTANCE_TABLE": "name",
          "XGBOOST_INTEGRATIONS_TABLE": "name", "XGBOOST_MODEL_INFO_TABLE": "name"}
VARIABLES = {**TABLES, "XGBOOST_PREDICTION_TTL_DAYS": "days", "XGBOOST_KMS_KEY_ID": "key",
             **{f"XGBOOST_{kind.upper()}_ENDPOINT": "name" for kind in MODEL_TYPES}, "AWS_REGION": "region"}
# On a multi-model endpoint the deploy's endpoints.env also names each model's artifact (optional here).
TARGET_MODELS = {kind: f"XGBOOST_{kind.upper()}_TARGET_MODEL" for kind in MODEL_TYPES}
ASK = "contributions=true;provenance=true"


@dataclass(frozen=True)
class ModelInfo:
    """The model-info table's row, written by the deploy when it registers a model."""

    model_type: str
    name: str
    version: str
    artifact_uri: str
    artifact_sha256: str
    image_digest: str
    features: tuple[str, ...]


@dataclass(frozen=True)
class XgboostPrediction:
    prediction_id: str
    model_type: str
    model_version: str | None
    scores: list  # one score (binary, regression) or one probability per class
    contributions: dict  # feature -> contribution, and "bias" (per class for multiclass models)
    created_at: str
    expires_at: int

    def __repr__(self) -> str:  # no scores in logs
        return f"XgboostPrediction(model_type={self.model_type!r}, model_version={self.model_version!r})"


class XgboostService:
    def __init__(self, values: Mapping[str, str], targets: Mapping[str, str], clients: Mapping[str, Any]):
        self.values, self.targets = dict(values), dict(targets)
        self.runtime, self.dynamodb = clients["sagemaker-runtime"], clients["dynamodb"]
        self.ttl_seconds = int(values["XGBOOST_PREDICTION_TTL_DAYS"]) * DAY_SECONDS
        self.kms_key_id = values["XGBOOST_KMS_KEY_ID"]
        self._model_info: dict[str, ModelInfo] = {}
        self._tables_checked = False

    def model_info(self, model_type: str) -> ModelInfo | None:
        """The deployed model's row (cached once found); None when the deploy has not written one."""
        _check_type(model_type)
        if model_type not in self._model_info:
            row = aws.read_item(self.dynamodb, self.values["XGBOOST_MODEL_INFO_TABLE"], {"model_type": model_type},
                                "XGBOOST_MODEL_INFO_TABLE")
            if row is None:
                return None
            self._model_info[model_type] = ModelInfo(
                model_type, row.get("name", ""), row.get("version", ""), row.get("artifact_uri", ""),
                row.get("artifact_sha256", ""), row.get("image_digest", ""), tuple(row.get("features", [])))
        return self._model_info[model_type]

    def predict(self, model_type: str, patient_id: str,
                features: Mapping[str, float | None] | Sequence[float | None]) -> XgboostPrediction:
        _check_type(model_type)
        records.patient(patient_id)
        info = self.model_info(model_type)
        instance = _instance(model_type, features, info.features if info else ())
        if not self._tables_checked:
            aws.check_tables(self.dynamodb, {name: self.values[name] for name in TABLES})
            self._tables_checked = True
        answer = aws.invoke(self.runtime, self.values[f"XGBOOST_{model_type.upper()}_ENDPOINT"],
                            {"instances": [instance], "contributions": True}, model_type,
                            f"XGBOOST_{model_type.upper()}_ENDPOINT", ASK, self.targets.get(model_type))
        predictions = answer.body.get("predictions") if isinstance(answer.body, dict) else None
        if not isinstance(predictions, list) or len(predictions) != 1 or "contributions" not in predictions[0]:
            raise ServiceError(f"the {model_type} endpoint answered without a prediction and its contributions")
        score = predictions[0].get("score")
        scores = score if isinstance(score, list) else [score]
        contributions = predictions[0]["contributions"]
        prediction_id = str(uuid.uuid4())
        seconds, created_at = aws.now()
        expires_at = seconds + self.ttl_seconds
        keys = {"prediction_id": prediction_id, "patient_id": patient_id}
        aws.write_new(self.dynamodb, [
            (self.values["XGBOOST_PREDICTIONS_TABLE"], "prediction_id", {
                **keys, "model_type": model_type, "scores": scores, "model_version": answer.model_version,
                "created_at": created_at, "expires_at": expires_at}),
            (self.values["XGBOOST_FEATURE_IMPORTANCE_TABLE"], "prediction_id", {
                **keys, "model_type": model_type, "contributions": contributions,
                "model_version": answer.model_version, "created_at": created_at}),
        ], prediction_id)
        log.info("prediction written (model %s, version %s)", model_type, answer.model_version)
        return XgboostPrediction(prediction_id, model_type, answer.model_version, aws.plain(scores),
                                 aws.plain(contributions), created_at, expires_at)

    def record_integration(self, patient_id: str, system: str, details: Mapping[str, str]) -> str:
        return records.record_integration(self.dynamodb, self.values["XGBOOST_INTEGRATIONS_TABLE"],
                                          "XGBOOST_INTEGRATIONS_TABLE", patient_id, system, details)


def _check_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise UnknownModelType(f"model_type must be one of {', '.join(MODEL_TYPES)}")


def _value(value: Any, position: int) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise BadInput(f"feature {position} is not a finite number or None")
    return float(value)


def _instance(model_type: str, features, names: Sequence[str]) -> list | dict:
    """The row in the model's order; a mapping is sent by name when the model's features are not known."""
    if isinstance(features, Mapping):
        if not names:
            return {str(name): _value(value, index) for index, (name, value) in enumerate(features.items())}
        unknown = set(features) - set(names)
        if unknown:
            raise BadInput(f"{len(unknown)} feature name(s) that the {model_type} model does not have")
        return [_value(features.get(name), index) for index, name in enumerate(names)]
    if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
        raise BadInput("features must be a mapping of names to values or a sequence in the model's order")
    if names and len(features) != len(names):
        raise BadInput(f"the {model_type} model takes {len(names)} features, got {len(features)}")
    return [_value(value, index) for index, value in enumerate(features)]


def create_xgboost_service_from_env(env: Mapping[str, str] | None = None, session=None) -> XgboostService:
    """The service from the guide's variables (the process environment by default)."""
    env = os.environ if env is None else env
    values = settings.read(env, VARIABLES)
    targets = {kind: env[name] for kind, name in TARGET_MODELS.items() if env.get(name, "").strip()}
    return XgboostService(values, targets, aws.clients(values["AWS_REGION"], session))
