import json
import pickle
import shutil

import numpy as np
import pytest
import xgboost as xgb

from serve import codecs
from serve.app import create_app
from serve.errors import BadRequest, ModelLoadError
from serve.handler import Request
from serve.loading import build_handler
from serve.settings import Settings
from tests.conftest import FEATURES, load_booster, shared_fixture, train_model

from models.xgboost import artifact
from models.xgboost.handler import XGBoostHandler
from models.xgboost.settings import XGBoostSettings


def serve_rows(handler, rows, accept=codecs.NPY, attributes=None):
    request = Request(content_type=codecs.NPY, accept=accept, attributes=attributes or {})
    return handler.predict_fn(np.asarray(rows, dtype=np.float64), handler.model, request)


def booster(model_dir):
    return load_booster(next(model_dir.glob("xgboost-model*")))


def test_sagemaker_builtin_model_predicts_the_published_values():
    folder = shared_fixture("sagemaker-builtin-xgboost-abalone")
    expected = json.loads((folder / "expected_predictions.json").read_text())
    handler = build_handler(Settings(model_dir=folder))
    rows = codecs.decode_csv((folder / "abalone.validation.head20.csv").read_bytes(), {})
    predictions = serve_rows(handler, rows)
    assert predictions.astype(np.float64).tolist() == expected["predictions"]
    libsvm = codecs.decode_libsvm((folder / "abalone.validation.head20.libsvm").read_bytes(), {"indexing": "1"})
    request = Request(content_type=codecs.LIBSVM, accept=codecs.JSON)
    assert handler.predict_fn(libsvm, handler.model, request).tolist() == predictions.tolist()


def test_predictions_equal_booster_predict_bit_for_bit(risk_dir, handler):
    rows = np.random.default_rng(5).normal(size=(50, len(FEATURES)))
    rows[3, 1] = np.nan
    expected = booster(risk_dir).inplace_predict(rows)
    np.testing.assert_array_equal(serve_rows(handler, rows), expected)


@pytest.mark.parametrize("width", [3, 5])
def test_feature_count_is_checked_both_ways(handler, width):
    with pytest.raises(BadRequest, match=f"expected 4 features per row, got {width}"):
        serve_rows(handler, np.ones((2, width)))


def test_sparse_rows_past_the_model_width_are_refused(handler):
    sparse = codecs.decode_libsvm(b"0:1 4:2\n", {})
    with pytest.raises(BadRequest, match="feature index up to 4"):
        handler.predict_fn(sparse, handler.model, Request(content_type=codecs.LIBSVM, accept=codecs.JSON))


def test_json_instance_forms_agree(handler):
    rows = [[50, 27.5, 130, 6.1], [71, 31.0, None, 7.9]]
    named = [dict(zip(FEATURES, row)) for row in rows]
    request = Request(content_type=codecs.JSON, accept=codecs.JSON)
    as_rows = handler.predict_fn({"instances": rows}, handler.model, request)
    as_features = handler.predict_fn({"instances": [{"features": r} for r in rows]}, handler.model, request)
    as_names = handler.predict_fn({"instances": named}, handler.model, request)
    np.testing.assert_array_equal(as_rows, as_features)
    np.testing.assert_array_equal(as_rows, as_names)


def test_json_rows_of_numbers_are_read_straight_into_an_array_with_the_same_answer(handler):
    """input_fn reads {"instances": [[number or null]]} through serve.json_codec.numeric_rows (no Python float per
    value); a document with request options still goes through decode_json; the predictions are the same."""
    request = Request(content_type=codecs.JSON, accept=codecs.JSON)
    rows = [[50, 27.5, 130, 6.1], [71, 31.0, None, 7.9]]
    fast = handler.input_fn(json.dumps({"instances": rows}).encode(), request)
    assert isinstance(fast, np.ndarray) and fast.dtype == np.float64 and fast.shape == (2, 4)
    assert np.isnan(fast[1, 2]) and np.count_nonzero(np.isnan(fast)) == 1
    np.testing.assert_array_equal(handler.predict_fn(fast, handler.model, request),
                                  handler.predict_fn({"instances": rows}, handler.model, request))
    with_option = handler.input_fn(b'{"instances": [[50, 27.5, 130, 6.1]], "contributions": true}', request)
    assert with_option == {"instances": [[50, 27.5, 130, 6.1]], "contributions": True}


def test_named_features_list_what_is_wrong(handler):
    instance = {"age": 50, "bmi": 27.5, "systolic_bp": 130, "weight": 80}
    with pytest.raises(BadRequest, match=r"unknown features \['weight'\]; missing features \['hba1c'\]"):
        handler.predict_fn({"instances": [instance]}, handler.model, Request(content_type=codecs.JSON, accept=codecs.JSON))


@pytest.mark.parametrize("document", [{"rows": []}, {"instances": []}, {"instances": [["a", "b", "c", "d"]]},
                                      {"instances": [[1, 2, 3, 4], [1, 2]]}, [[[1, 2, 3, 4]]]])
def test_malformed_json_instances_are_bad_requests(handler, document):
    with pytest.raises(BadRequest):
        handler.predict_fn(document, handler.model, Request(content_type=codecs.JSON, accept=codecs.JSON))


def test_ensemble_is_averaged(tmp_path, risk_dir):
    train_model(tmp_path, "binary:logistic", seed=3, file_name="xgboost-model-0")
    train_model(tmp_path, "binary:logistic", seed=4, file_name="xgboost-model-1")
    handler = build_handler(Settings(model_dir=tmp_path))
    rows = np.random.default_rng(0).normal(size=(10, 4))
    members = [booster_.inplace_predict(rows) for booster_ in
               (load_booster(tmp_path / f"xgboost-model-{i}") for i in range(2))]
    np.testing.assert_array_equal(serve_rows(handler, rows), np.mean(members, axis=0))


def test_ensemble_of_softmax_models_votes(tmp_path):
    for seed in range(3):
        train_model(tmp_path, "multi:softmax", seed=seed, file_name=f"xgboost-model-{seed}.ubj")
    handler = build_handler(Settings(model_dir=tmp_path))
    rows = np.random.default_rng(1).normal(size=(40, 4))
    votes = np.stack([load_booster(tmp_path / f"xgboost-model-{s}.ubj").inplace_predict(rows)
                      for s in range(3)]).astype(int)
    majority = [np.bincount(column, minlength=3).argmax() for column in votes.T]
    assert serve_rows(handler, rows).tolist() == majority


def test_ensemble_members_must_agree(tmp_path):
    train_model(tmp_path, "binary:logistic", file_name="a.ubj")
    train_model(tmp_path, "reg:squarederror", file_name="b.ubj")
    with pytest.raises(ModelLoadError, match="differ"):
        build_handler(Settings(model_dir=tmp_path))


def test_json_and_stray_files(tmp_path, outcome_dir):
    model = load_booster(outcome_dir / "xgboost-model")
    model.save_model(str(tmp_path / "model.json"))
    (tmp_path / ".DS_Store").write_text("x")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    (tmp_path / "code").mkdir()
    handler = build_handler(Settings(model_dir=tmp_path))
    assert handler.model.files == ["model.json"]


def test_pickles_load_only_when_allowed(tmp_path, outcome_dir):
    model = load_booster(outcome_dir / "xgboost-model")
    (tmp_path / "xgboost-model").write_bytes(pickle.dumps(model))
    with pytest.raises(ModelLoadError, match="SERVE_ALLOW_PICKLE"):
        build_handler(Settings(model_dir=tmp_path))
    handler = build_handler(Settings(model_dir=tmp_path, family=XGBoostSettings(allow_pickle=True)))
    rows = np.ones((1, 4))
    np.testing.assert_array_equal(serve_rows(handler, rows), model.inplace_predict(rows))


def test_model_from_a_newer_xgboost_is_refused(tmp_path, outcome_dir):
    document = json.loads(load_booster(outcome_dir / "xgboost-model").save_raw("json"))
    document["version"] = [artifact.RUNTIME_VERSION[0] + 1, 0, 0]
    (tmp_path / "model.json").write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match="newer than this runtime"):
        build_handler(Settings(model_dir=tmp_path))


def test_ubj_writer_version_is_read(outcome_dir):
    assert artifact.writer_version((outcome_dir / "xgboost-model").read_bytes()) == artifact.RUNTIME_VERSION


@pytest.mark.parametrize("contents, message", [
    (None, "does not exist"), ({}, "no XGBoost model file"), ({"xgboost-model": b"garbage"}, "cannot load|not a booster"),
])
def test_unservable_directories(tmp_path, contents, message):
    model_dir = tmp_path / "model"
    if contents is not None:
        model_dir.mkdir()
        for name, data in contents.items():
            (model_dir / name).write_bytes(data)
    with pytest.raises(ModelLoadError, match=message):
        build_handler(Settings(model_dir=model_dir))


def test_metadata_must_match_the_model(tmp_path, outcome_dir):
    shutil.copy(outcome_dir / "xgboost-model", tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps({"feature_names": ["a", "b"]}))
    with pytest.raises(ModelLoadError, match="2 feature names"):
        build_handler(Settings(model_dir=tmp_path))


def test_selectable_outputs_binary(risk_dir):
    keys = ("predicted_label", "probability", "probabilities", "labels", "raw_score")
    handler = build_handler(Settings(model_dir=risk_dir, family=XGBoostSettings(inference_output=keys)))
    rows = np.random.default_rng(2).normal(size=(6, 4))
    p = booster(risk_dir).inplace_predict(rows).astype(np.float64)
    records = serve_rows(handler, rows, accept=codecs.JSON)
    for record, prob in zip(records, p):
        assert list(record) == list(keys)
        assert record["predicted_label"] == ("high" if prob > 0.5 else "low")
        assert record["probability"] == prob and record["raw_score"] == prob
        assert record["probabilities"] == [1 - prob, prob]
        assert record["labels"] == ["low", "high"]
    assert codecs.NPY not in handler.encoders


def test_selectable_outputs_multiclass(treatment_dir):
    handler = build_handler(Settings(model_dir=treatment_dir,
                                     family=XGBoostSettings(inference_output=("predicted_label", "probabilities"))))
    rows = np.random.default_rng(2).normal(size=(6, 4))
    p = booster(treatment_dir).inplace_predict(rows)
    records = serve_rows(handler, rows, accept=codecs.JSON)
    assert [r["predicted_label"] for r in records] == p.argmax(axis=1).tolist()
    assert [r["probabilities"] for r in records] == p.astype(np.float64).tolist()


def test_selectable_key_invalid_for_the_objective_fails_at_start(outcome_dir):
    with pytest.raises(ModelLoadError, match="not available for objective reg:squarederror"):
        build_handler(Settings(model_dir=outcome_dir, family=XGBoostSettings(inference_output=("probability",))))


def test_contributions_by_feature_name_with_bias_and_top_k(risk_dir, handler):
    rows = np.random.default_rng(3).normal(size=(3, 4))
    expected = booster(risk_dir).predict(xgb.DMatrix(rows), pred_contribs=True)
    records = serve_rows(handler, rows, accept=codecs.JSON, attributes={"contributions": "true"})
    for record, contribs in zip(records, expected):
        assert list(record["contributions"]) == FEATURES + ["bias"]
        assert list(record["contributions"].values()) == contribs.astype(np.float64).tolist()
    top = serve_rows(handler, rows, accept=codecs.JSON, attributes={"contributions": "true", "top_k": "2"})
    largest = np.argsort(-np.abs(expected[0, :-1]))[:2]
    assert list(top[0]["contributions"]) == [FEATURES[i] for i in largest] + ["bias"]
    np.testing.assert_array_equal(serve_rows(handler, rows, attributes={"contributions": "1"}), expected)


def test_contributions_requested_in_json_and_bad_top_k(handler):
    request = Request(content_type=codecs.JSON, accept=codecs.JSON)
    document = {"instances": [[1, 2, 3, 4]], "contributions": True, "top_k": 1}
    (record,) = handler.predict_fn(document, handler.model, request)
    assert len(record["contributions"]) == 2
    with pytest.raises(BadRequest, match="top_k"):
        handler.predict_fn({**document, "top_k": 0}, handler.model, request)


def test_multiclass_contributions_are_per_class(treatment_dir):
    handler = build_handler(Settings(model_dir=treatment_dir))
    (record,) = serve_rows(handler, np.ones((1, 4)), accept=codecs.JSON, attributes={"contributions": "true"})
    assert list(record["contributions"]) == ["0", "1", "2"]
    assert list(record["contributions"]["0"]) == FEATURES + ["bias"]


def test_libsvm_one_based_setting(risk_dir):
    handler = build_handler(Settings(model_dir=risk_dir, family=XGBoostSettings(libsvm_one_based=True)))
    request = Request(content_type=codecs.LIBSVM, accept=codecs.JSON)
    data = handler.input_fn(b"1 1:50 2:27.5 3:130 4:6.1\n", request)
    assert data.shape == (1, 4) and data[0, 0] == 50


def test_handler_takes_settings_not_environment(risk_dir):
    handler = XGBoostHandler(Settings(model_dir=risk_dir))
    assert not handler.ready
    handler.load(risk_dir)
    assert handler.ready and handler.describe()["objective"] == "binary:logistic"


class CountingHandler(XGBoostHandler):
    """Records, for each prediction, whether the handler was already ready (what /ping answers)."""

    def __init__(self, settings):
        super().__init__(settings)
        self.predictions: list[bool] = []

    def predict_fn(self, data, model, request):
        self.predictions.append(self.ready)
        return super().predict_fn(data, model, request)


def test_the_warm_up_runs_one_prediction_through_the_hooks_before_ping_answers_200(risk_dir):
    settings = Settings(model_dir=risk_dir)
    handler = CountingHandler(settings)
    client = create_app(handler, settings).test_client()
    assert client.get("/ping").status_code == 503
    handler.load(risk_dir)
    assert handler.predictions == [False]  # one prediction, while /ping still answered 503
    assert client.get("/ping").status_code == 200


def test_a_failing_warm_up_is_a_load_error_that_says_so(risk_dir):
    class Failing(XGBoostHandler):
        def output_fn(self, output, request):
            raise ValueError("no encoder for this output")

    handler = Failing(Settings(model_dir=risk_dir))
    with pytest.raises(ModelLoadError, match="failed its warm-up prediction: ValueError: no encoder for this output"):
        handler.load(risk_dir)
    assert not handler.ready
