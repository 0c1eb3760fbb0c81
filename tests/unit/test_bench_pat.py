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
