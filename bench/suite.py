"""The measurements: interleaved repeats of our server vs the naive baseline (and the in-process floor), then the
container figures (image sizes, `docker run` -> /ping, memory, the 50,000-request load)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import load, machine, systems
from bench.baselines import floor
from bench.client import Client, parse_scores, summary_ms
from bench.models import BenchModel, body_under, csv_body, csv_lines, parse_exact, rows


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

    @classmethod
    def quick(cls) -> "Plan":
        return cls(repeats=1, models=("example",), sequential=500, load_seconds=2, large_requests=3, image_starts=1,
                   load_requests=5000, pat_starts=1)


@dataclass
class Payloads:
    lines: list[bytes]  # distinct single rows (cycling them keeps the branch predictor honest)
    rows_10k: bytes
    max_body: bytes  # just under the 6 MiB default payload limit
    exact_10k: np.ndarray  # Booster.predict on the rows as Python parses them: what every answer must equal

    @classmethod
    def make(cls, model: BenchModel) -> "Payloads":
        x = rows(model, 10000)
        body = csv_body(x)
        booster = model.booster()
        import xgboost as xgb

        exact = booster.predict(xgb.DMatrix(parse_exact(body), missing=np.nan))
        return cls(csv_lines(x[:2000]), body, body_under(model), exact.astype(np.float64))


def _timed_large(client: Client, body: bytes, count: int, booster) -> tuple[list[float], list[float], bytes]:
    """Served times, each followed by the in-process floor on the same body (paired, so both see the same noise)."""
    times, floor_times, answer = [], [], b""
    for _ in range(count):
        start = time.perf_counter()
        status, answer = client.post(body)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise RuntimeError(f"large request answered {status}")
        floor_times += floor.large_body(booster, body, 1)
    return times, floor_times, answer


def _large_figures(times: list[float], floor_times: list[float]) -> dict:
    return {**summary_ms(times), "paired_floor_min_ms": min(floor_times) * 1e3,
            "ratio_to_floor": min(times) / min(floor_times)}


def measure_server(server: systems.Server, payloads: Payloads, plan: Plan, booster) -> dict:
    """Every HTTP figure for one running server."""
    result: dict = {"start_s": server.start_s}
    url = server.url
    load.run(url, payloads.lines[0], 8, seconds=1)  # warm-up: every worker has loaded and answered
    result["memory"] = systems.tree_memory(server.pid)
    client = Client(server.port)
    try:
        result["single_row"] = summary_ms(client.timed(payloads.lines, plan.sequential, warmup=100))
        for connections in (8, 32):
            window = machine.Window(lambda: systems.tree_cpu_seconds(server.pid))
            figures = load.run(url, payloads.lines[0], connections, seconds=plan.load_seconds)
            result[f"load_c{connections}"] = {**figures, "cpu": window.close()}
        times, floor_times, answer = _timed_large(client, payloads.rows_10k, plan.large_requests, booster)
        scores = parse_scores(answer)
        result["rows_10k"] = {**_large_figures(times, floor_times), "rows_per_s": 10000 / min(times),
                              "max_abs_error": float(np.max(np.abs(scores - payloads.exact_10k)))
                              if scores.shape == payloads.exact_10k.shape else None}
        times, floor_times, _ = _timed_large(client, payloads.max_body, max(2, plan.large_requests - 2), booster)
        result["body_6mib"] = {**_large_figures(times, floor_times), "bytes": len(payloads.max_body),
                               "rows": payloads.max_body.count(b"\n")}
    finally:
        client.close()
    return result


def measure_floor(model: BenchModel, payloads: Payloads, plan: Plan) -> dict:
    booster = model.booster()
    one = floor.single_row(booster, payloads.lines, plan.sequential)
    big = floor.large_body(booster, payloads.rows_10k, plan.large_requests)
    biggest = floor.large_body(booster, payloads.max_body, max(2, plan.large_requests - 2))
    return {"single_row": summary_ms(one), "rows_10k": {**summary_ms(big), "rows_per_s": 10000 / min(big)},
            "body_6mib": summary_ms(biggest)}


def interleaved(models: dict[str, BenchModel], plan: Plan, log_dir: Path) -> dict:
    """For each repeat and model: ours and naive (order alternating between repeats), then the floor."""
    results: dict = {name: {"ours": [], "naive": [], "floor": []} for name in models}
    payloads = {name: Payloads.make(model) for name, model in models.items()}
    boosters = {name: model.booster() for name, model in models.items()}
    for repeat in range(plan.repeats):
        order = [systems.Ours, systems.Naive] if repeat % 2 == 0 else [systems.Naive, systems.Ours]
        for name, model in models.items():
            for kind in order:
                print(f"bench: repeat {repeat + 1}/{plan.repeats}, {name} model, {kind.name}", flush=True)
                server = kind(model.model_dir, log_dir)
                try:
                    results[name][kind.name].append(measure_server(server, payloads[name], plan, boosters[name]))
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
