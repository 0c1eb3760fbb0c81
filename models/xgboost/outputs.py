"""What a prediction returns: raw scores, SageMaker's selectable outputs, and per-feature contributions.

Selectable outputs (`SAGEMAKER_INFERENCE_OUTPUT`) follow the official container: `predicted_label`, `labels`,
`probability`, `probabilities`, `raw_score`, `raw_scores` for classifiers and `predicted_score` for regression. A key
the objective cannot give is refused at start-up (the official container emits NaN, which is invalid JSON).
"""

from __future__ import annotations

import numpy as np

from serve.errors import ModelLoadError

from models.xgboost.artifact import XGBoostModel

CLASSIFIER_KEYS = ("predicted_label", "labels", "raw_score", "raw_scores")
VALID_KEYS = {
    "binary:logistic": CLASSIFIER_KEYS + ("probability", "probabilities"),
    "multi:softprob": CLASSIFIER_KEYS + ("probability", "probabilities"),
    "binary:logitraw": CLASSIFIER_KEYS,
    "binary:hinge": CLASSIFIER_KEYS,
    "multi:softmax": CLASSIFIER_KEYS,
}
REGRESSION_PREFIXES = ("reg:", "count:", "survival:")


def valid_keys(objective: str) -> tuple[str, ...]:
    if objective.startswith(REGRESSION_PREFIXES):
        return ("predicted_score",)
    return VALID_KEYS.get(objective, ())


def check_selectable(keys: tuple[str, ...], model: XGBoostModel) -> None:
    allowed = valid_keys(model.objective)
    invalid = [key for key in keys if key not in allowed]
    if invalid:
        raise ModelLoadError(f"SAGEMAKER_INFERENCE_OUTPUT keys {invalid} are not available for objective "
                             f"{model.objective}; available: {list(allowed) or 'none'}")


def labels(model: XGBoostModel) -> list:
    return list(model.class_labels) if model.class_labels else list(range(model.num_class or 2))


def _label_index(raw: np.ndarray, model: XGBoostModel) -> np.ndarray:
    objective = model.objective
    if objective == "binary:logistic":
        return (raw > 0.5).astype(np.int64)
    if objective == "binary:logitraw":
        return (raw > 0).astype(np.int64)
    if objective == "multi:softprob":
        return raw.argmax(axis=1)
    return raw.astype(np.int64)  # binary:hinge and multi:softmax predict the class itself


def selectable(raw: np.ndarray, keys: tuple[str, ...], model: XGBoostModel) -> list[dict]:
    """One record per row with the requested keys, in the order the operator listed them."""
    columns: dict[str, list] = {}
    raw = raw.astype(np.float64)
    names = labels(model)
    two_class = raw.ndim == 1
    for key in keys:
        if key == "predicted_label":
            columns[key] = [names[i] for i in _label_index(raw, model)]
        elif key == "labels":
            columns[key] = [names] * len(raw)
        elif key in ("raw_score", "predicted_score"):
            columns[key] = (raw if two_class else raw.max(axis=1)).tolist()
        elif key == "probability":
            columns[key] = (raw if two_class else raw.max(axis=1)).tolist()
        elif key in ("probabilities", "raw_scores"):
            columns[key] = (np.stack([1 - raw, raw], axis=1) if two_class else raw).tolist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def contributions(contribs: np.ndarray, model: XGBoostModel, top_k: int | None) -> list:
    """Per-row TreeSHAP contributions by feature name with the bias term; per class for multiclass models.

    `contribs` has shape (rows, features + 1) or (rows, classes, features + 1), bias last, as XGBoost gives it.
    With top_k, only the k largest in absolute value are kept (the bias is always kept).
    """
    names = (model.feature_names or [f"f{i}" for i in range(model.num_features)]) + ["bias"]

    def one(row: np.ndarray) -> dict:
        keep = range(len(row) - 1)
        if top_k is not None and top_k < len(row) - 1:
            keep = np.argsort(-np.abs(row[:-1]), kind="stable")[:top_k]  # largest first
        return {**{names[i]: float(row[i]) for i in keep}, "bias": float(row[-1])}

    if contribs.ndim == 2:
        return [one(row) for row in contribs]
    class_names = [str(name) for name in labels(model)]
    return [{class_names[c]: one(row[c]) for c in range(row.shape[0])} for row in contribs]
