"""PatHandler on real (randomly initialized) PAT artifacts: served outputs against an in-process forward pass,
request formats, the missing-minute rule, output selection, bad inputs, concurrency, shutdown, devices."""

from __future__ import annotations

import io
import threading
from datetime import datetime

import numpy as np
import orjson
import pytest
import torch

from models.pat.actigraphy import MetricOptions, compute_metrics
from models.pat.artifact import load_artifact
from models.pat.runner import BatchKey, BatchRunner, choose_device
from models.pat.settings import PatSettings
from serve import codecs
from serve.errors import BadRequest, InsufficientMemory, ModelLoadError, NotReady, Unrecoverable
from serve.handler import Request
from serve.loading import build_handler
from serve.settings import Settings
from tests.pat_models import TASKS, WEEK, FaultyPatHandler, at_once, build_artifact, cuda_error, forward, weeks

TOLERANCE = 1e-5  # CPU float32, served vs in-process
SECRET = 123456.789  # a value that must never appear in an error message


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("pat") / "model")


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    """No heads and no standardization: inputs are already z-scores, any multiple of the patch size."""
    return build_artifact(tmp_path_factory.mktemp("pat") / "plain", heads=False, standardization=False, seed=3)


def make_handler(model_dir, **settings):
    return build_handler(Settings(handler="pat", model_dir=model_dir, family=PatSettings(**settings)))


@pytest.fixture(scope="module")
def handler(model_dir):
    handler = make_handler(model_dir, batch_wait_ms=5.0)
    yield handler
    handler.close()


@pytest.fixture(scope="module")
def plain(plain_dir):
    handler = make_handler(plain_dir)
    yield handler
    handler.close()


def invoke(handler, body, content_type=codecs.JSON, accept=codecs.JSON, **attributes):
    if not isinstance(body, bytes):
        body = orjson.dumps(body)
    request = Request(content_type=content_type, accept=accept, attributes=attributes)
    output = handler.output_fn(handler.predict_fn(handler.input_fn(body, request), handler.model, request), request)
    return np.load(io.BytesIO(output)) if accept == codecs.NPY else orjson.loads(output)["predictions"]


def as_json(activity: np.ndarray) -> list:
    return [None if np.isnan(v) else v for v in activity.tolist()]


def csv_body(rows: np.ndarray) -> bytes:
    return "\n".join(",".join("" if np.isnan(v) else repr(v) for v in row) for row in rows.tolist()).encode()


def npy_body(rows: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, rows)
    return buffer.getvalue()


def column(predictions, name):
    return np.array([p[name] for p in predictions])


def test_embeddings_and_scores_match_the_in_process_forward_pass(handler, model_dir):
    activity = weeks(3)
    body = {"instances": [{"activity": row.tolist(), "id": f"p{i}"} for i, row in enumerate(activity)]}
    predictions = invoke(handler, body)
    expected = forward(model_dir, activity)
    assert [p["id"] for p in predictions] == ["p0", "p1", "p2"]
    assert all(len(p["embedding"]) == 96 and p["missing_minutes"] == 0 for p in predictions)
    np.testing.assert_allclose(column(predictions, "embedding"), expected["embedding"], rtol=0, atol=TOLERANCE)
    scores = np.array([[p["scores"][task] for task in TASKS] for p in predictions])
    np.testing.assert_allclose(scores, expected["scores"], rtol=0, atol=TOLERANCE)
    for prediction in predictions:
        assert prediction["above_threshold"] == {task: prediction["scores"][task] >= TASKS[task]["threshold"]
                                                 for task in TASKS}
        assert set(prediction) == {"id", "embedding", "scores", "above_threshold", "missing_minutes", "precision"}


def test_csv_npy_and_json_give_the_same_embeddings(handler, model_dir):
    activity = weeks(2, seed=5)
    from_json = column(invoke(handler, {"instances": [row.tolist() for row in activity]}), "embedding")
    from_csv = column(invoke(handler, csv_body(activity), codecs.CSV), "embedding")
    from_npy = column(invoke(handler, npy_body(activity.astype(np.float32)), codecs.NPY), "embedding")
    np.testing.assert_allclose(from_json, forward(model_dir, activity)["embedding"], rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(from_csv, from_json)
    np.testing.assert_array_equal(from_npy, from_json)


def test_npy_accept_gives_float32_embeddings_alone(handler, model_dir):
    activity = weeks(2, seed=6)
    embeddings = invoke(handler, npy_body(activity), codecs.NPY, accept=codecs.NPY)
    assert embeddings.dtype == np.float32 and embeddings.shape == (2, 96)
    np.testing.assert_allclose(embeddings, forward(model_dir, activity)["embedding"], rtol=0, atol=TOLERANCE)
    with pytest.raises(BadRequest, match="embeddings alone"):
        invoke(handler, npy_body(activity), codecs.NPY, accept=codecs.NPY, outputs="embedding+scores")


def test_a_missing_minute_counts_as_that_minutes_mean_and_is_reported(handler, model_dir):
    activity = weeks(1, seed=7)
    gaps = np.zeros(WEEK, dtype=bool)
    gaps[[0, 500, 501, 9000]] = True
    with_gaps = np.where(gaps, np.nan, activity)
    with np.load(model_dir / "standardization.npz") as stats:
        filled = np.where(gaps, stats["mean"], activity)
    by_json = invoke(handler, {"instances": [{"activity": as_json(with_gaps[0])}]})[0]
    by_csv = invoke(handler, csv_body(with_gaps), codecs.CSV)[0]
    assert by_json["missing_minutes"] == by_csv["missing_minutes"] == 4
    np.testing.assert_array_equal(by_csv["embedding"], by_json["embedding"])
    np.testing.assert_allclose(by_json["embedding"], forward(model_dir, filled)["embedding"][0], rtol=0,
                               atol=TOLERANCE)
    assert not np.allclose(by_json["embedding"], forward(model_dir, np.where(gaps, 0.0, activity))["embedding"][0],
                           rtol=0, atol=TOLERANCE)


def test_saliency_is_the_per_minute_attention_map(handler, model_dir):
    activity = weeks(2, seed=8)
    predictions = invoke(handler, {"instances": [r.tolist() for r in activity], "outputs": ["saliency"]})
    assert all(set(p) == {"saliency", "missing_minutes", "precision"} for p in predictions)
    saliency = column(predictions, "saliency")
    assert saliency.shape == (2, WEEK)
    np.testing.assert_allclose(saliency, forward(model_dir, activity)["saliency"], rtol=0, atol=TOLERANCE)


def test_metrics_are_those_of_the_actigraphy_module(handler):
    activity = weeks(2, seed=9)
    options = {"binarize": False, "nonwear": "troiano"}
    body = {"instances": [{"activity": row.tolist(), "start": "2024-03-04T07:30", "id": i}
                          for i, row in enumerate(activity)],
            "outputs": ["metrics", "embedding"], "metric_options": options}
    predictions = invoke(handler, body)
    for row, prediction in zip(activity, predictions):
        expected = compute_metrics(row, datetime(2024, 3, 4, 7, 30), MetricOptions.from_mapping(options))
        assert prediction["metrics"] == orjson.loads(orjson.dumps(expected))
        assert set(prediction) == {"id", "embedding", "metrics", "missing_minutes", "precision"}


def test_metrics_alone_take_any_recording_of_at_least_a_day(handler):
    day_and_a_minute = weeks(1, minutes=1441, seed=10)[0]
    day_and_a_minute[100] = np.nan
    prediction = invoke(handler, {"instances": [{"activity": as_json(day_and_a_minute)}], "outputs": ["metrics"]})[0]
    assert set(prediction) == {"metrics"}
    assert prediction["metrics"]["recorded_minutes"] == 1441 and prediction["metrics"]["missing_minutes"] == 1
    with pytest.raises(BadRequest, match="at least 24 h"):
        invoke(handler, {"instances": [weeks(1, minutes=1439)[0].tolist()], "outputs": ["metrics"]})
    with pytest.raises(BadRequest, match="10080-minute"):
        invoke(handler, {"instances": [day_and_a_minute.tolist()], "outputs": ["metrics", "embedding"]})


def test_custom_attributes_choose_outputs_and_start_for_csv(handler):
    activity = weeks(1, seed=11)
    prediction = invoke(handler, csv_body(activity), codecs.CSV, outputs="embedding+metrics",
                        start="2024-03-04T12:00")[0]
    assert set(prediction) == {"embedding", "metrics", "missing_minutes", "precision"}
    assert prediction["metrics"] == orjson.loads(orjson.dumps(compute_metrics(activity[0], datetime(2024, 3, 4, 12))))


def test_without_heads_or_standardization(plain, plain_dir):
    """Pre-standardized inputs: negatives allowed, any multiple of the patch size, lengths mixed in one request."""
    rng = np.random.default_rng(12)
    two_days, one_week = rng.normal(size=2880), rng.normal(size=WEEK)
    predictions = invoke(plain, {"instances": [two_days.tolist(), one_week.tolist(), two_days[::-1].tolist()]})
    assert all(set(p) == {"embedding", "missing_minutes", "precision"} for p in predictions)
    np.testing.assert_allclose(predictions[0]["embedding"], forward(plain_dir, two_days[None])["embedding"][0],
                               rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(predictions[1]["embedding"], forward(plain_dir, one_week[None])["embedding"][0],
                               rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(predictions[2]["embedding"],
                               forward(plain_dir, two_days[::-1][None])["embedding"][0], rtol=0, atol=TOLERANCE)
    with pytest.raises(BadRequest, match="no task heads"):
        invoke(plain, {"instances": [two_days.tolist()], "outputs": ["scores"]})
    with pytest.raises(BadRequest, match="not a multiple of the patch size 18"):
        invoke(plain, {"instances": [two_days[:-1].tolist()]})
    with pytest.raises(BadRequest, match="at most 40320"):
        invoke(plain, {"instances": [np.zeros(40320 + 18).tolist()]})
    with pytest.raises(BadRequest, match="must not be negative"):  # metrics need counts
        invoke(plain, {"instances": [two_days.tolist()], "outputs": ["metrics"]})


def week_with(value: float, at: int = 10) -> list:
    week = weeks(1, seed=13)[0]
    week[at] = value
    return week.tolist()


BAD_JSON = [
    ([SECRET], 'object with an "instances" list'),
    ({"instances": []}, "instances is empty"),
    ({"instances": [week_with(SECRET)], "output": ["embedding"]}, "unknown keys"),
    ({"instances": [{"activity": week_with(SECRET), "note": "x"}]}, "instance 1 has unknown keys"),
    ({"instances": [{"id": "a"}]}, "instance 1 has no activity"),
    ({"instances": [week_with(SECRET), {"activity": [str(SECRET)] * WEEK}]}, "instance 2: activity must hold only"),
    ({"instances": [{"activity": [[SECRET]] * WEEK}]}, "activity must hold only numbers"),
    ({"instances": [{"activity": [True] * WEEK}]}, "activity must hold only numbers"),
    ({"instances": [{"activity": SECRET}]}, "activity must be a non-empty list"),
    ({"instances": [week_with(SECRET)[:-1]]}, "has 10079 minutes"),
    ({"instances": [week_with(-SECRET)]}, "counts must not be negative"),
    ({"instances": [[None] * WEEK]}, "every minute is missing"),
    ({"instances": [week_with(1e300)]}, "too large"),
    ({"instances": [week_with(SECRET)], "outputs": ["embeddings"]}, "unknown name"),
    ({"instances": [week_with(SECRET)], "outputs": []}, "outputs is empty"),
    ({"instances": [week_with(SECRET)], "outputs": "embedding"}, "outputs must be a list"),
    ({"instances": [{"activity": week_with(SECRET), "start": "yesterday"}]}, "ISO 8601"),
    ({"instances": [{"activity": week_with(SECRET), "id": {"mrn": SECRET}}]}, "id must be"),
    ({"instances": [week_with(SECRET)], "outputs": ["metrics"], "metric_options": {"threshold": -1}},
     "metric_options: option threshold"),
    ({"instances": [week_with(SECRET)], "metric_options": {"bogus": 1}}, "metric_options: unknown"),
]


@pytest.mark.parametrize("body, message", BAD_JSON, ids=[message for _, message in BAD_JSON])
def test_bad_json_is_a_400_that_says_what_was_wrong_but_not_the_values(handler, body, message):
    with pytest.raises(BadRequest, match=message) as raised:
        invoke(handler, body)
    assert "123456" not in raised.value.message and "1e+300" not in raised.value.message


def npy_week_with(value, dtype=np.float64, shape=(1, WEEK)):
    rows = np.ones(shape, dtype=dtype)
    rows.flat[7] = value
    return npy_body(rows)


BAD_ROWS = [
    (csv_body(np.array([week_with(SECRET)])).replace(b"1", b"nan", 1), codecs.CSV, "NaN or infinity"),
    (csv_body(np.array([week_with(SECRET)])) + b",inf", codecs.CSV, "NaN or infinity"),
    (csv_body(np.array([week_with(SECRET)])).replace(b",", b",x", 1), codecs.CSV, "not a number"),
    (csv_body(np.array([week_with(SECRET)])) + b"\n1,2", codecs.CSV, "columns"),
    (npy_week_with(SECRET, shape=(WEEK,)), codecs.NPY, "must be 2-D"),
    (npy_week_with(np.nan), codecs.NPY, "NPY activity holds NaN"),
    (npy_week_with(np.inf), codecs.NPY, "holds infinity"),
    (npy_week_with(True, dtype=bool), codecs.NPY, "must hold numbers"),
    (npy_body(np.ones((1, 0))), codecs.NPY, "non-empty"),
]


@pytest.mark.parametrize("body, content_type, message", BAD_ROWS, ids=[m for _, _, m in BAD_ROWS])
def test_bad_csv_and_npy_are_400s(handler, body, content_type, message):
    with pytest.raises(BadRequest, match=message) as raised:
        invoke(handler, body, content_type)
    assert "123456" not in raised.value.message


def test_bad_requests_leave_the_handler_serving(handler, model_dir):
    for body, _ in BAD_JSON[:5]:
        with pytest.raises(BadRequest):
            invoke(handler, body)
    activity = weeks(1, seed=14)
    np.testing.assert_allclose(invoke(handler, {"instances": [activity[0].tolist()]})[0]["embedding"],
                               forward(model_dir, activity)["embedding"][0], rtol=0, atol=TOLERANCE)


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(model_dir):
    handler = make_handler(model_dir, batch_wait_ms=200.0, max_batch_size=16)
    try:
        activity = weeks(16, seed=15)
        expected = forward(model_dir, activity)["embedding"]
        before = handler.model.batcher.stats.batches
        predictions = at_once(lambda i: invoke(handler, {"instances": [{"activity": activity[i].tolist(), "id": i}]})[0],
                              16)
        assert [p["id"] for p in predictions] == list(range(16))
        np.testing.assert_allclose(column(predictions, "embedding"), expected, rtol=0, atol=TOLERANCE)
        assert handler.model.batcher.stats.batches - before < 16
    finally:
        handler.close()


def test_close_stops_the_batcher_and_later_requests_get_503(model_dir):
    handler = make_handler(model_dir)
    invoke(handler, {"instances": [weeks(1)[0].tolist()]})
    handler.close()
    assert handler.model.batcher.closed
    with pytest.raises(NotReady):
        invoke(handler, {"instances": [weeks(1)[0].tolist()]})
    assert invoke(handler, {"instances": [weeks(1)[0].tolist()], "outputs": ["metrics"]})  # needs no model


def test_describe_and_settings(model_dir):
    previous = torch.get_num_threads()
    handler = make_handler(model_dir, torch_threads=1, max_batch_size=8, batch_wait_ms=3.5)
    try:
        facts = handler.describe()
        assert facts["variant"] == "PAT-S" and facts["tasks"] == list(TASKS)
        assert facts["device"] == "cpu" and facts["precision"] == "fp32"
        assert facts["torch_threads"] == torch.get_num_threads() == 1
        assert facts["max_batch_size"] == 8 and facts["batch_wait_ms"] == 3.5
    finally:
        handler.close()
        torch.set_num_threads(previous)


def test_a_bad_artifact_fails_the_load_with_a_clear_message(tmp_path):
    with pytest.raises(ModelLoadError, match="no encoder weights"):
        make_handler(tmp_path)


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where no CUDA device exists")
def test_cuda_requested_without_a_device_is_a_load_error(model_dir):
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        make_handler(model_dir, device="cuda")


def test_the_fp16_autocast_path_runs_on_cpu_and_stays_close_to_float32(model_dir):
    """The CUDA code path (fp16 autocast, float32 pooling and heads) exercised on the CPU."""
    x = (weeks(4, seed=16) - 100.0) / 150.0
    parts = [x[:1].astype(np.float32), x[1:].astype(np.float32)]
    half = BatchRunner(load_artifact(model_dir), torch.device("cpu"), precision="fp16")
    full = BatchRunner(load_artifact(model_dir), torch.device("cpu"))
    key = BatchKey(WEEK, saliency=True)
    got, want = half(key, parts), full(key, parts)
    assert got["embedding"].dtype == got["scores"].dtype == got["saliency"].dtype == np.float32
    for name in ("embedding", "scores"):
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=5e-3)
    np.testing.assert_allclose(got["saliency"], want["saliency"], rtol=0, atol=1e-5)
    assert half.fp32_reruns == 0


def test_an_fp16_overflow_is_run_again_in_float32(model_dir):
    x = np.full((2, WEEK), 1e6, dtype=np.float32)  # beyond float16's range once projected
    half = BatchRunner(load_artifact(model_dir), torch.device("cpu"), precision="fp16")
    got = half(BatchKey(WEEK, saliency=False), [x])
    want = BatchRunner(load_artifact(model_dir), torch.device("cpu"))(BatchKey(WEEK, saliency=False), [x])
    assert half.fp32_reruns == 1 and np.isfinite(got["embedding"]).all()
    np.testing.assert_array_equal(got["embedding"], want["embedding"])


def test_a_user_model_fn_returning_the_artifact_is_served(model_dir, tmp_path):
    user_dir = tmp_path / "model"
    build_artifact(user_dir)
    (user_dir / "code").mkdir()
    (user_dir / "code" / "inference.py").write_text(
        "from pathlib import Path\n"
        "from models.pat.artifact import load_artifact\n\n"
        "def model_fn(model_dir):\n"
        "    return load_artifact(Path(model_dir))\n")
    handler = make_handler(user_dir)
    try:
        activity = weeks(1, seed=17)
        prediction = invoke(handler, {"instances": [activity[0].tolist()]})[0]
        np.testing.assert_allclose(prediction["embedding"], forward(user_dir, activity)["embedding"][0], rtol=0,
                                   atol=TOLERANCE)
    finally:
        handler.close()
        assert handler.inner.as_model(handler.model).batcher.closed


def test_loading_warms_up_the_week_shape_and_the_saliency_pass(model_dir, monkeypatch):
    calls = []
    original = BatchRunner.__call__

    def recording(self, key, parts):
        calls.append((key, [part.shape for part in parts]))
        return original(self, key, parts)

    monkeypatch.setattr(BatchRunner, "__call__", recording)
    handler = make_handler(model_dir)
    try:
        assert calls == [(BatchKey(WEEK, False), [(1, WEEK)]), (BatchKey(WEEK, True), [(1, WEEK)])]
    finally:
        handler.close()


def test_the_warm_up_runs_on_the_batchers_thread_where_requests_run(model_dir, monkeypatch):
    threads = []
    original = BatchRunner.__call__

    def recording(self, key, parts):
        threads.append(threading.current_thread().name)
        return original(self, key, parts)

    monkeypatch.setattr(BatchRunner, "__call__", recording)
    handler = make_handler(model_dir)
    try:
        assert threads == ["pat-batcher", "pat-batcher"] and handler.model.batcher.stats.batches == 2
    finally:
        handler.close()


def test_a_failing_warm_up_fails_the_load_and_releases_the_batcher(model_dir):
    class BrokenOnLoad(FaultyPatHandler):
        def serving(self, artifact):
            model = super().serving(artifact)
            model.runner.fault = lambda rows: RuntimeError("weights do not fit this network")
            return model

    handler = BrokenOnLoad(Settings(handler="pat", model_dir=model_dir))
    with pytest.raises(ModelLoadError, match="failed its warm-up prediction: RuntimeError: weights do not fit"):
        handler.load(model_dir)
    assert not handler.ready and handler.model.batcher.closed


# --- faults of the device, injected on the CPU (tests.pat_models.FaultyRunner) ------------------------------------


def raised(call) -> BaseException:
    try:
        call()
    except BaseException as error:  # the error itself is the value wanted
        return error
    raise AssertionError("expected an exception")


OUT_OF_MEMORY = {  # what torch raises when an allocation fails, by allocator
    "cuda-caching-allocator": lambda: torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 14.58 GiB of which 1.02 GiB "
        "is free."),
    "cuda-runtime": lambda: cuda_error(2, "out of memory"),
    "cpu-allocator": lambda: raised(lambda: torch.empty(1 << 62, dtype=torch.uint8)),  # the real one
    "python": lambda: MemoryError(),
}
UNRECOVERABLE = {
    "illegal-memory-access": lambda: cuda_error(700, "an illegal memory access was encountered"),
    "device-side-assert": lambda: cuda_error(710, "device-side assert triggered"),
    "launch-failure-as-runtime-error": lambda: RuntimeError("CUDA error: unspecified launch failure\nCompile with "
                                                            "`TORCH_USE_CUDA_DSA` to enable device-side assertions."),
}


@pytest.fixture(scope="module")
def faulty(model_dir):
    handler = FaultyPatHandler(Settings(handler="pat", model_dir=model_dir, family=PatSettings(batch_wait_ms=5.0)))
    handler.load(model_dir)
    yield handler
    handler.close()


@pytest.fixture
def runner(faulty):
    yield faulty.model.runner
    faulty.model.runner.fault = lambda rows: None


@pytest.mark.parametrize("kind", OUT_OF_MEMORY)
def test_a_batch_out_of_memory_runs_in_halves_with_the_same_results(faulty, runner, model_dir, kind):
    runner.fault = lambda rows: OUT_OF_MEMORY[kind]() if rows > 1 else None
    splits = faulty.model.batcher.stats.split_batches
    activity = weeks(3, seed=30)
    predictions = invoke(faulty, {"instances": [row.tolist() for row in activity]})
    np.testing.assert_allclose(column(predictions, "embedding"), forward(model_dir, activity)["embedding"], rtol=0,
                               atol=TOLERANCE)
    assert faulty.model.batcher.stats.split_batches - splits == 2  # 3 rows -> 1 + 2 -> 1 + 1


@pytest.mark.parametrize("kind", OUT_OF_MEMORY)
def test_a_request_that_does_not_fit_one_week_at_a_time_is_a_507_and_the_next_is_served(faulty, runner, model_dir,
                                                                                         kind):
    runner.fault = lambda rows: OUT_OF_MEMORY[kind]()
    secret_week = weeks(2, seed=31)
    secret_week[:, 100] = SECRET
    with pytest.raises(InsufficientMemory) as error:
        invoke(faulty, {"instances": [row.tolist() for row in secret_week]})
    assert error.value.status == 507 and "did not fit" in error.value.message
    assert "123456" not in error.value.message
    runner.fault = lambda rows: None
    activity = weeks(1, seed=32)
    np.testing.assert_allclose(invoke(faulty, {"instances": [activity[0].tolist()]})[0]["embedding"],
                               forward(model_dir, activity)["embedding"][0], rtol=0, atol=TOLERANCE)
    assert faulty.ready


@pytest.mark.parametrize("kind", UNRECOVERABLE)
def test_an_unusable_device_fails_this_and_every_later_request_without_running_again(model_dir, kind):
    handler = FaultyPatHandler(Settings(handler="pat", model_dir=model_dir))
    handler.load(model_dir)
    try:
        handler.model.runner.fault = lambda rows: UNRECOVERABLE[kind]()
        with pytest.raises(Unrecoverable, match=r"device failed \(CUDA error 7\d\d: ") as error:
            invoke(handler, {"instances": [weeks(1)[0].tolist()]})
        assert error.value.status == 503
        handler.model.runner.fault = lambda rows: None
        tried = handler.model.runner.forwards
        with pytest.raises(Unrecoverable):
            invoke(handler, {"instances": [weeks(1)[0].tolist()]})
        assert handler.model.runner.forwards == tried  # the device is not touched again
    finally:
        handler.close()


def test_other_cuda_errors_fail_their_request_and_leave_the_device_serving(faulty, runner, model_dir):
    runner.fault = lambda rows: cuda_error(1, "invalid argument")
    with pytest.raises(torch.AcceleratorError):  # a bug: the app answers 500 with a request id
        invoke(faulty, {"instances": [weeks(1)[0].tolist()]})
    runner.fault = lambda rows: None
    activity = weeks(1, seed=33)
    np.testing.assert_allclose(invoke(faulty, {"instances": [activity[0].tolist()]})[0]["embedding"],
                               forward(model_dir, activity)["embedding"][0], rtol=0, atol=TOLERANCE)
