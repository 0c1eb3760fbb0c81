"""`python -m bench.metrics_cost [--quick]`: what the metric records cost. Two `serve` processes on the example model
(one worker each), SERVE_METRICS=true and false, measured in rounds of sequential single-row requests over
keep-alive, the arms taking turns every 50 requests; the goal is an on/off ratio of single-row p50 of at most 1.03.
Both write the request's log line (provenance, item 1 of issue 21); the difference is the metric values and the `_aws`
directive. Also the app's own time per line, in process, which the machine's load moves less.
Writes build/bench/metrics-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import timeit
from pathlib import Path

from bench import machine
from bench.client import Client, summary_ms
from bench.models import csv_lines, prepare, rows
from serve import metrics, provenance
from serve.process import ServeProcess
from serve.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench" / "metrics-cost.json"
GOAL_RATIO = 1.03
BLOCK = 50  # requests to one arm before the other takes its turn
DEPLOY = {"SERVE_METRICS_ENDPOINT": "bench-endpoint", "SERVE_METRICS_VARIANT": "AllTraffic",
          "SERVE_METRICS_MODEL": "bench-example", "SAGEMAKER_MODEL_SERVER_WORKERS": "1"}


def line_cost_us(enabled: bool, number: int = 20000) -> float:
    """Microseconds the app spends per invocation on the stage timers and its line (written to /dev/null), best of 5:
    the part of the difference that does not depend on how busy the machine is."""
    settings = Settings(metrics=enabled, metric_dimensions=tuple((d, "bench") for d in ("EndpointName", "VariantName",
                                                                                        "ModelName")))
    fd = os.open(os.devnull, os.O_WRONLY)
    recorder, identity = metrics.Recorder(settings, fd=fd), provenance.endpoint(settings)

    def one() -> None:
        invocation = metrics.Invocation()
        for stage in metrics.STAGES:
            invocation.lap(stage)
        invocation.values["Rows"] = 1
        recorder.write(invocation, 200, identity, recorder.request_id())

    try:
        return min(timeit.repeat(one, number=number, repeat=5)) / number * 1e6
    finally:
        os.close(fd)


def measure(rounds: int, count: int, warmup: int) -> dict:
    model = prepare(ROOT / "build" / "bench" / "models", ("example",))["example"]
    bodies = [line + b"\n" for line in csv_lines(rows(model, 200))]
    arms = {"on": "true", "off": "false"}
    with tempfile.TemporaryDirectory(prefix="metrics-cost-") as logs:
        servers = {arm: ServeProcess({"SM_MODEL_DIR": str(model.model_dir), "SERVE_METRICS": value, **DEPLOY},
                                     Path(logs) / f"{arm}.log").wait_ready() for arm, value in arms.items()}
        clients = {arm: Client(server.port) for arm, server in servers.items()}
        window = machine.Window()
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        round_p50: dict[str, list[float]] = {arm: [] for arm in arms}
        try:
            for client in clients.values():
                client.timed(bodies, warmup)
            for number in range(rounds):  # the arms take turns every BLOCK requests, so that load drifts hit both
                taken: dict[str, list[float]] = {arm: [] for arm in arms}
                for block in range(max(1, count // BLOCK)):
                    for arm in (list(arms) if (number + block) % 2 == 0 else list(reversed(arms))):
                        taken[arm] += clients[arm].timed(bodies, BLOCK)
                for arm in arms:
                    times[arm] += taken[arm]
                    round_p50[arm].append(statistics.median(taken[arm]) * 1e3)
            records = {arm: sum('"_aws"' in line for line in server.logs().splitlines())
                       for arm, server in servers.items()}
        finally:
            for client in clients.values():
                client.close()
            for server in servers.values():
                server.stop()
        load = window.close()
    ratios = [on / off for on, off in zip(round_p50["on"], round_p50["off"])]
    ratio = statistics.median(ratios)
    return {
        "what": "single-row p50 with SERVE_METRICS=true over false (example model, 1 worker each, keep-alive, "
                "the arms alternating every 50 requests)",
        "machine": {"cpu": machine.cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(), **load},
        "rounds": rounds, "requests_per_round": count,
        "on": summary_ms(times["on"]), "off": summary_ms(times["off"]),
        "round_p50_ms": {arm: [round(v, 4) for v in values] for arm, values in round_p50.items()},
        "ratio_per_round": [round(r, 4) for r in ratios],
        "ratio_p50": round(ratio, 4), "goal_ratio": GOAL_RATIO, "met": ratio <= GOAL_RATIO,
        "metric_records": records,
        "line_cost_us": {"on": round(line_cost_us(True), 2), "off": round(line_cost_us(False), 2)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 200 requests (a check that it runs)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--requests", type=int, default=None, help="requests per arm per round")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 12)
    count = args.requests or (200 if args.quick else 2000)
    started = time.monotonic()
    result = measure(rounds, count, warmup=50)
    result["seconds"] = round(time.monotonic() - started, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"metrics on/off single-row p50: {result['ratio_p50']:.4f} (goal <= {GOAL_RATIO}; "
          f"on {result['on']['p50_ms']:.3f} ms, off {result['off']['p50_ms']:.3f} ms; {result['machine']['cpu']}, "
          f"others used {result['machine']['others_cores']} cores; in-process line {result['line_cost_us']} us) "
          f"-> {OUT.relative_to(ROOT)}")
    if result["metric_records"]["on"] < rounds * count or result["metric_records"]["off"]:
        raise SystemExit(f"the arms did not write what they should: {result['metric_records']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
