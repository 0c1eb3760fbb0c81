"""`python -m bench.multimodel [--quick]`: multi-model endpoint figures, printed and in build/bench/multimodel.json.

A real `serve` process with SAGEMAKER_MULTI_MODEL=true loads copies of the benchmark's example model (binary, 200
trees of depth 6, 40 features: the README's risk model) one by one, as SageMaker would, up to 100. It measures:

- load time: POST /models as the client sees it, and the load alone as the server measured it;
- memory per loaded model: the worker's resident set before and after (divided by the models loaded), and the
  registry's own per-model figure (what the budget is charged);
- invocation latency, single-row CSV, sequential on one keep-alive connection, with 1, 10 and 100 models loaded:
  each request to a model drawn at random from those loaded, and (one hot) all to the same model; interleaved,
  repeat by repeat, with a single-model server on the same model, so that the ratios show on this noisy machine
  what the multi-model routing costs (one hot) and what spreading requests over many models costs (caches);
- with a budget that holds about 10 of the 100 models: the latency when most invocations must reload their model.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import orjson

from bench import machine, systems
from bench.client import summary_ms
from bench.models import BenchModel, csv_body, prepare, rows
from serve.process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
STAGES = (1, 10, 100)
MIB = 1024 * 1024


class Connection:
    """One keep-alive connection to a server; every answer other than the expected status is an error."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "text/csv",
                expect: int = 200) -> tuple[float, bytes]:
        start = time.perf_counter()
        self.connection.request(method, path, body=body, headers={"Content-Type": content_type} if body else {})
        response = self.connection.getresponse()
        data = response.read()
        elapsed = time.perf_counter() - start
        if response.status != expect:
            raise RuntimeError(f"{method} {path} answered {response.status}: {data[:200]!r}")
        return elapsed, data

    def close(self) -> None:
        self.connection.close()


def model_copies(model: BenchModel, root: Path, count: int) -> list[str]:
    """<root>/<name>/model/ for `count` names, as SageMaker lays out models it downloads (files hard-linked)."""
    names = [f"risk-{index:03d}" for index in range(count)]
    for name in names:
        model_dir = root / name / "model"
        if (model_dir / "xgboost-model").exists():
            continue
        model_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.link(model.booster_path, model_dir / "xgboost-model")
        except OSError:
            shutil.copyfile(model.booster_path, model_dir / "xgboost-model")
    return names


def worker_rss_mib(server: ServeProcess) -> float:
    return systems.tree_memory(server.process.pid)["worker_rss_mib"][0]


def start(env: dict[str, str], log: Path) -> ServeProcess:
    return ServeProcess({"SERVE_LOG_LEVEL": "warning", "SAGEMAKER_MODEL_SERVER_WORKERS": "2", **env}, log).wait_ready()


def load_models(server: ServeProcess, root: Path, names: list[str]) -> list[dict]:
    connection, loads = Connection(server.port), []
    for name in names:
        body = orjson.dumps({"model_name": name, "url": str(root / name / "model")})
        seconds, answer = connection.request("POST", "/models", body, "application/json")
        loads.append({"client_s": seconds, **orjson.loads(answer)})
    connection.close()
    return loads


def timed_invocations(server: ServeProcess, names: list[str], body: bytes, count: int, seed: int) -> list[float]:
    """Seconds per request; each request goes to a model drawn at random (single-model: /invocations)."""
    connection, rng, times = Connection(server.port), random.Random(seed), []
    for _ in range(count):
        path = f"/models/{rng.choice(names)}/invoke" if names else "/invocations"
        times.append(connection.request("POST", path, body)[0])
    connection.close()
    return times


def run(args: argparse.Namespace) -> dict:
    out = args.out
    model = prepare(out / "models", ("example",))["example"]
    root = out / "multimodel" / "models"
    names = model_copies(model, root, max(STAGES))
    body = csv_body(rows(model, 1))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    window = machine.Window()
    single = start({"SM_MODEL_DIR": str(model.model_dir)}, logs / "multimodel-single.log")
    multi = start({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(root)}, logs / "multimodel.log")
    try:
        rss_before = worker_rss_mib(multi)
        loads, stages, loaded = [], {}, 0
        for stage in STAGES:
            loads += load_models(multi, root, names[loaded:stage])
            loaded = stage
            rss = worker_rss_mib(multi)
            timed_invocations(multi, names[:stage], body, args.warmup, seed=0)
            timed_invocations(single, [], body, args.warmup, seed=0)
            multi_runs, hot_runs, single_runs = [], [], []
            for repeat in range(args.repeats):
                multi_runs.append(summary_ms(timed_invocations(multi, names[:stage], body, args.requests, repeat)))
                hot_runs.append(summary_ms(timed_invocations(multi, names[:1], body, args.requests, repeat)))
                single_runs.append(summary_ms(timed_invocations(single, [], body, args.requests, repeat)))
            stages[stage] = {
                "worker_rss_mib": round(rss, 1),
                "rss_per_model_mib": round((rss - rss_before) / stage, 3),
                "multi_model": multi_runs,
                "multi_model_one_hot": hot_runs,
                "single_model": single_runs,
                "p50_ratio": [round(m["p50_ms"] / s["p50_ms"], 3) for m, s in zip(multi_runs, single_runs)],
            }
    finally:
        single.stop()
        multi.stop()
    charged = [entry["memoryBytes"] / MIB for entry in loads]
    result = {
        "models_loaded": len(loads),
        "model": model.description,
        "model_file_mib": round(model.booster_path.stat().st_size / MIB, 3),
        "worker_rss_before_mib": round(rss_before, 1),
        "load": {"client": summary_ms([entry["client_s"] for entry in loads]),
                 "server": summary_ms([entry["loadSeconds"] for entry in loads])},
        "charged_per_model_mib": {"first": round(charged[0], 3), "median": round(statistics.median(charged), 3),
                                  "max": round(max(charged), 3), "mean_after_first": round(statistics.mean(charged[1:]), 3)},
        "stages": stages,
    }
    if not args.no_evictions:
        result["evictions"] = evictions(args, root, names, body, logs, statistics.median(charged))
    result["cpu"] = window.close()
    return result


def evictions(args, root: Path, names: list[str], body: bytes, logs: Path, model_mib: float) -> dict:
    """A budget of about ten models, invocations spread over all 100: most of them reload their model first."""
    budget_mib = max(1, round(10.5 * model_mib))
    server = start({"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MULTI_MODEL_DIR": str(root),
                    "SERVE_MODEL_MEMORY_MB": str(budget_mib)}, logs / "multimodel-evictions.log")
    try:
        load_models(server, root, names)
        times = timed_invocations(server, names, body, args.requests // 2, seed=7)
        connection = Connection(server.port)
        reloads = sum(orjson.loads(connection.request("GET", f"/models/{name}")[1])["loads"] - 1 for name in names)
        resident = sum(orjson.loads(connection.request("GET", f"/models/{name}")[1])["status"] == "loaded"
                       for name in names)
        connection.close()
        rss = worker_rss_mib(server)
    finally:
        server.stop()
    return {"budget_mib": budget_mib, "registered": len(names), "resident_after": resident, "reloads": reloads,
            "invocations": len(times), "latency": summary_ms(times), "worker_rss_mib": round(rss, 1)}


def _p50_p99(runs: list[dict]) -> str:
    """Medians over the repeats."""
    return (f"{statistics.median(run['p50_ms'] for run in runs):.3f} / "
            f"{statistics.median(run['p99_ms'] for run in runs):.3f}")


def report(result: dict) -> None:
    load = result["load"]
    charged = result["charged_per_model_mib"]
    print(f"multi-model endpoint, {result['models_loaded']} copies of the {result['model']} model "
          f"({result['model_file_mib']} MiB file)")
    print(f"  load: client p50 {load['client']['p50_ms']:.1f} ms, p99 {load['client']['p99_ms']:.1f} ms; "
          f"server p50 {load['server']['p50_ms'] :.1f} ms")
    print(f"  memory charged per model: median {charged['median']} MiB, max {charged['max']} MiB, "
          f"first {charged['first']} MiB (pays XGBoost's set-up)")
    print(f"  worker RSS before any model: {result['worker_rss_before_mib']} MiB")
    print("  loaded | RSS MiB | RSS/model MiB | p50 / p99 ms: random model | one hot model | single-model server"
          " | p50 ratio random/single (per repeat)")
    for stage, figures in result["stages"].items():
        columns = [_p50_p99(figures[key]) for key in ("multi_model", "multi_model_one_hot", "single_model")]
        print(f"  {stage:>6} | {figures['worker_rss_mib']:>7} | {figures['rss_per_model_mib']:>13} | "
              f"{' | '.join(columns)} | {figures['p50_ratio']}")
    if "evictions" in result:
        ev = result["evictions"]
        print(f"  budget {ev['budget_mib']} MiB for {ev['registered']} models: {ev['reloads']} reloads in "
              f"{ev['invocations']} invocations, p50 {ev['latency']['p50_ms']:.2f} ms, "
              f"p99 {ev['latency']['p99_ms']:.2f} ms, {ev['resident_after']} resident, RSS {ev['worker_rss_mib']} MiB")
    print(f"  machine: {result['cpu']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of 300 requests per stage")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000, help="sequential requests per stage and repeat")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--no-evictions", action="store_true", help="skip the over-budget phase")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.requests, args.warmup = 1, 300, 50
    args.out.mkdir(parents=True, exist_ok=True)
    import xgboost

    result = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.multimodel" + (" --quick" if args.quick else ""),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "xgboost": xgboost.__version__,
                    "load_average_before": os.getloadavg()},
        **run(args),
    }
    result["machine"]["load_average_after"] = os.getloadavg()
    (args.out / "multimodel.json").write_text(json.dumps(result, indent=1) + "\n")
    report(result)
    print(f"\nwrote {args.out / 'multimodel.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
