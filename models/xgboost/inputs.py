"""Decoded request data -> the feature matrix a booster predicts on, with the feature count checked for every format.

JSON documents (and JSON Lines) hold instances as rows `[[...], ...]`, as `{"features": [...]}`, or by feature name
`{"age": 71, ...}` (the model's feature names; null or an absent name is a missing value only where allowed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, issparse

from serve.errors import BadRequest

from models.xgboost.artifact import XGBoostModel

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_width(width: int, model: XGBoostModel) -> None:
    if width != model.num_features:
        raise BadRequest(f"expected {model.num_features} features per row, got {width}")


def _dense(rows: Any, model: XGBoostModel) -> np.ndarray:
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest("instances must be rows of numbers (null for missing) of equal length") from None
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise BadRequest(f"instances must form a 2-D table, got {matrix.ndim} dimensions")
    if matrix.shape[0] == 0:
        raise BadRequest("the body holds no instances")
    _check_width(matrix.shape[1], model)
    return matrix


def _shown(names: list[str]) -> str:
    """Unknown feature names, as a client sent them: the first five, each cut at 40 characters."""
    shown = [name if len(name) <= 40 else name[:40] + "..." for name in names[:5]]
    return f"{shown}" + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _named(instances: list[dict], model: XGBoostModel) -> np.ndarray:
    if model.feature_names is None:
        raise BadRequest("this model has no feature names; send instances as rows of numbers")
    names = model.feature_names
    index = {name: i for i, name in enumerate(names)}
    matrix = np.full((len(instances), len(names)), np.nan)
    for row, instance in enumerate(instances):
        unknown = [key for key in instance if key not in index]
        missing = [name for name in names if name not in instance]
        if unknown or missing:
            parts = [f"unknown features {_shown(unknown)}" if unknown else "",
                     f"missing features {missing}" if missing else ""]
            raise BadRequest(f"instance {row + 1}: " + "; ".join(part for part in parts if part)
                             + " (send null for a missing value)")
        try:
            matrix[row] = [np.nan if instance[name] is None else float(instance[name]) for name in names]
        except (TypeError, ValueError):
            raise BadRequest(f"instance {row + 1}: feature values must be numbers or null") from None
    return matrix


def _instances(document: Any) -> list:
    if isinstance(document, dict):
        if "instances" not in document:
            raise BadRequest('JSON body must be {"instances": [...]}')
        document = document["instances"]
    if not isinstance(document, list) or not document:
        raise BadRequest('"instances" must be a non-empty list')
    return document


def from_json(document: Any, model: XGBoostModel) -> np.ndarray:
    instances = _instances(document)
    first = instances[0]
    if isinstance(first, dict):
        if not all(isinstance(instance, dict) for instance in instances):
            raise BadRequest("instances must all have the same form")
        if "features" in first:
            try:
                return _dense([instance["features"] for instance in instances], model)
            except KeyError:
                raise BadRequest('every instance needs "features" when the first has it') from None
        return _named(instances, model)
    return _dense(instances, model)


def from_sparse(matrix: csr_matrix, model: XGBoostModel) -> csr_matrix:
    """LIBSVM/RecordIO sparse rows: absent entries are missing values; no index may reach past the model's width."""
    if matrix.shape[0] == 0:
        raise BadRequest("the body holds no instances")
    if matrix.shape[1] > model.num_features:
        raise BadRequest(f"expected {model.num_features} features per row, got a feature index up to "
                         f"{matrix.shape[1] - 1}")
    if matrix.shape[1] < model.num_features:
        matrix = csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], model.num_features))
    return matrix


def check_float32(matrix) -> None:
    """The one rule for values, whatever the content type and output: XGBoost reads features as float32, so a value is
    a finite number of magnitude at most FLOAT32_MAX, or NaN (missing). Infinity or a larger magnitude is a 400 (the
    booster would read it as infinity: scores pass it through silently, contributions refuse it)."""
    values = matrix.data if issparse(matrix) else matrix
    beyond = np.abs(values) > FLOAT32_MAX  # NaN compares False: missing
    if beyond.any():
        at = int(np.flatnonzero(beyond.ravel())[0])
        if issparse(matrix):
            row, column = int(np.searchsorted(matrix.indptr, at, side="right")) - 1, int(matrix.indices[at])
        else:
            row, column = divmod(at, matrix.shape[1])
        raise BadRequest(f"row {row + 1}, column {column + 1}: feature values must be finite and at most "
                         f"{FLOAT32_MAX:.8g} in magnitude (XGBoost reads float32); send NaN, null or an empty "
                         "field for a missing value")


def to_matrix(data: Any, model: XGBoostModel):
    if issparse(data):
        matrix = from_sparse(csr_matrix(data), model)
    elif isinstance(data, np.ndarray):
        matrix = _dense(data, model)
    else:
        matrix = from_json(data, model)
    check_float32(matrix)
    return matrix
