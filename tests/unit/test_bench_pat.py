"""bench/pat.py's precision part (the GPU benchmark), run end to end on the CPU at a tiny size so it stays working
where no GPU is lent."""

from __future__ import annotations

import json
import time
from pathlib import Path

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
        # attention counted: ~0.72 of PAT-S's ~0.92 GFLOP a week (without it, ~0.2)
        assert run["flops_per_week"] > 0.8e9 and run["share_of_matmul_rate"] > 0
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
                          "speedup_max": 1.8, "roof_ms": 20.0, "attainable_speedup": 2.55}}}},
             "goals": [{"goal": "PAT-S batch 1: ours >= 1.5x Keras's speed", "value": 1.7, "met": True,
                        "attainable": 2.55}]}
    report.print_keras(keras)
    printed = capsys.readouterr().out
    assert "from float64 math: ours 3.00e-05, Keras 5.00e-05" in printed and "1.70x [1.60-1.80]" in printed
    assert "roof 20.0 ms at the fp32 GEMM rate, at most 2.55x attainable" in printed
    assert "[    MET] PAT-S batch 1: ours >= 1.5x Keras's speed: 1.7 (attainable 2.55x)" in printed
    plan = suite.Plan.quick()
    assert suite.estimate_s(plan, [], False, keras=True) > suite.estimate_s(plan, [], False)


def test_the_cpu_study_puts_fp32_and_bf16_side_by_side_with_ratios_fidelity_flags_and_costs(tmp_path, monkeypatch):
    from bench import machine

    monkeypatch.setattr(pat, "cpu_info", lambda: machine.cpu_info("processor : 0\nmodel name : Xeon\nflags : avx2\n"))
    out = tmp_path / "pat-cpu.json"
    assert pat.main(["--only", "cpu", "--variants", "S", "--batches", "1", "8", "--seconds", "0.05", "--repeats", "2",
                     "--no-threads", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    precision = report["precision"]
    assert precision["cpu"]["model"] == "Xeon" and precision["cpu"]["amx_bf16"] is False
    assert [(row["variant"], row["batch"]) for row in precision["runs"]] == [("PAT-S", 1), ("PAT-S", 8)]
    for row in precision["runs"]:
        assert row["repeats"] == 2 and row["fp32_p50_ms"] > 0 and row["bf16_p50_ms"] > 0
        assert row["speedup_min"] <= row["speedup_median"] <= row["speedup_max"]
    fidelity = precision["fidelity"]["PAT-S"]
    assert 0 < fidelity["bf16_vs_fp32"]["embedding"] <= 1e-2 and fidelity["bf16_vs_fp32"]["scores"] <= 5e-3
    assert fidelity["embedding_vs_float64"]["fp32"] < 1e-5 < fidelity["embedding_vs_float64"]["bf16"]
    assert precision["goals_note"] == "no AMX: figures reported, goal not applicable"
    assert all(goal["met"] is None for goal in precision["goals"]) and report["threads"] is None
    rows = {(row["instance_type"], row["precision"]): row for row in report["cost"]["PAT-S"]}
    batch8 = precision["runs"][1]
    assert rows["ml.m7i.xlarge", "bf16"]["weeks_per_s"] == round(batch8["bf16_weeks_per_s"] / report["vcpus"] * 4, 2)
    assert rows["ml.c7i.large", "fp32"]["single_week_p50_ms"] == precision["runs"][0]["fp32_p50_ms"]
    assert rows["ml.g4dn.xlarge", "fp16"]["weeks_per_s"] is None


def test_the_bf16_goal_is_judged_only_on_a_cpu_with_amx(monkeypatch):
    from bench import machine

    monkeypatch.setattr(pat, "cpu_info", lambda: machine.cpu_info("model name : Xeon\nflags : amx_bf16 avx512_bf16\n"))
    result = pat.bench_cpu_precision(["PAT-S"], [1], 1, 0.01, 1)
    goal = result["goals"][0]
    assert result["goals_note"] is None and goal["goal"] == "PAT-S batch 1: bf16 >= 2x fp32"
    assert goal["met"] == (goal["value"] >= 2.0)


def test_the_cost_table_scales_by_vcpus_prices_each_row_and_leaves_the_gpu_unmeasured():
    import pytest

    from bench import cost

    measured = {"bf16": {"batch": 8, "weeks_per_s": 100.0, "single_week_p50_ms": 2.5},
                "fp32": {"batch": 8, "weeks_per_s": 40.0, "single_week_p50_ms": 5.0}}
    prices = {"ml.m7i.large": 0.2, "ml.c7i.xlarge": 0.36}
    rows = {(r["instance_type"], r["precision"]): r for r in cost.cost_rows(measured, 2, prices=prices)}
    assert rows["ml.m7i.large", "bf16"]["weeks_per_s"] == 100.0
    assert rows["ml.m7i.large", "bf16"]["cost_per_1000_weeks"] == round(0.2 / (100.0 * 3600) * 1000, 5)
    assert rows["ml.c7i.xlarge", "fp32"]["weeks_per_s"] == 80.0
    assert rows["ml.m7i.xlarge", "fp32"]["price_per_hour"] is None and rows["ml.m7i.xlarge", "fp32"][
        "cost_per_1000_weeks"] is None  # no price found: blank, never guessed
    assert rows["ml.g4dn.xlarge", "fp16"]["basis"] == "unmeasured: no CUDA run"
    table = cost.markdown(list(rows.values()), "PAT-L")
    assert "| ml.g4dn.xlarge | fp16 | unmeasured |" in table and cost.PRICE_REGION in table
    gpu = {"batch": 64, "weeks_per_s": 900.0, "single_week_p50_ms": 4.0, "device": "Tesla T4"}
    [gpu_row] = [r for r in cost.cost_rows(measured, 2, gpu=gpu, prices=prices) if r["precision"] == "fp16"]
    assert gpu_row["weeks_per_s"] == 900.0 and gpu_row["basis"] == "measured on Tesla T4"
    cost.check_instance_types(["ml.m7i.large", "ml.g4dn.xlarge"])
    with pytest.raises(ValueError, match="ml.m7i.huge"):
        cost.check_instance_types(["ml.m7i.large", "ml.m7i.huge"])


def test_the_thread_study_picks_the_eligible_setting_best_in_its_worst_condition_and_its_worker_answers():
    from bench import pat_threads

    def condition(passive, spin, active):
        rows = {}
        for policy, speedup in (("PASSIVE", passive), ("SPIN-THEN-SLEEP", spin), ("ACTIVE", active)):
            rows[f"{policy} 2"] = {"omp_wait_policy": policy, "torch_threads": 2,
                                   "vs_keras_all_cores": {"median": speedup}}
        return {"configurations": rows}

    def study(s_busy_spin):
        return {"variants": {
            "PAT-S": {"conditions": {"idle": condition(1.4, 2.2, 2.3), "busy": condition(1.1, s_busy_spin, 1.9)}},
            "PAT-L": {"conditions": {"idle": condition(1.05, 2.0, 2.4), "busy": condition(1.2, 1.3, 1.5)}}}}

    # ACTIVE is best everywhere but keeps idle cores busy: never the default. SPIN-THEN-SLEEP ties with PASSIVE's
    # worst case (within TIE) and is faster on average; clearly worse in its worst case, it loses.
    assert pat_threads.winner(study(1.02)) == {
        "omp_wait_policy": "SPIN-THEN-SLEEP", "environment": {}, "torch_threads": 2,
        "worst_condition_vs_keras": 1.02, "mean_vs_keras": 1.63, "at_least_keras": True}
    assert pat_threads.winner(study(0.9))["omp_wait_policy"] == "PASSIVE"
    worker = pat_threads.OursWorker("ACTIVE")
    try:
        assert worker.process.args[-1] == "worker"
        answer = worker.ask(threads=1, budget_s=0.0, min_runs=2, variant="PAT-S")
        assert answer["omp_wait_policy"] == "ACTIVE"  # set before OpenMP started, in the worker's own process
        assert len(answer["seconds"]) == 2 and all(s > 0 for s in answer["seconds"])
    finally:
        worker.close()
    def state(pid, wanted):
        for _ in range(200):
            current = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
            if (current == "T") == wanted:
                return True
            time.sleep(0.01)
        return False

    stopped = pat_threads.OursWorker("PASSIVE")
    try:
        with pat_threads.alone(worker, [worker, stopped]):  # the other worker makes no progress meanwhile
            assert state(stopped.process.pid, True)
        assert state(stopped.process.pid, False)
    finally:
        stopped.close()
    spinning = pat_threads.OursWorker("SPIN-THEN-SLEEP")
    try:
        answer = spinning.ask(threads=1, budget_s=0.0, min_runs=1, variant="PAT-S")
        assert (answer["omp_wait_policy"], answer["gomp_spincount"]) == (None, None)  # libgomp's own default
    finally:
        spinning.close()


def test_the_encoder_flop_count_includes_cpu_attention_and_matches_the_spec():
    from bench.keras_peer import encoder_flops
    from bench.pat import artifact

    encoder = artifact("PAT-S").encoder.eval()
    spec, batch = encoder.spec, 1
    n, d, inner = 10080 // spec.patch_size, spec.embed_dim, spec.num_heads * spec.embed_dim
    patches = 2 * batch * n * spec.patch_size * d
    # the queries and the heads' output map (attention folds Keras' four projections into two), and the feed-forward
    projections = 2 * batch * n * d * inner + 2 * batch * n * inner * d + 2 * 2 * batch * n * d * spec.ffn_dim
    attention = 4 * batch * spec.num_heads * n * n * d  # Q K^T and the weights times V
    analytic = patches + spec.num_layers * (projections + attention)
    assert abs(encoder_flops(encoder, batch) - analytic) <= 0.02 * analytic


def _keras_results(gemm: dict) -> dict:
    return {"gemm": gemm, "variants": {"PAT-M": {
        "max_abs_diff_tokens": 5e-5, "max_abs_diff_embedding": 1e-6, "flops_per_week": 4_000_000_000,
        "batches": {"1": {"ours_p50_ms": 40.0, "keras_p50_ms": 60.0, "speedup_median": 1.5},
                    "8": {"ours_p50_ms": 250.0, "keras_p50_ms": 353.0, "speedup_median": 1.412}}}}}


def test_each_keras_row_gets_its_roof_at_the_higher_fp32_gemm_rate_and_each_speed_goal_what_is_attainable():
    from bench.keras_peer import add_roofs, goals

    results = _keras_results({"size": 2048, "gflops_before": 150.0, "gflops_after": 180.0})
    add_roofs(results)
    assert results["gemm"]["gflops"] == 180.0
    one, eight = (results["variants"]["PAT-M"]["batches"][b] for b in ("1", "8"))
    assert eight["flops"] == 32_000_000_000 and abs(eight["roof_ms"] - 177.78) < 0.01  # 32 GFLOP at 180 GFLOP/s
    assert abs(eight["ours_share_of_roof"] - 177.78 / 250) < 1e-4
    assert abs(eight["attainable_speedup"] - 353 / 177.78) < 1e-3
    assert abs(one["roof_ms"] - 22.22) < 0.01 and abs(one["attainable_speedup"] - 2.7) < 1e-3
    speed = {goal["goal"]: goal for goal in goals(results) if "speed" in goal["goal"]}
    batch1 = speed["PAT-M batch 1: ours >= 1.5x Keras's speed"]
    batch8 = speed["PAT-M batch 8: ours >= 2.0x Keras's speed"]
    assert batch1["met"] and batch1["attainable"] == one["attainable_speedup"] and "note" not in batch1
    assert not batch8["met"] and batch8["attainable"] == eight["attainable_speedup"]
    assert batch8["note"] == "beyond this CPU's fp32 GEMM rate"
    # A run stopped before its last GEMM measurement uses the first.
    partial = _keras_results({"size": 2048, "gflops_before": 150.0})
    add_roofs(partial)
    assert abs(partial["variants"]["PAT-M"]["batches"]["8"]["roof_ms"] - 213.33) < 0.01


def test_the_keras_peer_run_prints_each_speed_goal_with_what_is_attainable(monkeypatch, capsys, tmp_path):
    from bench import keras_peer

    reported = [{"goal": "PAT-M batch 8: ours >= 2.0x Keras's speed", "value": 1.41, "met": False,
                 "attainable": 1.99, "note": "beyond this CPU's fp32 GEMM rate"},
                {"goal": "PAT-M tokens and embedding within 1e-4 of Keras", "value": 5e-5, "met": True}]
    monkeypatch.setattr(keras_peer, "measure", lambda *args: {"goals": reported})
    assert pat.main(["--peer", "keras", "--variants", "M", "--out", str(tmp_path / "k.json")]) == 0
    printed = capsys.readouterr().out
    assert ("[NOT MET] PAT-M batch 8: ours >= 2.0x Keras's speed: 1.41 (attainable 1.99x; beyond this CPU's fp32 "
            "GEMM rate)") in printed
    assert "[    MET] PAT-M tokens and embedding within 1e-4 of Keras: 5e-05\n" in printed


def test_the_keras_comparison_runs_in_a_process_of_its_own_with_the_images_wait_policy():
    """libgomp reads OMP_WAIT_POLICY once, when torch loads: `python -m bench` runs the comparison as `python -m
    bench.pat --peer keras` in a process started with the policy the image sets, with the plan's repeats and budget."""
    import sys

    from bench import __main__ as bench_main
    from bench import keras_peer, suite
    from serve.settings import apply_process_defaults

    image: dict = {}
    apply_process_defaults(image)
    env = keras_peer.with_serving_wait_policy({"OMP_WAIT_POLICY": "ACTIVE", "PATH": "/bin"})
    assert env == {"OMP_WAIT_POLICY": image["OMP_WAIT_POLICY"], "PATH": "/bin"}
    quick = bench_main.keras_command(suite.Plan.quick(), Path("/tmp/k.json"))
    assert quick == [sys.executable, "-m", "bench.pat", "--peer", "keras", "--variants", "S", "--batches", "1", "8",
                     "--quick", "--repeats", "1", "--out", "/tmp/k.json"]
    full = bench_main.keras_command(suite.Plan(), Path("/tmp/k.json"))
    assert full[6:9] == ["S", "M", "L"] and "--quick" not in full and full[full.index("--repeats") + 1] == "3"
