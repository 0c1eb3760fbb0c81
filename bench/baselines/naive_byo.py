"""The naive bring-your-own XGBoost server that most teams write after AWS's scikit_bring_your_own example.

Written by us for the benchmark only. Flask + gunicorn sync workers, `pandas.read_csv` on every body,
`Booster.predict(DMatrix)`, CSV out through pandas; the model is loaded lazily by the first request in each worker.
Run it as any team would (`OMP_NUM_THREADS=1` set):

    NAIVE_MODEL_PATH=model/xgboost-model OMP_NUM_THREADS=1 \
        gunicorn -k sync -w 2 -b 127.0.0.1:8080 bench.baselines.naive_byo:app
"""

from __future__ import annotations

import io
import os

import flask
import pandas as pd
import xgboost as xgb

app = flask.Flask(__name__)
_model = None


def model() -> xgb.Booster:
    global _model
    if _model is None:
        _model = xgb.Booster(model_file=os.environ["NAIVE_MODEL_PATH"])
    return _model


@app.route("/ping", methods=["GET"])
def ping():
    return flask.Response(response="\n", status=200 if model() is not None else 404, mimetype="application/json")


@app.route("/invocations", methods=["POST"])
def invocations():
    if flask.request.content_type != "text/csv":
        return flask.Response(response="This predictor only supports CSV data", status=415, mimetype="text/plain")
    data = pd.read_csv(io.StringIO(flask.request.data.decode("utf-8")), header=None)
    predictions = model().predict(xgb.DMatrix(data))
    out = io.StringIO()
    pd.DataFrame({"results": predictions}).to_csv(out, header=False, index=False)
    return flask.Response(response=out.getvalue(), status=200, mimetype="text/csv")
