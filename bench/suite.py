"""The measurements: interleaved repeats of our server vs the naive baseline (and the in-process floor), then the
container figures (image sizes, `docker run` -> /ping, memory, the 50,000-request load)."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench import first_request, load, machine, systems
from bench.baselines import floor
from bench.client import Client, summary_ms
from bench.models import BenchModel, body_under, csv_body, csv_lines, parse_exact, rows
from bench.protocols import CSV, Protocol


@dataclass(frozen=True)
class Plan:
    repeats: int = 3
    models: tuple[str, ...] = ("example", "large")
    sequential: int = 2000
    load_seconds: int = 5
    large_requests: int = 5
    image_starts: int = 3
    load_requests: int = 50000
    pat_starts: int = 2
    keras_variants: tuple[str, ...] = ("PAT-S", "PAT-M", "PAT-L")  # PAT against the authors' Keras encoder
    keras_budget_s: float = 3.0  # per side and figure (at least 3 calls)
    first_request_steady: tuple[int, int] = first_request.STEADY  # keep-alive requests for the steady p50
    first_request_repeats: int = first_request.REPEATS  # fresh servers per family (quick too: the ratio is noisy)
    paired_rounds: int = 10  # single-row bursts on every server in turn (bench.paired)
    paired_burst: int = 600  # requests per burst and client

    @classmethod
    def quick(cls) -> "Plan":
        return cls(repeats=1, models=("example",), sequential=500, load_seconds=2, large_requests=3, image_starts=1,
                   load_requests=5000, pat_starts=1, keras_variants=("PAT-S",), keras_budget_s=1.0,
                   first_request_steady=(200, 20), paired_rounds=6, paired_burst=300)


@dataclass
class Payloads:
    single: np.ndarray  # 2000 distinct single rows (cycling them keeps the branch predictor honest)
    rows_10k: np.ndarray
    max_body: bytes  # CSV just under the 6 MiB default payload limit (CSV systems only)
    exact_single: np.ndarray  # Booster.predict on the rows as Python parses them: what every answer must equal
    exact_10k: np.ndarray
    bodies: dict = field(default_factory=dict)  # protocol name -> (single-row bodies, 10k-row body)

    @classmethod
    def make(cls, model: BenchModel) -> "Payloads":
        x = parse_exact(csv_body(rows(model, 10000)))  # every protocol encodes these values
        booster = model.booster()
        import xgboost as xgb

        def exact(rows_: np.ndarray) -> np.ndarray:
            return booster.predict(xgb.DMatrix(rows_, missing=np.nan)).astype(np.float64)

        return cls(x[:2000], x, body_under(model), exact(x[:2000]), exact(x))

    def for_protocol(self, protocol: Protocol) -> tuple[list[bytes], bytes]:
        if protocol.name not in self.bodies:
            self.bodies[protocol.name] = (protocol.single_rows(self.single), protocol.body(self.rows_10k))
        return self.bodies[protocol.name]


def _timed_large(client: Client, body: bytes, count: int, booster, floor_body: bytes
                 ) -> tuple[list[float], list[float], bytes]:
    """Served times, each followed by the in-process floor on the same rows as CSV (paired: the same noise)."""
    times, floor_times, answer = [], [], b""
    for _ in range(count):
        start = time.perf_counter()
        status, answer = client.post(body)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"large request answered {status}")
        floor_times += floor.large_body(booster, floor_body, 1)
    return times, floor_times, answer


def _large_figures(times: list[float], floor_times: list[float]) -> dict:
    return {**summary_ms(times), "paired_floor_min_ms": min(floor_times) * 1e3,
            "ratio_to_floor": min(times) / min(floor_times)}


def _max_error(scores: np.ndarray, exact: np.ndarray) -> float | None:
    """Largest difference as float32, XGBoost's output type (a text answer may print float32's shortest repr)."""
    if scores.shape != exact.shape:
        return None
    return float(np.max(np.abs(scores.astype(np.float32) - exact.astype(np.float32))))


def check_predictions(client: Client, protocol: Protocol, payloads: Payloads, single_checked: int = 50) -> dict:
    """Before any timing: the 10,000-row answer and the first single-row answers against in-process predict."""
    single, big = payloads.for_protocol(protocol)
    status, answer = client.post(big)
    errors = [_max_error(protocol.scores(answer), payloads.exact_10k) if status == 200 else None]
    for i in range(single_checked):
        status, answer = client.post(single[i])
        errors.append(_max_error(protocol.scores(answer), payloads.exact_single[i:i + 1]) if status == 200 else None)
    worst = None if None in errors else max(errors)
    return {"rows_checked": 10000 + single_checked, "max_abs_error": worst, "equal": worst == 0.0}


def measure_server(server: systems.Server, protocol: Protocol, payloads: Payloads, plan: Plan, booster) -> dict:
    """Every HTTP figure for one running server, spoken to in one protocol."""
    result: dict = {"start_s": server.start_s, "protocol": protocol.name}
    url = server.url
    single, big = payloads.for_protocol(protocol)
    wire = {"path": protocol.path, "content_type": protocol.content_type, "accept": protocol.accept}
    load.run(url, single[0], 8, seconds=1, **wire)  # warm-up: every worker has loaded and answered
    result["memory"] = systems.tree_memory(server.pid, server.worker_pids())
    client = Client(server.port, protocol.content_type, protocol.accept, protocol.path)
    try:
        result["predictions"] = check = check_predictions(client, protocol, payloads)
        if not check["equal"]:
            print(f"bench: {server.name} ({protocol.name}) predictions differ from in-process: {check}", flush=True)
        result["single_row"] = summary_ms(client.timed(single, plan.sequential, warmup=100))
        for connections in (8, 32):
            window = machine.Window(lambda: systems.tree_cpu_seconds(server.pid))
            figures = load.run(url, single[0], connections, seconds=plan.load_seconds, **wire)
            result[f"load_c{connections}"] = {**figures, "cpu": window.close()}
        floor_10k = csv_body(payloads.rows_10k)
        client.connection.close()  # uvicorn (MLServer) drops connections idle for 5 s, as during the load above
        times, floor_times, answer = _timed_large(client, big, plan.large_requests, booster, floor_10k)
        result["rows_10k"] = {**_large_figures(times, floor_times), "rows_per_s": 10000 / min(times),
                              "bytes": len(big), "max_abs_error": _max_error(protocol.scores(answer),
                                                                             payloads.exact_10k)}
        if protocol.name == "csv":
            times, floor_times, _ = _timed_large(client, payloads.max_body, max(2, plan.large_requests - 2), booster,
                                                 payloads.max_body)
            result["body_6mib"] = {**_large_figures(times, floor_times), "bytes": len(payloads.max_body),
                                   "rows": payloads.max_body.count(b"\n")}
    finally:
        client.close()
    return result


def measure_floor(model: BenchModel, payloads: Payloads, plan: Plan) -> dict:
    booster = model.booster()
    one = floor.single_row(booster, payloads.for_protocol(CSV)[0], plan.sequential)
    big = floor.large_body(booster, csv_body(payloads.rows_10k), plan.large_requests)
    biggest = floor.large_body(booster, payloads.max_body, max(2, plan.large_requests - 2))
    return {"single_row": summary_ms(one), "rows_10k": {**summary_ms(big), "rows_per_s": 10000 / min(big)},
            "body_6mib": summary_ms(biggest)}


def result_key(kind: type[systems.Server], protocol: Protocol) -> str:
    """`ours`, `naive`, `mlserver` in their own protocol; `ours-json` for ours spoken to in JSON."""
    return kind.name if protocol is kind.protocols[0] else f"{kind.name}-{protocol.name}"


def interleaved(models: dict[str, BenchModel], plan: Plan, log_dir: Path, kinds: list) -> dict:
    """For each repeat and model: every system (order rotating between repeats), then the floor."""
    keys = [result_key(kind, protocol) for kind in kinds for protocol in kind.protocols]
    results: dict = {name: {**{key: [] for key in keys}, "floor": []} for name in models}
    payloads = {name: Payloads.make(model) for name, model in models.items()}
    boosters = {name: model.booster() for name, model in models.items()}
    for repeat in range(plan.repeats):
        order = kinds[repeat % len(kinds):] + kinds[:repeat % len(kinds)]
        for name, model in models.items():
            for kind in order:
                print(f"bench: repeat {repeat + 1}/{plan.repeats}, {name} model, {kind.name}", flush=True)
                server = kind(model.model_dir, log_dir)
                try:
                    for protocol in server.protocols:
                        results[name][result_key(kind, protocol)].append(
                            measure_server(server, protocol, payloads[name], plan, boosters[name]))
                finally:
                    server.stop()
            results[name]["floor"].append(measure_floor(model, payloads[name], plan))
    return results


def containers(model: BenchModel, plan: Plan, pat_model_dir: Path | None, images: dict[str, str]) -> dict:
    """Image sizes, `docker run` -> first /ping 200, memory per worker and the long load on the xgboost image."""
    if not systems.docker_available():
        return {"skipped": "no Docker engine answers (./build.sh engine starts one)"}
    found: dict = {"images": {}}
    for family, image in images.items():
        if systems.image_exists(image):
            found["images"][family] = {"image": image, "size_mb": systems.image_size_mb(image)}
        else:
            found["images"][family] = {"image": image, "skipped": f"not built (./build.sh build {family})"}
    if "size_mb" in found["images"].get("xgboost", {}):
        starts, memory = [], None
        for _ in range(plan.image_starts):
            container = systems.Container(images["xgboost"], model.model_dir, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
            try:
                starts.append(container.start_s)
                if memory is None:
                    load.run(container.url, csv_lines(rows(model, 1))[0], 8, seconds=1)
                    memory = systems.tree_memory(container.pid)
                    print(f"bench: {plan.load_requests} requests at concurrency 32 against {images['xgboost']}",
                          flush=True)
                    window = machine.Window(lambda: systems.tree_cpu_seconds(container.pid))
                    found["load_50k"] = {**load.run(container.url, csv_lines(rows(model, 1))[0], 32,
                                                    requests=plan.load_requests, threads=2),
                                         "cpu": window.close()}
            finally:
                container.stop()
        found["xgboost_start_s"] = starts
        found["xgboost_memory"] = memory
    if "size_mb" in found["images"].get("pat", {}):
        if pat_model_dir is None:
            found["pat_start_s"] = {"skipped": "no PAT artifact (python -m models.pat.examples --out build/models/pat)"}
        else:
            starts = []
            for _ in range(plan.pat_starts):
                container = systems.Container(images["pat"], pat_model_dir, {"SERVE_DEVICE": "cpu"}, deadline_s=180)
                starts.append(container.start_s)
                container.stop()
            found["pat_start_s"] = starts
    return found


def median(values: list[float]) -> float:
    return statistics.median(values)


# Seconds one measure_server call spends outside the timed phases (start, warm-up, check, large bodies), and per
# sequential single-row request, per system (the large model costs about twice as much per request), on a machine
# where machine.cpu_probe_s() takes CALIBRATION_PROBE_S: estimates scale by the probe. Calibrated on the 2-vCPU
# machine of bench/PERFORMANCE.md on 2026-12-01: probe 0.0354 s, `python -m bench` took 30.3 min.
CALIBRATION_PROBE_S = 0.0266
FIXED_S = {"ours": 4.0, "ours-json": 3.0, "naive": 4.0, "lean": 4.0, "mlserver": 12.0}
PER_REQUEST_S = {"ours": 0.0008, "ours-json": 0.001, "naive": 0.004, "lean": 0.003, "mlserver": 0.004}
# Seconds per repeat of the first-request figures: a fresh XGBoost server, a fresh PAT-S server (torch's import and
# the first forward passes dominate); estimates, not yet calibrated on a quiet machine.
FIRST_REQUEST_S = {"xgboost": 5.0, "pat": 20.0}


# Seconds per interleaved repeat of one PAT variant at batch 1 and 8 against Keras (both sides), and to start the
# Keras worker (same machine).
KERAS_S = {"PAT-S": 12.0, "PAT-M": 25.0, "PAT-L": 110.0}
KERAS_FIXED_S = 20.0


def estimate_s(plan: Plan, kinds: list, docker: bool, keras: bool = False, probe_s: float = CALIBRATION_PROBE_S,
               first: bool = True, pat: bool = True) -> float:
    """How long `interleaved` (and `containers`, and the Keras comparison) will take on a machine whose
    machine.cpu_probe_s() is `probe_s`: printed before the run starts."""
    keys = [result_key(kind, protocol) for kind in kinds for protocol in kind.protocols]
    per_model = sum(FIXED_S.get(k, 5.0) + 2 * (plan.load_seconds + 1) + (plan.sequential + 100) * PER_REQUEST_S.get(
        k, 0.004) for k in keys) + plan.sequential * 0.0004 + 3
    weights = {"example": 1.0, "large": 2.0}
    # bench.paired, once per model: every system's start, then its bursts by the Python client and by wrk
    paired = sum(FIXED_S.get(k.name, 5.0) + plan.paired_rounds * plan.paired_burst * 2 * PER_REQUEST_S.get(
        k.name, 0.004) for k in kinds)
    total = sum((plan.repeats * per_model + paired) * weights.get(name, 1.0) for name in plan.models)
    if first:
        total += plan.first_request_repeats * (FIRST_REQUEST_S["xgboost"] + (FIRST_REQUEST_S["pat"] if pat else 0.0))
    if docker:
        total += plan.image_starts * 2 + plan.load_requests / 2000 + plan.pat_starts * 4 + 10
    if keras:
        total += KERAS_FIXED_S + plan.repeats * sum(KERAS_S[variant] for variant in plan.keras_variants) * (
            plan.keras_budget_s / 3.0 if plan.keras_budget_s < 3.0 else 1.0)
    # on a shared machine everything stretches with the run queue: scale by the load average per CPU when above 1
    return total * probe_s / CALIBRATION_PROBE_S * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
