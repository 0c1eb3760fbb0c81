"""The XGBoost handler: a drop-in for SageMaker's built-in XGBoost in algorithm mode.

Request options (JSON top-level keys, or `X-Amzn-SageMaker-Custom-Attributes` such as `contributions=true;top_k=5`):
    contributions  true -> per-prediction TreeSHAP feature contributions (XGBoost's pred_contribs), by feature name
    top_k          keep the k largest contributions by absolute value (the bias term is always returned)
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from serve import codecs, json_codec
from serve.errors import BadRequest
from serve.handler import Handler, Request

from models.xgboost import fast_predict, inputs, outputs
from models.xgboost.artifact import XGBoostModel, load_model, objective_of

TRUE = ("1", "true", "yes")


def as_model(model: Any) -> XGBoostModel:
    """A user's model_fn may return a bare Booster; serve it with the same pipeline."""
    if isinstance(model, XGBoostModel):
        return model
    if isinstance(model, xgb.Booster):
        objective, num_class = objective_of(model)
        return XGBoostModel([model], objective, model.num_features(), num_class, model.feature_names)
    raise TypeError(f"model_fn returned a {type(model).__name__}; the default predict_fn needs an xgboost Booster")


def _options(data: Any, request: Request) -> tuple[bool, int | None]:
    options = dict(request.attributes)
    if isinstance(data, dict):
        options.update({key: str(data[key]).lower() for key in ("contributions", "top_k") if key in data})
    wanted = str(options.get("contributions", "false")).lower() in TRUE
    top_k = options.get("top_k")
    if top_k is None:
        return wanted, None
    try:
        top_k = int(top_k)
    except ValueError:
        raise BadRequest("top_k must be a positive integer") from None
    if top_k < 1:
        raise BadRequest("top_k must be a positive integer")
    return wanted, top_k


def _predict(booster: xgb.Booster, matrix, fast: bool) -> np.ndarray:
    scores = fast_predict.predict(booster, matrix) if fast else None
    return booster.inplace_predict(matrix, validate_features=False) if scores is None else scores


def predict_raw(model: XGBoostModel, matrix, fast: bool = False) -> np.ndarray:
    """Booster.inplace_predict (fast: its C call directly, same bits), averaged over an ensemble (or voted)."""
    scores = [_predict(booster, matrix, fast) for booster in model.boosters]
    if len(scores) == 1:
        return scores[0]
    stacked = np.stack(scores)
    if not model.votes:
        return stacked.mean(axis=0)
    classes = stacked.astype(np.int64)
    counts = np.apply_along_axis(np.bincount, 0, classes, minlength=max(model.num_class, 2))
    return counts.argmax(axis=0).astype(scores[0].dtype)  # ties go to the lowest class, as scipy.stats.mode


def predict_contributions(model: XGBoostModel, matrix) -> np.ndarray:
    values = [booster.predict(xgb.DMatrix(matrix, missing=np.nan, nthread=1), pred_contribs=True,
                              validate_features=False) for booster in model.boosters]
    return values[0] if len(values) == 1 else np.mean(values, axis=0)


class XGBoostHandler(Handler):
    default_accept = codecs.CSV  # the official algorithm mode answers CSV when Accept is absent or */*
    fast = False  # fast_predict.predict checked against inplace_predict on the loaded boosters

    def __init__(self, settings):
        super().__init__(settings)
        if settings.family.inference_output:
            self.encoders = {k: v for k, v in codecs.ENCODERS.items() if k != codecs.NPY}

    def model_fn(self, model_dir: Path) -> XGBoostModel:
        return self.adopt(load_model(model_dir, allow_pickle=self.settings.family.allow_pickle))

    def adopt(self, model: Any) -> XGBoostModel:
        model = as_model(model)
        for booster in model.boosters:
            booster.set_param({"nthread": 1})
        if self.settings.family.inference_output:
            outputs.check_selectable(self.settings.family.inference_output, model)
        return model

    def warm_up(self) -> None:
        """Check the fast path, then one request's hooks on the warm-up request."""
        self.fast = all(fast_predict.agrees(booster, self.model.num_features) for booster in self.model.boosters)
        content_type, accept, row = self.warm_up_request()
        request = Request(content_type=content_type, accept=accept)
        self.output_fn(self.predict_fn(self.input_fn(row, request), self.model, request), request)

    def warm_up_request(self) -> tuple[str, str, bytes]:
        """A CSV row of zeros, answered in the default type (ours when the configured one is a user's output_fn's)."""
        accept = self.accept_default() if self.accept_default() in self.encoders else self.default_accept
        return codecs.CSV, accept, b",".join([b"0"] * self.model.num_features) + b"\n"

    def describe(self) -> dict:
        return self.model.describe() if isinstance(self.model, XGBoostModel) else {}

    def native_bytes(self, obj: Any) -> int:
        """A booster's trees by their UBJSON size: XGBoost tells no memory figure, and its trees take about as much
        (1.0 to 1.5 times, measured on XGBoost 3.2's heap). Saved in a thread of its own, since XGBoost keeps the
        saved buffer in the calling thread's storage for as long as the booster lives."""
        if not isinstance(obj, xgb.Booster):
            return 0
        with ThreadPoolExecutor(1) as saver:
            return len(saver.submit(obj.save_raw, "ubj").result())

    def decode(self, body: bytes, request: Request) -> Any:
        if request.content_type == codecs.LIBSVM and self.settings.family.libsvm_one_based:
            request = replace(request, params={"indexing": "1", **request.params})
        return super().decode(body, request)

    def input_fn(self, body: bytes, request: Request) -> Any:
        if request.content_type == codecs.JSON:  # for predict_fn below; a user's predict_fn gets decode's document
            rows = json_codec.numeric_rows(body)  # rows of numbers, the common batch: no Python float per value
            if rows is not None:
                return rows
        return self.decode(body, request)

    def predict_fn(self, data: Any, model: Any, request: Request) -> Any:
        model, keys = as_model(model), self.settings.family.inference_output
        wanted, top_k = _options(data, request)
        matrix = inputs.to_matrix(data, model)
        raw = predict_raw(model, matrix, self.fast and model is self.model)
        if wanted:
            contribs = predict_contributions(model, matrix)
            if request.accept == codecs.NPY:
                return contribs
            records = outputs.selectable(raw, keys, model) \
                if keys else [{"score": row} for row in raw.astype(np.float64).tolist()]
            for record, explanation in zip(records, outputs.contributions(contribs, model, top_k)):
                record["contributions"] = explanation
            return records
        if keys:
            return outputs.selectable(raw, keys, model)
        return raw
