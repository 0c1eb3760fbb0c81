"""The PAT serving path on a CUDA device: fp16 autocast against the CPU float32 forward pass, pinned staging,
warm-up, batching and the float32 rerun. Runs only where torch sees a GPU (the CPU variant of these paths is
tested in test_pat_handler.py)."""

from __future__ import annotations


import numpy as np
import orjson
import pytest
import torch

from models.pat.artifact import load_artifact
from models.pat.runner import BatchKey, BatchRunner
from models.pat.settings import PatSettings
from serve import codecs
from serve.handler import Request
from serve.loading import build_handler
from serve.settings import Settings
from tests.pat_models import TASKS, WEEK, at_once, build_artifact, forward, weeks

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none"),
]

FP16_TOLERANCE = 1e-2  # fp16 autocast on the GPU vs float32 on the CPU, embeddings of magnitude ~1


@pytest.fixture(scope="module", params=["PAT-S", "PAT-L"])
def model_dir(request, tmp_path_factory):
    return build_artifact(tmp_path_factory.mktemp("pat") / request.param, variant=request.param)


@pytest.fixture(scope="module")
def handler(model_dir):
    family = PatSettings(device="cuda", precision="fp16", max_batch_size=16, batch_wait_ms=20.0)
    handler = build_handler(Settings(handler="pat", model_dir=model_dir, family=family))
    yield handler
    handler.close()


def predict(handler, activity, outputs=("embedding", "scores")):
    body = orjson.dumps({"instances": [row.tolist() for row in activity], "outputs": list(outputs)})
    request = Request(content_type=codecs.JSON, accept=codecs.JSON)
    records = handler.predict_fn(handler.input_fn(body, request), handler.model, request)
    return orjson.loads(handler.output_fn(records, request))["predictions"]


def test_loads_on_the_gpu_with_fp16_autocast_and_warms_up_the_largest_batch(handler):
    facts = handler.describe()
    assert facts["device"] == "cuda" and facts["precision"] == "fp16"
    runner = handler.model.runner
    assert runner._host is not None and runner._host.is_pinned()
    assert runner._host.numel() >= 16 * WEEK
    assert next(handler.model.artifact.encoder.parameters()).is_cuda


def test_gpu_outputs_are_close_to_the_cpu_float32_forward_pass(handler, model_dir):
    activity = weeks(5, seed=31)
    predictions = predict(handler, activity, outputs=("embedding", "scores", "saliency"))
    expected = forward(model_dir, activity)
    np.testing.assert_allclose([p["embedding"] for p in predictions], expected["embedding"], rtol=0,
                               atol=FP16_TOLERANCE)
    np.testing.assert_allclose([[p["scores"][t] for t in TASKS] for p in predictions], expected["scores"], rtol=0,
                               atol=FP16_TOLERANCE)
    np.testing.assert_allclose([p["saliency"] for p in predictions], expected["saliency"], rtol=0, atol=1e-4)


def test_the_pinned_buffer_is_reused_across_batches(handler):
    runner = handler.model.runner
    pointer = runner._host.data_ptr()
    predict(handler, weeks(3, seed=32))
    predict(handler, weeks(1, seed=33))
    assert runner._host.data_ptr() == pointer


def test_concurrent_requests_share_gpu_batches(handler, model_dir):
    activity = weeks(16, seed=34)
    expected = forward(model_dir, activity)["embedding"]
    before = handler.model.batcher.stats.batches
    embeddings = at_once(lambda i: predict(handler, activity[i:i + 1], outputs=("embedding",))[0]["embedding"], 16)
    np.testing.assert_allclose(embeddings, expected, rtol=0, atol=FP16_TOLERANCE)
    assert handler.model.batcher.stats.batches - before < 16


def test_an_fp16_overflow_on_the_gpu_is_run_again_in_float32(model_dir):
    runner = BatchRunner(load_artifact(model_dir), torch.device("cuda"), "fp16")
    x = np.full((2, WEEK), 1e6, dtype=np.float32)
    got = runner(BatchKey(WEEK, saliency=False), [x])
    assert runner.fp32_reruns == 1 and np.isfinite(got["embedding"]).all()


def test_cpu_setting_keeps_the_model_off_the_gpu(model_dir):
    handler = build_handler(Settings(handler="pat", model_dir=model_dir, family=PatSettings(device="cpu")))
    try:
        assert handler.describe()["device"] == "cpu" and handler.describe()["precision"] == "fp32"
        np.testing.assert_allclose(predict(handler, weeks(1, seed=35))[0]["embedding"],
                                   forward(model_dir, weeks(1, seed=35))["embedding"][0], rtol=0, atol=1e-5)
    finally:
        handler.close()


def test_a_request_s_metrics_tell_the_device_memory_in_use(handler):
    body = orjson.dumps({"instances": [{"activity": row.tolist()} for row in weeks(2)]})
    request = Request(content_type=codecs.JSON, accept=codecs.JSON)
    handler.predict_fn(handler.input_fn(body, request), handler.model, request)
    assert request.metrics["DeviceMemoryBytes"] >= torch.cuda.memory_allocated() > 0
    assert request.metrics["BatchSize"] >= 2 and request.metrics["QueueWait"] >= 0
