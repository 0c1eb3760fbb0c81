"""Benchmark: PAT serving on the device it runs on. Prints the figures and writes build/bench/pat.json.

1. The model's batch step (models/pat/runner.py BatchRunner: staging, encoder, pooling, four task heads, copy
   back) for PAT-S, M and L at batch 1, 8 and 64: weeks/s and p50/p99 latency per batch. fp16 autocast on CUDA,
   float32 on CPU, on a thread of its own, as served. Randomly initialized weights (speed does not depend on
   their values).
2. The dynamic batcher: one-week requests through PatHandler (NPY in, embeddings out: decode, checks,
   standardization, batcher, encode) from one client one at a time, from 16 concurrent clients with batching
   off (SERVE_MAX_BATCH_SIZE=1), and from 16 concurrent clients with dynamic batching (the default settings).
3. CPU precision and threads (--only cpu; build/bench/pat-cpu.json): fp32 and bf16 autocast alternating for each
   variant at batch 1 and 8, speed-up median [min-max] over repeats, fidelity against fp32 and float64, the CPU's
   model and bf16 flags (the bf16 >= 2x goal applies only with AMX); the thread settings study (bench/pat_threads.py);
   and the cost table per instance type (bench/cost.py).
4. Precision (--only precision; for a GPU: `python -m bench.pat --device cuda --only precision`): the batch step
   in float32 and in fp16 autocast for each variant at batch 1, 8, 32 and 64, the device's own fp16 matmul rate
   (--matmul-size square matrices), the share of it PAT reaches (torch's FLOP counter for one week), and the
   largest |fp16 - fp32| embedding difference. Goals on a T4: PAT-L fp16 at batch 64 >= 40 % of the matmul rate,
   PAT-S batch-1 p50 <= 5 ms.

    python -m bench.pat [--quick] [--device auto|cpu|cuda] [--variants S M L] [--seconds 10] [--repeats 3]
                        [--only forward|batcher|precision|cpu] [--batches 1 8 64] [--matmul-size 8192]
    python -m bench.pat --peer keras [--variants S M L] [--repeats 3]   # vs the authors' Keras encoder (CPU):
                        fidelity and speed at batch 1 and 8, in build/bench/pat-keras.json (bench/keras_peer.py)

The scenarios of part 2 are interleaved `--repeats` times and each reports its median run. Each figure records
how many runs it rests on (p99 of a handful of runs is just their maximum) and, in `machine`, how busy other
processes kept the machine meanwhile: on a shared CPU, 2 torch threads slow down sharply when another process
takes a core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.machine import Window, cpu_info, matmul_flops_per_s
from models.pat.artifact import ArtifactConfig, PatArtifact, Standardization, save_artifact
from models.pat.network import PatEncoder, TaskHead, spec_for
from models.pat.runner import WEEK_MINUTES, BatchKey, BatchRunner, choose_device
from models.pat.settings import PatSettings
from serve import codecs
from serve.handler import Request
from serve.loading import build_handler
from serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench" / "pat.json"
CPU_OUT = OUT.with_name("pat-cpu.json")
LOAD_BATCH = 8  # the cost table's batch: what the dynamic batcher reaches under load, of the batches measured
TASKS = ("depression", "sleep_disorder", "benzodiazepine", "ssri")
CLIENTS = 16


def artifact(variant: str, seed: int = 0) -> PatArtifact:
    torch.manual_seed(seed)
    return PatArtifact(encoder=PatEncoder(spec_for(variant)).eval(), heads={t: TaskHead().eval() for t in TASKS},
                       config=ArtifactConfig(variant=variant), standardization=None)


def weeks(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.gamma(1.2, 120.0, (n, WEEK_MINUTES)) * (rng.random((n, WEEK_MINUTES)) > 0.2))


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "runs": len(ms)}


def time_batches(runner: BatchRunner, batch: int, budget_s: float, min_runs: int, max_runs: int) -> dict:
    x = ((weeks(batch) - 120.0) / 150.0).astype(np.float32)
    key = BatchKey(WEEK_MINUTES, saliency=False)
    runner(key, [x])  # this shape's first call (allocations, kernel choice)
    seconds: list[float] = []
    started = time.perf_counter()
    while len(seconds) < max_runs and (len(seconds) < min_runs or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        runner(key, [x])  # returns numpy arrays, so the device work is finished
        seconds.append(time.perf_counter() - t0)
    return {"batch": batch, "weeks_per_s": round(batch * len(seconds) / sum(seconds), 2), **percentiles(seconds)}


def bench_forward(device: torch.device, variants: list[str], batches: list[int], budget_s: float,
                  min_runs: int) -> list[dict]:
    rows = []
    for variant in variants:
        runner = BatchRunner(artifact(variant), device)
        for batch in batches:
            window = Window()
            row = {"variant": variant, **time_batches(runner, batch, budget_s, min_runs, max_runs=500)}
            rows.append({**row, "machine": window.close()})
            print(f"  {variant:6} batch {batch:3}: {row['weeks_per_s']:9.1f} weeks/s   p50 {row['p50_ms']:9.1f} ms"
                  f"   p99 {row['p99_ms']:9.1f} ms   ({row['runs']} runs)", flush=True)
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def flops_per_week(model: PatArtifact) -> int:
    """Floating-point operations of one week's encoder pass and heads, by torch's FLOP counter with attention counted
    analytically (bench.keras_peer.flop_counter)."""
    from bench.keras_peer import flop_counter

    x = torch.zeros(1, WEEK_MINUTES)
    with torch.inference_mode():
        model.encoder.embed(x)  # what is computed once from the weights (the attention's folded maps) is not counted
        with flop_counter() as counter:
            embedding = model.encoder.embed(x)
            for head in model.heads.values():
                head(embedding)
    return counter.get_total_flops()


def bench_precision(device: torch.device, variants: list[str], batches: list[int], budget_s: float,
                    min_runs: int, matmul_size: int) -> dict:
    """float32 and fp16 autocast per variant and batch; PAT's share of the measured fp16 matmul rate."""
    peak = matmul_flops_per_s(device, matmul_size, budget_s)
    print(f"  fp16 matmul {matmul_size}x{matmul_size}: {peak / 1e9:.1f} GFLOP/s", flush=True)
    rows, diffs = [], {}
    for variant in variants:
        model = artifact(variant)
        flops = flops_per_week(model)
        runners = {"float32": BatchRunner(model, device, "fp32"), "fp16": BatchRunner(model, device, "fp16")}
        x = ((weeks(8, seed=3) - 120.0) / 150.0).astype(np.float32)
        key = BatchKey(WEEK_MINUTES, saliency=False)
        diffs[variant] = float(np.abs(runners["fp16"](key, [x])["embedding"]
                                      - runners["float32"](key, [x])["embedding"]).max())
        for batch in batches:
            for precision, runner in runners.items():
                row = {"variant": variant, "precision": precision, "flops_per_week": flops,
                       **time_batches(runner, batch, budget_s, min_runs, max_runs=500)}
                row["share_of_matmul_rate"] = round(row["weeks_per_s"] * flops / peak, 4)
                rows.append(row)
                print(f"  {variant:6} {precision:7} batch {batch:3}: {row['weeks_per_s']:9.1f} weeks/s   "
                      f"p50 {row['p50_ms']:8.2f} ms   {100 * row['share_of_matmul_rate']:5.1f} % of matmul", flush=True)
        print(f"  {variant:6} max |fp16 - float32| embedding: {diffs[variant]:.2e}", flush=True)
        del runners
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def figure(variant: str, precision: str, batch: int, name: str):
        return next((row[name] for row in rows if (row["variant"], row["precision"], row["batch"]) ==
                     (variant, precision, batch)), None)

    large, small = figure("PAT-L", "fp16", 64, "share_of_matmul_rate"), figure("PAT-S", "fp16", 1, "p50_ms")
    return {"matmul_size": matmul_size, "fp16_matmul_gflops": round(peak / 1e9, 2), "runs": rows,
            "fp16_vs_float32_embedding_max_abs_diff": diffs,
            "goals": {"PAT-L fp16 batch 64 share of matmul rate >= 0.40": large,
                      "PAT-S fp16 batch 1 p50 ms <= 5": small,
                      "met": None if large is None or small is None else large >= 0.40 and small <= 5.0}}


def bench_cpu_precision(variants: list[str], batches: list[int], repeats: int, budget_s: float,
                        min_runs: int) -> dict:
    """fp32 and bf16 autocast side by side on the CPU: per variant and batch, the two alternate `repeats` times and
    the speed-up is the median [min-max] of per-repeat p50 ratios; fidelity against fp32 and against the same
    encoder in float64 (bench.keras_peer.exact_tokens). The bf16 goal applies only where the CPU has AMX."""
    from bench.keras_peer import exact_tokens

    cpu = cpu_info()
    key, device = BatchKey(WEEK_MINUTES, saliency=False), torch.device("cpu")
    x = ((weeks(2, seed=3) - 120.0) / 150.0).astype(np.float32)
    rows, fidelity, goals = [], {}, []
    for variant in variants:
        model = artifact(variant)
        runners = {precision: BatchRunner(model, device, precision) for precision in ("fp32", "bf16")}
        out = {precision: runner(key, [x]) for precision, runner in runners.items()}
        exact = exact_tokens(model.encoder, x).mean(axis=1)
        fidelity[variant] = {
            "bf16_vs_fp32": {name: float(np.abs(out["bf16"][name] - out["fp32"][name]).max())
                             for name in ("embedding", "scores")},
            "embedding_vs_float64": {p: float(np.abs(out[p]["embedding"] - exact).max()) for p in out}}
        f = fidelity[variant]
        print(f"  {variant:6} bf16 vs fp32: embedding {f['bf16_vs_fp32']['embedding']:.1e}, scores "
              f"{f['bf16_vs_fp32']['scores']:.1e}; embedding vs float64: fp32 {f['embedding_vs_float64']['fp32']:.1e}"
              f", bf16 {f['embedding_vs_float64']['bf16']:.1e}", flush=True)
        for batch in batches:
            runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
            for repeat in range(repeats):
                for precision in ("fp32", "bf16") if repeat % 2 == 0 else ("bf16", "fp32"):
                    runs[precision].append(time_batches(runners[precision], batch, budget_s, min_runs, 500))
            ratios = [a["p50_ms"] / b["p50_ms"] for a, b in zip(runs["fp32"], runs["bf16"])]
            row = {"variant": variant, "batch": batch, "repeats": repeats,
                   **{f"{p}_{name}": float(np.median([run[name] for run in runs[p]]))
                      for p in runs for name in ("p50_ms", "weeks_per_s")},
                   "speedup_median": round(float(np.median(ratios)), 3), "speedup_min": round(min(ratios), 3),
                   "speedup_max": round(max(ratios), 3)}
            rows.append(row)
            print(f"  {variant:6} batch {batch:2}: fp32 {row['fp32_p50_ms']:8.2f} ms   bf16 "
                  f"{row['bf16_p50_ms']:8.2f} ms   bf16 {row['speedup_median']:.2f}x [{row['speedup_min']:.2f}-{row['speedup_max']:.2f}]",
                  flush=True)
            goals.append({"goal": f"{variant} batch {batch}: bf16 >= 2x fp32", "value": row["speedup_median"],
                          "met": row["speedup_median"] >= 2.0 if cpu["amx_bf16"] else None})
    note = None if cpu["amx_bf16"] else "no AMX: figures reported, goal not applicable"
    if note:
        print(f"  {note}", flush=True)
    return {"cpu": cpu, "runs": rows, "fidelity": fidelity, "goals": goals, "goals_note": note}


def cost_inputs(rows: list[dict], variant: str, load_batch: int) -> dict:
    """Per precision: weeks/s at the batch the dynamic batcher reaches under load, and the single-week p50."""
    by_batch = {row["batch"]: row for row in rows if row["variant"] == variant}
    if load_batch not in by_batch or 1 not in by_batch:
        return {}
    return {p: {"batch": load_batch, "weeks_per_s": by_batch[load_batch][f"{p}_weeks_per_s"],
                "single_week_p50_ms": by_batch[1][f"{p}_p50_ms"]} for p in ("bf16", "fp32")}


def served_handler(model_dir: Path, device: str, max_batch_size: int, wait_ms: float):
    family = PatSettings(device=device, max_batch_size=max_batch_size, batch_wait_ms=wait_ms)
    settings = Settings(handler="pat", model_dir=model_dir, family=family)
    return build_handler(settings)


def drive(handler, bodies: list[bytes], clients: int, duration_s: float) -> dict:
    """Clients send one-week NPY requests back to back for duration_s; weeks/s and per-request latency."""
    request = Request(content_type=codecs.NPY, accept=codecs.NPY)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration_s

    def client(index: int) -> None:
        sent = index
        while time.perf_counter() < stop_at:
            body = bodies[sent % len(bodies)]
            t0 = time.perf_counter()
            handler.output_fn(handler.predict_fn(handler.input_fn(body, request), handler.model, request), request)
            with lock:
                latencies.append(time.perf_counter() - t0)
            sent += clients

    stats = handler.model.batcher.stats
    batches, rows = stats.batches, stats.rows
    window = Window()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    batches, rows = stats.batches - batches, stats.rows - rows
    return {"clients": clients, "weeks_per_s": round(len(latencies) / elapsed, 2), **percentiles(latencies),
            "mean_batch_rows": round(rows / batches, 2) if batches else 0.0, "machine": window.close()}


def bench_batcher(device: str, variant: str, duration_s: float, repeats: int) -> dict:
    """The three scenarios, interleaved `repeats` times; each reports its median run (by weeks/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        counts = weeks(256, seed=1)
        stats = Standardization.checked(counts.mean(axis=0), np.maximum(counts.std(axis=0), 1.0))
        model = artifact(variant)
        save_artifact(model_dir, model.encoder, model.heads, ArtifactConfig(variant=variant), stats)
        bodies = []
        for row in weeks(64, seed=2):
            buffer = io.BytesIO()
            np.save(buffer, row[None].astype(np.float32))
            bodies.append(buffer.getvalue())
        defaults = PatSettings()
        scenarios = {
            "one at a time": (1, 1, 0.0),
            f"{CLIENTS} clients, batching off": (CLIENTS, 1, 0.0),
            f"{CLIENTS} clients, dynamic batching": (CLIENTS, defaults.max_batch_size, defaults.batch_wait_ms),
        }
        handlers = {name: served_handler(model_dir, device, max_batch, wait_ms)
                    for name, (_, max_batch, wait_ms) in scenarios.items()}
        runs: dict[str, list[dict]] = {name: [] for name in scenarios}
        try:
            for name, (clients, _, _) in scenarios.items():
                drive(handlers[name], bodies[:4], clients, min(2.0, duration_s))  # warm
            for _ in range(repeats):
                for name, (clients, max_batch, wait_ms) in scenarios.items():
                    runs[name].append({"max_batch_size": max_batch, "batch_wait_ms": wait_ms,
                                       **drive(handlers[name], bodies, clients, duration_s)})
        finally:
            for handler in handlers.values():
                handler.close()
    results = {}
    for name, scenario_runs in runs.items():
        ranked = sorted(scenario_runs, key=lambda run: run["weeks_per_s"])
        r = results[name] = {**ranked[len(ranked) // 2], "weeks_per_s_runs": [run["weeks_per_s"] for run in scenario_runs]}
        print(f"  {name:34}: {r['weeks_per_s']:8.1f} weeks/s   p50 {r['p50_ms']:8.1f} ms   "
              f"p99 {r['p99_ms']:8.1f} ms   mean batch {r['mean_batch_rows']:5.1f}   "
              f"(runs: {', '.join(f'{w:.1f}' for w in r['weeks_per_s_runs'])} weeks/s)", flush=True)
    one, batched = results["one at a time"], results[f"{CLIENTS} clients, dynamic batching"]
    return {"variant": variant, "repeats": repeats, "scenarios": results,
            "speedup_vs_one_at_a_time": round(batched["weeks_per_s"] / one["weeks_per_s"], 2)}


def estimate_cpu_study_s(variants: int, batches: int, repeats: int, budget_s: float, threads: bool) -> float:
    """Seconds when idle: the precision rows (2 precisions alternating, plus first calls and the float64 reference)
    and the thread study (per variant: 2 conditions, each wait policy with 1 and 2 threads and 2 Keras thread counts
    per repeat; workers' start)."""
    from bench.pat_threads import POLICIES

    rows = variants * (15 + batches * repeats * 2 * (budget_s + 1.0))
    per_repeat = 2 * len(POLICIES) + 2
    return rows + (60 + variants * 2 * repeats * per_repeat * (budget_s + 0.5) if threads else 0)


def cpu_study(args, budget_s: float, min_runs: int) -> int:
    """`--only cpu`: the precision rows, the thread settings study and the cost table, in build/bench/pat-cpu.json."""
    from bench import cost, pat_threads

    out = args.out if args.out != OUT else CPU_OUT
    variants, batches = [f"PAT-{v}" for v in args.variants], args.batches or [1, LOAD_BATCH]
    repeats, cores = args.repeats, len(os.sched_getaffinity(0))
    minutes = estimate_cpu_study_s(len(variants), len(batches), repeats, budget_s, not args.no_threads) / 60
    print(f"PAT on the CPU, fp32 vs bf16 and thread settings ({cpu_info()['summary']}, {cores} vCPUs, torch "
          f"{torch.__version__}): about {minutes:.0f} min when idle", flush=True)
    torch.set_num_threads(cores)  # as PatModel does with the default settings
    print("fp32 and bf16 autocast, alternating, per variant and batch size:")
    with ThreadPoolExecutor(1) as model_thread:  # served batches run on the batcher's thread
        precision = model_thread.submit(bench_cpu_precision, variants, batches, repeats, budget_s, min_runs).result()
    threads = None
    if not args.no_threads:
        print(f"thread settings, {', '.join(variants)} at batch 1 against Keras, idle and with one core busy:")
        threads = pat_threads.study(repeats, budget_s, OUT.parent / "logs", variants=tuple(variants))
        w = threads["winner"]
        print(f"  best in the worst case: {w['omp_wait_policy']} ({w['environment']}), SERVE_TORCH_THREADS="
              f"{w['torch_threads']} ({w['worst_condition_vs_keras']:.2f}x Keras)", flush=True)
    costs = {}
    for variant in variants:
        measured = cost_inputs(precision["runs"], variant, LOAD_BATCH)
        if measured:
            costs[variant] = cost.cost_rows(measured, cores)
            print(cost.markdown(costs[variant], variant))
    report = {"torch": torch.__version__, "python": platform.python_version(), "vcpus": cores, "quick": args.quick,
              "precision": precision, "threads": threads, "cost": costs, "load_batch": LOAD_BATCH}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=["S", "M", "L"], choices=["S", "M", "L"])
    parser.add_argument("--batches", nargs="+", type=int, help="batch sizes (default: 1 8 64; precision: 1 8 32 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per figure")
    parser.add_argument("--batcher-variant", default="S", choices=["S", "M", "L"])
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3; 1 with --quick)")
    parser.add_argument("--only", choices=["forward", "batcher", "precision", "cpu"], help="run one part")
    parser.add_argument("--no-threads", action="store_true", help="cpu: leave out the thread settings study")
    parser.add_argument("--matmul-size", type=int, default=8192, help="precision: fp16 matmul rate on NxN")
    parser.add_argument("--quick", action="store_true", help="2 s per figure, at least one run, one repeat")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--peer", choices=["keras"], help="compare with the authors' Keras encoder on CPU instead")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.peer == "keras":
        from bench import keras_peer

        out = args.out if args.out != OUT else OUT.with_name("pat-keras.json")
        batches = [b for b in args.batches or [1, 8] if b in (1, 8)]
        report = keras_peer.measure([f"PAT-{v}" for v in args.variants], batches, args.repeats,
                                    1.0 if args.quick else 3.0, out, OUT.parent / "logs")
        for goal in report["goals"]:
            roof = [f"attainable {goal['attainable']:.2f}x"] if goal.get("attainable") else []
            roof += [goal["note"]] if "note" in goal else []
            roof_text = f" ({'; '.join(roof)})" if roof else ""
            print(f"  [{'MET' if goal['met'] else 'NOT MET':>7}] {goal['goal']}: {goal['value']:.3g}{roof_text}")
        print(f"wrote {out}")
        return 0
    budget, min_runs = (2.0, 1) if args.quick else (args.seconds, 3)
    if args.only == "cpu":
        return cpu_study(args, min(budget, args.seconds), min_runs)
    device = choose_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(len(os.sched_getaffinity(0)))  # as PatModel does with the default settings
    print(f"PAT on {device_name(device)} (torch {torch.__version__}, "
          f"{'fp16 autocast' if device.type == 'cuda' else 'float32'})", flush=True)
    forward = batcher = precision = None
    if args.only == "precision":
        print("float32 and fp16 autocast, per variant and batch size:")
        with ThreadPoolExecutor(1) as model_thread:
            precision = model_thread.submit(bench_precision, device, [f"PAT-{v}" for v in args.variants],
                                            args.batches or [1, 8, 32, 64],
                                            budget, min_runs, args.matmul_size).result()
    if args.only in (None, "forward"):
        print("batch step, per variant and batch size:")
        with ThreadPoolExecutor(1) as model_thread:  # served batches run on the batcher's thread, not the main one
            forward = model_thread.submit(bench_forward, device, [f"PAT-{v}" for v in args.variants],
                                          args.batches or [1, 8, 64], budget, min_runs).result()
    if args.only in (None, "batcher"):
        print(f"one-week requests through PatHandler (PAT-{args.batcher_variant}):")
        batcher = bench_batcher(device.type, f"PAT-{args.batcher_variant}", budget,
                                args.repeats)
        print(f"  dynamic batching vs one at a time: {batcher['speedup_vs_one_at_a_time']}x")
    report = {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
              "precision": "float16 autocast" if device.type == "cuda" else "float32",
              "python": platform.python_version(), "quick": args.quick, "forward": forward, "batcher": batcher,
              "precision_study": precision}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    if "--peer" in sys.argv:  # ours is timed with the image's wait policy, which must be set before torch loads
        from bench.keras_peer import with_serving_wait_policy

        wanted = with_serving_wait_policy(dict(os.environ))
        if wanted != os.environ:
            os.execve(sys.executable, [sys.executable, "-m", "bench.pat", *sys.argv[1:]], wanted)
    raise SystemExit(main())
