"""SERVE_PRECISION: which values each device takes (refused at start-up with exit code 2 otherwise), and the fidelity
of bf16 (CPU, on any CPU: autocast emulates it where the CPU lacks native bf16) and fp16 (CUDA) against fp32, on the
example artifact (PAT-S, task heads trained on synthetic weeks): embeddings, task scores, the example task's AUC, and
the actigraphy metrics, which do not go through the network."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import orjson
import pytest
import torch

from models.pat import examples
from models.pat.settings import PatSettings, allowed_precisions, cpu_flags, read_precision
from serve import codecs
from serve.errors import BadRequest, ModelLoadError
from serve.handler import Request
from serve.loading import build_handler
from serve.settings import Settings, SettingsError
from tests.pat_models import WEEK, weeks

EMBEDDING_TOLERANCE = 1e-2  # max abs difference from fp32
SCORE_TOLERANCE = 5e-3
AUC_TOLERANCE = 0.002
on_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; torch sees none")
REDUCED = [pytest.param(("cpu", "bf16"), id="bf16"),
           pytest.param(("cuda", "fp16"), id="fp16", marks=[pytest.mark.gpu, on_cuda])]


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("example") / "pat"
    examples.build_example(out, subjects=160, steps=150)
    return out


@pytest.fixture(scope="module")
def served(example_dir):
    handlers = {}

    def handler(device: str, precision: str):
        if (device, precision) not in handlers:
            family = PatSettings(device=device, precision=precision, max_batch_size=16)
            handlers[device, precision] = build_handler(Settings(handler="pat", model_dir=example_dir, family=family))
        return handlers[device, precision]

    yield handler
    for h in handlers.values():
        h.close()


def invoke(handler, body: bytes, content_type=codecs.JSON, accept=codecs.JSON):
    request = Request(content_type=content_type, accept=accept)
    output = handler.output_fn(handler.predict_fn(handler.input_fn(body, request), handler.model, request), request)
    return orjson.loads(output)["predictions"] if accept == codecs.JSON else np.load(io.BytesIO(output))


def predictions(handler, activity: np.ndarray, outputs=("embedding", "scores", "metrics")) -> list[dict]:
    return invoke(handler, orjson.dumps({"instances": [row.tolist() for row in activity], "outputs": list(outputs)}))


def column(records: list[dict], name: str) -> np.ndarray:
    return np.array([list(r[name].values()) if isinstance(r[name], dict) else r[name] for r in records])


@pytest.mark.parametrize("reduced", REDUCED)
def test_reduced_precision_stays_close_to_fp32_and_says_so(served, reduced):
    device, precision = reduced
    activity = weeks(6, seed=41)
    want, got = predictions(served(device, "fp32"), activity), predictions(served(device, precision), activity)
    assert {r["precision"] for r in want} == {"fp32"} and {r["precision"] for r in got} == {precision}
    assert served(device, precision).describe()["precision"] == precision
    assert np.abs(column(got, "embedding") - column(want, "embedding")).max() <= EMBEDDING_TOLERANCE
    assert np.abs(column(got, "scores") - column(want, "scores")).max() <= SCORE_TOLERANCE
    assert [r["metrics"] for r in got] == [r["metrics"] for r in want]  # not through the network: identical
    rows = io.BytesIO()
    np.save(rows, activity)  # the NPY answer (embeddings alone) is float32 in every precision
    assert invoke(served(device, precision), rows.getvalue(), codecs.NPY, codecs.NPY).dtype == np.float32


@pytest.mark.parametrize("reduced", REDUCED)
def test_reduced_precision_changes_the_example_tasks_auc_by_at_most_0_002(served, reduced):
    device, precision = reduced
    rng = np.random.default_rng(7)  # fresh synthetic subjects, not those the heads were trained on
    activity, traits = examples.synthetic_weeks(96, rng)
    labels = examples.synthetic_labels(traits, rng)
    scores = {p: column(predictions(served(device, p), activity, ("scores",)), "scores") for p in ("fp32", precision)}
    for index, task in enumerate(examples.TASKS):
        reference = examples.auc(scores["fp32"][:, index], labels[task])
        assert abs(examples.auc(scores[precision][:, index], labels[task]) - reference) <= AUC_TOLERANCE, task


def finite_but_huge_week() -> list:
    week = weeks(1, seed=3)[0]
    week[100] = 1e30  # finite in float32, and after standardization, but beyond what the network can carry
    return week.tolist()


@pytest.mark.parametrize("reduced", [pytest.param(("cpu", "fp32"), id="fp32"), *REDUCED])
@pytest.mark.parametrize("body, content_type", [
    (lambda: orjson.dumps({"instances": [finite_but_huge_week()]}), codecs.JSON),
    (lambda: orjson.dumps({"instances": [[1e300] * WEEK]}), codecs.JSON),
    (lambda: b",".join([b"1"] * (WEEK - 1) + [b"inf"]), codecs.CSV),
    (lambda: npy_with(np.inf), codecs.NPY),
    (lambda: npy_with(np.nan), codecs.NPY),
], ids=["huge-json", "overflow-json", "inf-csv", "inf-npy", "nan-npy"])
def test_a_non_finite_week_is_a_400_in_every_precision(served, reduced, body, content_type):
    handler = served(*reduced)
    with pytest.raises(BadRequest) as raised:
        invoke(handler, body(), content_type)
    assert "1e+30" not in raised.value.message and "inf" not in raised.value.message.replace("infinity", "")
    assert len(predictions(handler, weeks(1, seed=5), ("embedding",))) == 1  # and the handler keeps serving


def npy_with(value) -> bytes:
    rows = np.ones((1, WEEK))
    rows[0, 7] = value
    out = io.BytesIO()
    np.save(out, rows)
    return out.getvalue()


AMX_CPU = "processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t\t: fpu\n"
ZEN4_CPU = "processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n"
OLD_CPU = "processor\t: 0\nflags\t\t: fpu avx2\n"


def test_cpu_flags_are_the_first_processors():
    assert cpu_flags(AMX_CPU) == {"fpu", "avx512f", "amx_bf16", "amx_tile"}
    assert allowed_precisions("cpu", cpu_flags(AMX_CPU), nvidia_driver=True) == ("fp32", "bf16")
    assert allowed_precisions("auto", cpu_flags(ZEN4_CPU), nvidia_driver=False) == ("fp32", "bf16")
    assert allowed_precisions("auto", cpu_flags(OLD_CPU), nvidia_driver=False) == ("fp32",)
    assert allowed_precisions("auto", cpu_flags(OLD_CPU), nvidia_driver=True) == ("fp32", "fp16")
    assert allowed_precisions("cuda", cpu_flags(AMX_CPU), nvidia_driver=False) == ("fp32", "fp16")


@pytest.mark.parametrize("value, device, cpu, driver, allowed", [
    ("fp8", "cpu", AMX_CPU, False, "fp32, bf16"),
    ("fp8", "cuda", OLD_CPU, True, "fp32, fp16"),
    ("fp16", "cpu", AMX_CPU, False, "fp32, bf16"),
    ("fp16", "auto", ZEN4_CPU, False, "fp32, bf16"),
    ("bf16", "auto", OLD_CPU, False, "fp32 on this CPU (no amx_bf16"),
    ("bf16", "cuda", AMX_CPU, True, "fp32, fp16 on CUDA"),
])
def test_a_precision_the_device_cannot_run_well_is_refused_naming_the_allowed_values(value, device, cpu, driver,
                                                                                       allowed):
    with pytest.raises(SettingsError, match=f"SERVE_PRECISION must be one of {re.escape(allowed)}.*got '{value}'"):
        read_precision({"SERVE_PRECISION": value}, device, cpu_flags(cpu), driver)


def test_the_default_is_fp32_and_the_allowed_values_are_taken():
    assert read_precision({}, "auto", set(), False) == "fp32"
    assert read_precision({"SERVE_PRECISION": " BF16 "}, "cpu", cpu_flags(AMX_CPU), False) == "bf16"
    assert read_precision({"SERVE_PRECISION": "fp16"}, "cuda", set(), True) == "fp16"
    assert PatSettings.from_env({}).precision == "fp32"


def test_the_model_refuses_a_precision_its_chosen_device_cannot_serve(example_dir):
    """SERVE_DEVICE=auto with an NVIDIA driver but no CUDA device torch can use: fp16 on the CPU is a load error."""
    with pytest.raises(ModelLoadError, match="SERVE_PRECISION=fp16 cannot run on cpu: use one of fp32, bf16"):
        build_handler(Settings(handler="pat", model_dir=example_dir, family=PatSettings(device="cpu",
                                                                                         precision="fp16")))


def test_serve_exits_2_with_one_line_for_fp8(tmp_path):
    env = {**os.environ, "SERVE_HANDLER": "pat", "SERVE_PRECISION": "fp8", "SERVE_DEVICE": "cpu",
           "SM_MODEL_DIR": str(tmp_path), "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-m", "serve"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "SERVE_PRECISION must be one of fp32" in lines[0] and "got 'fp8'" in lines[0]
