import shutil
import textwrap

import numpy as np
import pytest
import xgboost as xgb

from models.xgboost.settings import XGBoostSettings
from serve import codecs
from serve.errors import BadRequest, ModelLoadError
from serve.handler import Request
from serve.loading import build_handler
from serve.settings import Settings
from tests.conftest import load_booster


def with_script(tmp_path, source_dir, source, name="inference.py"):
    model_dir = tmp_path / "model"
    shutil.copytree(source_dir, model_dir)
    (model_dir / "code").mkdir()
    (model_dir / "code" / name).write_text(textwrap.dedent(source))
    return model_dir


def test_user_hooks_replace_only_what_they_define(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, """
        import numpy as np
        from helper import scale

        def input_fn(body, content_type):
            assert content_type.startswith("text/plain")
            return np.array([[float(v) * scale for v in body.decode().split()]])

        def output_fn(prediction, accept):
            return ("score=%r" % float(prediction[0])).encode(), "text/plain"
    """)
    (model_dir / "code" / "helper.py").write_text("scale = 2.0\n")
    handler = build_handler(Settings(model_dir=model_dir))
    request = Request(content_type="text/plain", accept="text/plain", content_type_header="text/plain; charset=utf-8")
    data = handler.input_fn(b"1 2 3 4", request)
    output = handler.output_fn(handler.predict_fn(data, handler.model, request), request)
    expected = load_booster(outcome_dir / "xgboost-model").inplace_predict(np.array([[2.0, 4, 6, 8]]))
    assert output == (f"score={float(expected[0])!r}".encode(), "text/plain")
    assert handler.decoders == {"*/*": None} and handler.encoders == {"*/*": None}


def test_model_fn_and_transform_fn(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, """
        import json, pathlib
        import numpy as np
        import xgboost as xgb

        def model_fn(model_dir):
            return xgb.Booster(model_file=bytearray(pathlib.Path(model_dir, "xgboost-model").read_bytes()))

        def transform_fn(model, body, content_type, accept):
            rows = np.array(json.loads(body))
            return json.dumps({"contribs": model.predict(xgb.DMatrix(rows), pred_contribs=True).tolist()}), accept
    """)
    handler = build_handler(Settings(model_dir=model_dir))
    request = Request(content_type="application/json", accept="application/json")
    body, accept = handler.predict_fn(handler.input_fn(b"[[1, 2, 3, 4]]", request), handler.model, request)
    assert accept == "application/json" and len(__import__("json").loads(body)["contribs"][0]) == 5


def test_default_predict_fn_serves_a_booster_from_model_fn(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, """
        import pathlib, xgboost as xgb
        def model_fn(model_dir):
            return xgb.Booster(model_file=bytearray(pathlib.Path(model_dir, "xgboost-model").read_bytes()))
    """)
    handler = build_handler(Settings(model_dir=model_dir))
    request = Request(content_type=codecs.CSV, accept=codecs.CSV)
    data = handler.input_fn(b"1,2,3,4", request)
    assert handler.output_fn(handler.predict_fn(data, handler.model, request), request).count(b"\n") == 1


def test_sagemaker_program_names_the_script(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, "def output_fn(p, accept):\n    return b'custom'\n", name="serve_me.py")
    handler = build_handler(Settings(model_dir=model_dir, program="serve_me.py"))
    assert handler.output_fn(np.zeros(1), Request(content_type=codecs.CSV, accept=codecs.CSV)) == b"custom"
    with pytest.raises(ModelLoadError, match="does not exist"):
        build_handler(Settings(model_dir=model_dir, program="missing.py"))


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('boom')\n", "failed to import"),
    ("def model_fn(d):\n    raise IOError('no file')\n", "model_fn failed"),
    ("def transform_fn(m, b, c, a):\n    pass\ndef input_fn(b, c):\n    pass\n", "transform_fn together"),
])
def test_broken_scripts_fail_at_load(tmp_path, outcome_dir, source, message):
    with pytest.raises(ModelLoadError, match=message):
        build_handler(Settings(model_dir=with_script(tmp_path, outcome_dir, source)))


def test_user_input_fn_errors_are_bad_requests_without_details(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, "def input_fn(body, ct):\n    raise ValueError(body.decode())\n")
    handler = build_handler(Settings(model_dir=model_dir))
    with pytest.raises(BadRequest) as error:
        handler.input_fn(b"patient-secret", Request(content_type=codecs.CSV, accept=codecs.CSV))
    assert "patient-secret" not in error.value.message


def test_the_handlers_warm_up_runs_whenever_the_handler_predicts(tmp_path, outcome_dir, monkeypatch):
    from models.xgboost.handler import XGBoostHandler

    warmed = []
    monkeypatch.setattr(XGBoostHandler, "warm_up", lambda self: warmed.append(self.model))
    handler = build_handler(Settings(model_dir=with_script(tmp_path, outcome_dir, "def output_fn(p, a):\n    return b''\n")))
    assert warmed == [handler.model]
    own = with_script(tmp_path / "own", outcome_dir, "import pathlib, xgboost as xgb\n"
                      "def model_fn(d):\n"
                      "    return xgb.Booster(model_file=bytearray(pathlib.Path(d, 'xgboost-model').read_bytes()))\n")
    build_handler(Settings(model_dir=own))
    assert len(warmed) == 2
    user_predicts = with_script(tmp_path / "predicts", outcome_dir, "def predict_fn(data, model):\n    return data\n")
    build_handler(Settings(model_dir=user_predicts))
    assert len(warmed) == 2


def test_a_booster_from_model_fn_is_adopted_once_at_load(tmp_path, outcome_dir):
    from models.xgboost.artifact import XGBoostModel

    model_dir = with_script(tmp_path, outcome_dir, """
        import pathlib, xgboost as xgb
        def model_fn(model_dir):
            return xgb.Booster(model_file=bytearray(pathlib.Path(model_dir, "xgboost-model").read_bytes()))
    """)
    handler = build_handler(Settings(model_dir=model_dir))
    assert isinstance(handler.model, XGBoostModel) and handler.inner.fast
    raw = with_script(tmp_path / "raw", outcome_dir, """
        import pathlib, xgboost as xgb
        def model_fn(model_dir):
            return xgb.Booster(model_file=bytearray(pathlib.Path(model_dir, "xgboost-model").read_bytes()))
        def predict_fn(data, model):
            return model.inplace_predict(data)
    """)
    assert isinstance(build_handler(Settings(model_dir=raw)).model, xgb.Booster)
    wrong = with_script(tmp_path / "wrong", outcome_dir, "def model_fn(d):\n    return {'not': 'a booster'}\n")
    with pytest.raises(ModelLoadError, match="model_fn returned a dict"):
        build_handler(Settings(model_dir=wrong))


def test_a_user_output_fn_gets_json_when_the_client_names_no_type(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, "def output_fn(p, accept):\n    return accept.encode()\n")
    assert build_handler(Settings(model_dir=model_dir)).accept_default() == codecs.JSON


def test_an_unanswerable_default_accept_stops_start_up(outcome_dir, risk_dir):
    with pytest.raises(ModelLoadError, match="SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT=text/html"):
        build_handler(Settings(model_dir=outcome_dir, default_accept="text/html"))
    with pytest.raises(ModelLoadError, match="application/x-npy"):
        build_handler(Settings(model_dir=risk_dir, default_accept="application/x-npy",
                               family=XGBoostSettings(inference_output=("labels",))))


def test_a_failing_input_fn_echoes_no_header_value(tmp_path, outcome_dir):
    model_dir = with_script(tmp_path, outcome_dir, """
        def input_fn(body, content_type):
            raise ValueError("cannot parse")
    """)
    handler = build_handler(Settings(model_dir=model_dir))
    request = Request(content_type="application/zq-marker", accept="text/csv",
                      content_type_header="application/zq-marker; p=zq-marker")
    with pytest.raises(BadRequest) as refused:
        handler.input_fn(b"1,2", request)
    assert "could not decode" in str(refused.value) and "zq-marker" not in str(refused.value)


def test_a_user_predict_fn_gets_the_decoded_document_and_the_handlers_own_the_fast_form(tmp_path, outcome_dir):
    """Without an input_fn in inference.py, a user's predict_fn gets the JSON document as decoded (null as None, as
    AWS's toolkit gives it), never the float64 rows the XGBoost handler reads for its own predict_fn."""
    body, request = b'{"instances": [[1.0, null, 3.0, 4.0]]}', Request(content_type=codecs.JSON, accept=codecs.JSON)
    user = build_handler(Settings(model_dir=with_script(tmp_path / "user", outcome_dir, """
        def predict_fn(data, model):
            return [len(data["instances"][0])]
    """)))
    assert user.input_fn(body, request) == {"instances": [[1.0, None, 3.0, 4.0]]}
    assert user.predict_fn(user.input_fn(body, request), user.model, request) == [4]
    own = build_handler(Settings(model_dir=with_script(tmp_path / "own", outcome_dir, """
        import pathlib, xgboost as xgb

        def model_fn(model_dir):
            return xgb.Booster(model_file=bytearray(pathlib.Path(model_dir, "xgboost-model").read_bytes()))
    """)))
    rows = own.input_fn(body, request)
    assert isinstance(rows, np.ndarray) and np.isnan(rows[0, 1])
