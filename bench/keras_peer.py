"""PAT against the authors' Keras encoder (tf_keras, CPU): fidelity and speed, for `python -m bench.pat --peer keras`.

The Keras side runs in its own venv (build/peers/keras, made on first use; `bench.venvs`) as a worker process
(`python -m bench.keras_peer worker`) that this module drives over stdin/stdout, one JSON line per command; arrays
travel as .npy files in a temporary directory.

The worker builds the encoder as the authors' notebooks do, layer for layer and with their layer names: Reshape
to patches, Dense(96) "dense", the sinusoidal table computed with TensorFlow ops and added, then per layer a nested
functional model "encoder_layer_{i}_transformer" (MultiHeadAttention(key_dim=96) returning its scores, Dropout,
post-LayerNorm(1e-6), Dense(256, relu), Dense(96), Dropout, LayerNorm). Its weights are random (Keras's
initializers, then every bias and LayerNorm parameter randomized so they count too) and written with Keras 2
`save_weights` to H5; our side reads that same file with `models.pat.weights.load_encoder`.

Compared on the same standardized weeks: the max abs difference of tokens and embeddings (goal <= 1e-4), and the
time per call at batch 1 and 8 with the same thread count (torch intra-op threads = TensorFlow intra-op threads,
TensorFlow inter-op 1), ours and Keras alternating in interleaved repeats. Keras is called through a
`tf.function` of the model (its fastest path here; `model.predict`, as the notebooks call it, is slower still).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PINS = ["tensorflow==2.18.1", "tf_keras==2.18.0", "h5py==3.16.0"]  # the authors' Jan-2025 requirements: TF 2.18
SIZES = {"PAT-S": (18, 6, 1), "PAT-M": (18, 12, 2), "PAT-L": (9, 12, 4)}  # patch size, heads, layers
WEEK, DIM, FF = 10080, 96, 256
ROOT = Path(__file__).resolve().parents[1]


# --- the worker, inside the Keras venv ------------------------------------------------------------------------------

def _keras_encoder(variant: str):
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras import layers

    patch, heads, depth = SIZES[variant]
    patches = WEEK // patch

    def block(i: int):
        prefix = f"encoder_layer_{i}"
        inputs = layers.Input(shape=(None, DIM), name=f"{prefix}_input")
        attended, scores = layers.MultiHeadAttention(num_heads=heads, key_dim=DIM, name=f"{prefix}_attention")(
            inputs, inputs, return_attention_scores=True)
        attended = layers.Dropout(0.1, name=f"{prefix}_dropout")(attended)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm1")(inputs + attended)
        f = layers.Dense(FF, activation="relu", name=f"{prefix}_ff1")(x)
        f = layers.Dense(DIM, name=f"{prefix}_ff2")(f)
        f = layers.Dropout(0.1, name=f"{prefix}_dropout2")(f)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{prefix}_norm2")(x + f)
        return keras.Model(inputs=inputs, outputs=[x, scores], name=f"{prefix}_transformer")

    position = tf.range(patches, dtype=tf.float32)[:, tf.newaxis]
    frequencies = tf.exp(tf.range(0, DIM, 2, dtype=tf.float32) * (-tf.math.log(10000.0) / DIM))
    table = tf.concat([tf.sin(position * frequencies), tf.cos(position * frequencies)], axis=-1)
    inputs = layers.Input(shape=(WEEK,), name="inputs")
    x = layers.Reshape((patches, patch), name="reshape")(inputs)
    x = layers.Dense(DIM, name="dense")(x)
    x = x + table
    maps = []
    for i in range(1, depth + 1):
        x, scores = block(i)(x)
        maps.append(scores)
    return keras.Model(inputs=inputs, outputs=[x, *maps], name="encoder")


def _randomize_offsets(model, seed: int) -> None:
    """Biases and LayerNorm gamma/beta start at 0 and 1: randomize them so the comparison covers them."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in model.weights:
        name = weight.name
        if "bias" in name or "beta" in name:
            weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
        elif "gamma" in name:
            weight.assign((1 + rng.normal(0, 0.1, weight.shape)).astype("float32"))


def worker(threads: int) -> None:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    models, functions = {}, {}
    reply = sys.stdout
    sys.stdout = sys.stderr  # TensorFlow's prints stay out of the protocol
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "build":
            variant = command["variant"]
            tf.random.set_seed(command["seed"])
            model = models[variant] = _keras_encoder(variant)
            _randomize_offsets(model, command["seed"])
            model.save_weights(command["h5"])
            functions[variant] = tf.function(lambda x, m=model: m(x, training=False)[0])
            answer = {"parameters": int(model.count_params())}
        elif op == "tokens":
            x = np.load(command["x"])
            tokens = functions[command["variant"]](tf.constant(x)).numpy()
            np.save(command["out"], tokens)
            answer = {}
        elif op == "time":
            fn = functions[command["variant"]]
            x = tf.constant(np.load(command["x"]))
            fn(x)  # this shape's first call (tracing)
            seconds = []
            started = time.perf_counter()
            while len(seconds) < command["min_runs"] or time.perf_counter() - started < command["budget_s"]:
                t0 = time.perf_counter()
                fn(x).numpy()
                seconds.append(time.perf_counter() - t0)
                if len(seconds) >= command["max_runs"]:
                    break
            answer = {"seconds": seconds}
        elif op == "versions":
            import tf_keras

            answer = {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__}
        else:
            answer = {"error": f"unknown op {op}"}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()


# --- the driver, in the project's environment ----------------------------------------------------------------------

class KerasWorker:
    def __init__(self, threads: int, log_path: Path):
        from bench import venvs

        python = venvs.ensure("keras", PINS)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(log_path.parent), "PYTHONPATH": str(ROOT),
               "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([str(python), "-m", "bench.keras_peer", "worker", str(threads)], env=env,
                                        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                        text=True)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Keras worker exited; see {self.log.name}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)
        self.log.close()


def _ours_seconds(encoder, x, budget_s: float, min_runs: int, max_runs: int) -> list[float]:
    import torch

    with torch.inference_mode():
        tensor = torch.from_numpy(x)
        encoder.encode(tensor)  # this shape's first call
        seconds: list[float] = []
        started = time.perf_counter()
        while len(seconds) < min_runs or time.perf_counter() - started < budget_s:
            t0 = time.perf_counter()
            encoder.encode(tensor).embedding.numpy()
            seconds.append(time.perf_counter() - t0)
            if len(seconds) >= max_runs:
                break
    return seconds


def _attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """Q K^T and the weights times V: 2 B H N M D multiply-adds each, 4 B H N M D in all (softmax not counted)."""
    batch, heads, queries, dim = query_shape
    return 4 * batch * heads * queries * key_shape[2] * dim


def with_serving_wait_policy(env: dict) -> dict:
    """`env` with the OpenMP wait policy the image sets (serve.settings.apply_process_defaults): ours is timed as it
    serves. libgomp reads it once, when torch loads, so it must be in a process's environment from its start."""
    from serve.settings import apply_process_defaults

    defaults: dict = {}
    apply_process_defaults(defaults)
    return {**env, "OMP_WAIT_POLICY": defaults["OMP_WAIT_POLICY"]}


def flop_counter():
    """torch's FLOP counter, with attention counted analytically (`_attention_flops`): in torch 2.13 it has no formula
    for CPU attention (aten._scaled_dot_product_flash_attention_for_cpu, or aten.scaled_dot_product_attention itself
    under inference mode) and would leave out most of the work."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops,
               aten.scaled_dot_product_attention: _attention_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def encoder_flops(encoder, batch: int = 1) -> int:
    """Floating-point operations of one encoder call on `batch` weeks (`flop_counter`), after a first call: what is
    computed once from the weights (the attention's folded maps) is not part of a call."""
    import torch

    with torch.inference_mode():
        encoder.encode(torch.zeros(1, WEEK))
        with flop_counter() as counter:
            encoder.encode(torch.zeros(batch, WEEK))
    return counter.get_total_flops()


def fp32_gemm_rate(size: int, budget_s: float) -> float:
    """FLOP/s of a size x size float32 matmul on the CPU, on torch's current threads, run for about `budget_s`."""
    import torch

    from bench.machine import matmul_flops_per_s

    return matmul_flops_per_s(torch.device("cpu"), size, budget_s, torch.float32)


def add_roofs(results: dict) -> None:
    """Each batch row's floor at the fp32 GEMM rate (the higher of the measurements so far): `roof_ms`, the time
    its FLOPs take at that rate; `ours_share_of_roof`, roof_ms / ours; `attainable_speedup`, Keras / roof_ms, the
    most any encoder doing these FLOPs can gain over Keras on this CPU."""
    gemm = results["gemm"]
    gemm["gflops"] = max(gemm[key] for key in ("gflops_before", "gflops_after") if key in gemm)
    for entry in results["variants"].values():
        for batch, row in entry["batches"].items():
            row["flops"] = entry["flops_per_week"] * int(batch)
            row["roof_ms"] = row["flops"] / (gemm["gflops"] * 1e9) * 1e3
            row["ours_share_of_roof"] = row["roof_ms"] / row["ours_p50_ms"]
            row["attainable_speedup"] = row["keras_p50_ms"] / row["roof_ms"]


def exact_tokens(encoder, weeks):
    """The same encoder and weights evaluated in float64, positional table included (float64 sin, cos and exp, never
    rounded to float32): the arithmetic both float32 encoders approximate."""
    import copy
    import math

    import torch

    reference = copy.deepcopy(encoder).double()
    patches = WEEK // reference.spec.patch_size
    position = torch.arange(patches, dtype=torch.float64)[:, None]
    frequencies = torch.exp(torch.arange(0, DIM, 2, dtype=torch.float64) * (-math.log(10000.0) / DIM))
    reference._encodings[(patches, "cpu")] = torch.cat([torch.sin(position * frequencies),
                                                        torch.cos(position * frequencies)], dim=-1)
    with torch.inference_mode():
        return reference.encode(torch.from_numpy(weeks).double()).tokens.numpy()


def compare(variants: list[str], batches: list[int], threads: int, repeats: int, budget_s: float,
            log_dir: Path, save=lambda results: None, gemm_size: int = 2048, gemm_budget_s: float = 1.0) -> dict:
    """Fidelity and interleaved speed, ours vs Keras, for each variant (e.g. PAT-S) and batch size, with each
    row's roof at this CPU's fp32 GEMM rate (`add_roofs`; the rate measured before the first variant and after the
    last); `save` gets the results so far after every figure (a long PAT-L run that is stopped keeps what it
    measured)."""
    import numpy as np
    import torch

    from models.pat.weights import load_encoder

    torch.set_num_threads(threads)
    rng = np.random.default_rng(5)
    log_dir.mkdir(parents=True, exist_ok=True)
    keras = KerasWorker(threads, log_dir / "keras-worker.log")
    results: dict = {"threads": threads, "repeats": repeats, "keras_call": "tf.function(model)(x, training=False)",
                     "weights": "random (Keras initializers; biases and LayerNorm randomized), written by the Keras "
                                "model with save_weights",
                     "flops": "one encoder call, torch's FLOP counter with CPU attention counted as 4 B H N N D",
                     "gemm": {"size": gemm_size, "threads": threads}, "variants": {}}
    try:
        results["versions"] = {**keras.ask(op="versions"), "torch": torch.__version__}
        results["gemm"]["gflops_before"] = fp32_gemm_rate(gemm_size, gemm_budget_s) / 1e9
        print(f"  fp32 GEMM {gemm_size}x{gemm_size}, {threads} threads: {results['gemm']['gflops_before']:.1f} "
              f"GFLOP/s (before the first variant)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for number, variant in enumerate(variants):
                h5 = work / f"{variant}.h5"
                built = keras.ask(op="build", variant=variant, seed=number + 1, h5=str(h5))
                encoder = load_encoder(h5).eval()
                weeks = rng.normal(size=(4, WEEK)).astype(np.float32)  # standardized activity
                np.save(work / "x.npy", weeks)
                keras.ask(op="tokens", variant=variant, x=str(work / "x.npy"), out=str(work / "tokens.npy"))
                theirs = np.load(work / "tokens.npy")
                with torch.inference_mode():
                    ours = encoder.encode(torch.from_numpy(weeks)).tokens.numpy()
                exact = exact_tokens(encoder, weeks)
                entry = results["variants"][variant] = {
                    "parameters": built["parameters"], "flops_per_week": encoder_flops(encoder),
                    "max_abs_diff_tokens": float(np.max(np.abs(ours - theirs))),
                    "max_abs_diff_embedding": float(np.max(np.abs(ours.mean(axis=1) - theirs.mean(axis=1)))),
                    "tokens_vs_float64": {"ours": float(np.max(np.abs(ours - exact))),
                                          "keras": float(np.max(np.abs(theirs - exact)))},
                    "batches": {}}
                save({**results, "goals": goals(results)})
                print(f"  {variant}: tokens differ by at most {entry['max_abs_diff_tokens']:.2e}, embeddings by "
                      f"{entry['max_abs_diff_embedding']:.2e}; from float64 math: ours "
                      f"{entry['tokens_vs_float64']['ours']:.2e}, Keras {entry['tokens_vs_float64']['keras']:.2e}",
                      flush=True)
                for batch in batches:
                    x = rng.normal(size=(batch, WEEK)).astype(np.float32)
                    np.save(work / "x.npy", x)
                    runs = []
                    for repeat in range(repeats):
                        plan = dict(budget_s=budget_s, min_runs=3, max_runs=200)
                        order = ["ours", "keras"] if repeat % 2 == 0 else ["keras", "ours"]
                        times = {}
                        for side in order:
                            if side == "ours":
                                times[side] = _ours_seconds(encoder, x, **plan)
                            else:
                                times[side] = keras.ask(op="time", variant=variant, x=str(work / "x.npy"),
                                                        **plan)["seconds"]
                        p50 = {side: statistics.median(seconds) * 1e3 for side, seconds in times.items()}
                        runs.append({"ours_p50_ms": p50["ours"], "keras_p50_ms": p50["keras"],
                                     "speedup": p50["keras"] / p50["ours"],
                                     "calls": {side: len(seconds) for side, seconds in times.items()}})
                    speedups = [run["speedup"] for run in runs]
                    row = entry["batches"][str(batch)] = {
                        "ours_p50_ms": statistics.median(run["ours_p50_ms"] for run in runs),
                        "keras_p50_ms": statistics.median(run["keras_p50_ms"] for run in runs),
                        "speedup_median": statistics.median(speedups), "speedup_min": min(speedups),
                        "speedup_max": max(speedups), "runs": runs}
                    add_roofs(results)
                    save({**results, "goals": goals(results)})
                    print(f"  {variant} batch {batch}: ours {row['ours_p50_ms']:.1f} ms, Keras "
                          f"{row['keras_p50_ms']:.1f} ms per call: {row['speedup_median']:.2f}x "
                          f"({row['speedup_min']:.2f}-{row['speedup_max']:.2f}) over {repeats} repeats; "
                          f"{row['flops'] / 1e9:.2f} GFLOP, roof {row['roof_ms']:.1f} ms at the fp32 GEMM rate: "
                          f"ours at {row['ours_share_of_roof']:.0%} of it, at most "
                          f"{row['attainable_speedup']:.2f}x Keras attainable", flush=True)
        results["gemm"]["gflops_after"] = fp32_gemm_rate(gemm_size, gemm_budget_s) / 1e9
        add_roofs(results)
        print(f"  fp32 GEMM after the last variant: {results['gemm']['gflops_after']:.1f} GFLOP/s; the roofs use "
              f"the higher, {results['gemm']['gflops']:.1f}", flush=True)
    finally:
        keras.close()
    results["goals"] = goals(results)
    return results


def measure(variants: list[str], batches: list[int], repeats: int, budget_s: float, path: Path,
            log_dir: Path) -> dict:
    """`compare` with as many threads as this process may use, the results so far and at the end written to `path`."""
    threads = len(os.sched_getaffinity(0))
    print(f"PAT vs the authors' Keras encoder on CPU, {threads} threads each", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = compare(variants, batches, threads, repeats, budget_s, log_dir,
                     lambda partial: path.write_text(json.dumps(partial, indent=2)))
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def goals(results: dict) -> list[dict]:
    out = []
    for variant, entry in results["variants"].items():
        worst = max(entry["max_abs_diff_tokens"], entry["max_abs_diff_embedding"])
        out.append({"goal": f"{variant} tokens and embedding within 1e-4 of Keras", "value": worst,
                    "met": worst <= 1e-4})
        for batch, limit in (("1", 1.5), ("8", 2.0)):
            if batch in entry["batches"]:
                row = entry["batches"][batch]
                value, attainable = row["speedup_median"], row.get("attainable_speedup")
                goal = {"goal": f"{variant} batch {batch}: ours >= {limit}x Keras's speed", "value": value,
                        "met": value >= limit, "attainable": attainable}
                if attainable is not None and limit > attainable:
                    goal["note"] = "beyond this CPU's fp32 GEMM rate"
                out.append(goal)
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    worker(int(sys.argv[2]))
