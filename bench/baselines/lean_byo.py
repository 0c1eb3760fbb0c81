"""A leaner naive bring-your-own XGBoost server: the second baseline (issue 20's, measured on an Intel Xeon VM).

Written by us for the benchmark only. Flask + gunicorn sync workers and `pandas.read_csv` as in naive_byo.py, but the
model is loaded when the worker imports the app, predicted from the array (`DMatrix(data.values, nthread=1)`) and
the scores are joined with `str` instead of written through pandas:

    LEAN_MODEL_PATH=model/xgboost-model OMP_NUM_THREADS=1 \
        gunicorn -k sync -w 2 -b 127.0.0.1:8080 bench.baselines.lean_byo:app
"""

from __future__ import annotations

import io
import os

import flask
import pandas as pd
import xgboost as xgb

app = flask.Flask(__name__)
booster = xgb.Booster(model_file=os.environ["LEAN_MODEL_PATH"])


@app.route("/ping", methods=["GET"])
def ping():
    return flask.Response(response="\n", status=200, mimetype="application/json")


@app.route("/invocations", methods=["POST"])
def invocations():
    if flask.request.content_type != "text/csv":
        return flask.Response(response="This predictor only supports CSV data", status=415, mimetype="text/plain")
    data = pd.read_csv(io.BytesIO(flask.request.data), header=None)
    predictions = booster.predict(xgb.DMatrix(data.values, nthread=1))
    return flask.Response(response="\n".join(str(p) for p in predictions), status=200, mimetype="text/csv")
