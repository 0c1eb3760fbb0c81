"""bench/pat.py's precision part (the GPU benchmark), run end to end on the CPU at a tiny size so it stays working
where no GPU is lent."""

from __future__ import annotations

import json

from bench import pat


def test_the_precision_benchmark_runs_end_to_end_and_writes_its_figures(tmp_path):
    out = tmp_path / "pat.json"
    assert pat.main(["--device", "cpu", "--only", "precision", "--variants", "S", "--batches", "1",
                     "--seconds", "0.05", "--matmul-size", "64", "--out", str(out)]) == 0
    report = json.loads(out.read_text())["precision_study"]
    assert report["fp16_matmul_gflops"] > 0 and report["matmul_size"] == 64
    runs = {(run["precision"], run["batch"]): run for run in report["runs"]}
    assert sorted(runs) == [("float32", 1), ("fp16", 1)]
    for run in runs.values():
        assert run["variant"] == "PAT-S" and run["runs"] >= 3 and run["weeks_per_s"] > 0 and run["p50_ms"] > 0
        assert run["flops_per_week"] > 1e7 and run["share_of_matmul_rate"] > 0
    # fp16 embeddings differ from float32 ones, a little (embeddings are of magnitude ~1).
    assert 0 < report["fp16_vs_float32_embedding_max_abs_diff"]["PAT-S"] < 0.1
    goals = report["goals"]
    assert goals["PAT-L fp16 batch 64 share of matmul rate >= 0.40"] is None and goals["met"] is None
    assert goals["PAT-S fp16 batch 1 p50 ms <= 5"] == runs[("fp16", 1)]["p50_ms"]


def test_the_float64_reference_of_the_keras_comparison_is_the_same_encoder_in_exact_arithmetic():
    import numpy as np
    import torch

    from bench.keras_peer import exact_tokens
    from bench.pat import artifact

    encoder = artifact("PAT-S").encoder
    weeks = np.random.default_rng(3).normal(size=(2, 10080)).astype(np.float32)
    with torch.inference_mode():
        ours = encoder.encode(torch.from_numpy(weeks)).tokens.numpy()
    exact = exact_tokens(encoder, weeks)
    assert exact.dtype == np.float64 and exact.shape == ours.shape
    assert 0 < np.max(np.abs(ours - exact)) < 1e-4  # float32 rounding, and nothing else
    assert next(encoder.parameters()).dtype == torch.float32  # the encoder itself was left as it was


def test_the_report_prints_the_keras_comparison_and_its_goals(capsys):
    from bench import report, suite

    keras = {"threads": 2, "repeats": 1, "versions": {"tensorflow": "2.18.1"}, "variants": {"PAT-S": {
        "max_abs_diff_tokens": 6.5e-5, "max_abs_diff_embedding": 7e-7,
        "tokens_vs_float64": {"ours": 3e-5, "keras": 5e-5},
        "batches": {"1": {"ours_p50_ms": 30.0, "keras_p50_ms": 51.0, "speedup_median": 1.7, "speedup_min": 1.6,
                          "speedup_max": 1.8}}}},
             "goals": [{"goal": "PAT-S batch 1: ours >= 1.5x Keras's speed", "value": 1.7, "met": True}]}
    report.print_keras(keras)
    printed = capsys.readouterr().out
    assert "from float64 math: ours 3.00e-05, Keras 5.00e-05" in printed and "1.70x [1.60-1.80]" in printed
    assert "[    MET] PAT-S batch 1" in printed
    plan = suite.Plan.quick()
    assert suite.estimate_s(plan, [], False, keras=True) > suite.estimate_s(plan, [], False)
