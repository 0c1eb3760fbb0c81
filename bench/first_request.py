"""The first request after /ping turns 200, against the steady single-row p50: a fresh server per repeat, for XGBoost
and PAT.

SageMaker routes traffic to a container as soon as /ping answers 200, so a worker that loads lazily, or runs its first
prediction cold, makes the first clients wait. Each repeat starts a new server and waits for /ping 200; then one
request per worker, each on a new connection (the first of them is "the first request"); then `warmup` + `steady`
requests on one keep-alive connection, whose p50 is the steady p50. Goal: first / steady p50 at most 2.

Controls on the same warm server, reported beside the goal as explanation (they do not change what the goal
measures): requests each on a new connection, back to back (what a warm server's first request on a connection
costs), and requests on the kept connection each after an idle gap (the steady p50 is taken back to back, so this
shows what the machine's wake-up from idle adds, server warm). The ratio is noisy from one fresh server to the next:
9 repeats by default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import orjson

from bench import systems
from bench.client import Client, summary_ms
from bench.models import BenchModel, csv_lines, rows

GOAL = 2.0
PAT_VARIANT = "PAT-S"  # the smallest encoder: what is measured is the serving path's cold start, not the encoder
STEADY = (300, 30)  # keep-alive requests for the steady p50: XGBoost's, PAT's
REPEATS = 9  # fresh servers per family
NEW_CONNECTIONS = 10  # warm-server control: requests each on a new connection, back to back
IDLE_GAPS_S = (0.01, 0.1)  # warm-server control: seconds idle before each request on the kept connection
IDLE_REQUESTS = 5  # per gap


@dataclass(frozen=True)
class Case:
    family: str
    start: Callable[[], systems.Server]  # a fresh server, /ping already 200
    bodies: list[bytes]  # the first request sends the first; the steady ones cycle through them
    content_type: str  # sent as Content-Type and Accept
    steady: int  # keep-alive requests timed for the steady p50
    warmup: int = 20


def _post(port: int, case: Case, body: bytes) -> tuple[float, float]:
    """Seconds to connect and seconds for the request, on a new connection; any non-200 raises. The request is timed
    apart from the TCP connect, as the steady p50 is taken on a kept connection (SageMaker's front end keeps its
    connections): what is compared is the request's own cost, cold against warm."""
    client = Client(port, case.content_type, case.content_type)
    try:
        start = time.perf_counter()
        client.connection.connect()
        connected = time.perf_counter()
        status, _ = client.post(body)
        elapsed = time.perf_counter() - connected
    finally:
        client.close()
    if status != 200:
        raise RuntimeError(f"{case.family}: the first requests answered {status}")
    return connected - start, elapsed


def _control(seconds: list[float], steady_p50_ms: float) -> dict:
    median_ms = float(np.median(seconds)) * 1e3
    return {"p50_ms": median_ms, "ratio": median_ms / steady_p50_ms, "count": len(seconds)}


def _after_idle(client: Client, body: bytes, gap_s: float, count: int) -> list[float]:
    """Seconds per request on the kept connection, each sent after `gap_s` idle."""
    times = []
    for _ in range(count):
        time.sleep(gap_s)
        times.extend(client.timed([body], 1))
    return times


def measure(case: Case, workers: int = systems.WORKERS) -> dict:
    """One repeat: a fresh server, its first `workers` requests, the steady p50, then the controls on the warm
    server (new connections; the kept connection after idle gaps)."""
    server = case.start()
    try:
        connects, firsts = zip(*[_post(server.port, case, case.bodies[i % len(case.bodies)])
                                 for i in range(workers)])
        client = Client(server.port, case.content_type, case.content_type)
        try:
            steady = summary_ms(client.timed(case.bodies, case.steady, warmup=case.warmup))
            new_connections = [_post(server.port, case, case.bodies[i % len(case.bodies)])[1]
                               for i in range(NEW_CONNECTIONS)]
            idle = {gap: _after_idle(client, case.bodies[0], gap, IDLE_REQUESTS) for gap in IDLE_GAPS_S}
        finally:
            client.close()
    finally:
        server.stop()
    first_ms = [t * 1e3 for t in firsts]
    return {"start_s": server.start_s, "first_ms": first_ms[0], "first_per_connection_ms": first_ms,
            "connect_ms": [t * 1e3 for t in connects],
            "steady": steady, "ratio": first_ms[0] / steady["p50_ms"],
            "warm_new_connection": _control(new_connections, steady["p50_ms"]),
            "after_idle": [{"gap_s": gap, **_control(times, steady["p50_ms"])} for gap, times in idle.items()]}


def xgboost_case(model_dir: Path, bodies: list[bytes], log_dir: Path, steady: int) -> Case:
    return Case("xgboost", lambda: systems.Ours(model_dir, log_dir), bodies, "text/csv", steady)


def pat_artifact(model_dir: Path, variant: str = PAT_VARIANT) -> Path:
    """A PAT artifact with random weights and heads (made once; torch is imported only here)."""
    if not (model_dir / "config.json").exists():
        from bench.pat import artifact
        from models.pat.artifact import ArtifactConfig, save_artifact

        model = artifact(variant)
        save_artifact(model_dir, model.encoder, model.heads, ArtifactConfig(variant=variant))
    return model_dir


def pat_body(seed: int = 5) -> bytes:
    """One week of activity counts as the JSON clients send (every output: embedding, scores, saliency, metrics)."""
    from models.pat.runner import WEEK_MINUTES

    rng = np.random.default_rng(seed)
    week = np.round(rng.gamma(1.2, 120.0, WEEK_MINUTES) * (rng.random(WEEK_MINUTES) > 0.2))
    return orjson.dumps({"instances": [week.tolist()]})


def pat_case(model_dir: Path, log_dir: Path, steady: int) -> Case:
    return Case("pat", lambda: systems.OursPat(model_dir, log_dir), [pat_body()], "application/json", steady,
                warmup=5)


def _spread(ratios: list[float]) -> dict:
    return {"median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios), "n": len(ratios)}


def summarize_controls(runs: list[dict]) -> dict:
    """Median [min-max] over the repeats of each warm-server control's ratio to the steady p50; empty when the runs
    have no controls."""
    if not runs or not all("warm_new_connection" in run for run in runs):
        return {}
    gaps: dict[float, list[float]] = {}
    for run in runs:
        for idle in run["after_idle"]:
            gaps.setdefault(idle["gap_s"], []).append(idle["ratio"])
    return {"warm_new_connection": _spread([run["warm_new_connection"]["ratio"] for run in runs]),
            "after_idle": [{"gap_s": gap, **_spread(ratios)} for gap, ratios in sorted(gaps.items())]}


def describe_controls(controls: dict) -> str:
    """One line: the controls' median ratios to the steady p50 (empty when there are none)."""
    if not controls:
        return ""
    figures = [f"new connection {controls['warm_new_connection']['median']:.2f}x"] + [
        f"after {idle['gap_s'] * 1e3:g} ms idle {idle['median']:.2f}x" for idle in controls["after_idle"]]
    return f"warm-server controls / steady p50: {', '.join(figures)}"


def summarize(runs: list[dict]) -> dict:
    """Median [min-max] of the per-repeat ratios, whether the median meets the goal, and the controls' medians."""
    ratios = [run["ratio"] for run in runs]
    if not ratios:
        return {"goal": GOAL, "met": None}
    spread = _spread(ratios)
    return {**spread, "goal": GOAL, "met": spread["median"] <= GOAL, "first_ms": [run["first_ms"] for run in runs],
            "steady_p50_ms": [run["steady"]["p50_ms"] for run in runs], "controls": summarize_controls(runs)}


def run(model: BenchModel, repeats: int, steady: tuple[int, int], out: Path, log_dir: Path, pat: bool = True) -> dict:
    """The first request after /ping 200 against the steady p50, on a fresh server per repeat (XGBoost on `model`,
    then PAT-S on the CPU), interleaved."""
    xgboost_steady, pat_steady = steady
    cases = [xgboost_case(model.model_dir, csv_lines(rows(model, 500)), log_dir, xgboost_steady)]
    found: dict = {"xgboost": {"model": model.name, "goal": GOAL, "runs": []},
                   "pat": {"model": PAT_VARIANT, "goal": GOAL}}
    if not pat:
        found["pat"]["skipped"] = "--no-pat"
    else:
        try:
            pat_dir = pat_artifact(out / "models" / "pat-s")
        except ImportError as error:  # torch is in the pat extra
            found["pat"]["skipped"] = f"PAT not installed: {error}"
        else:
            cases.append(pat_case(pat_dir, log_dir, pat_steady))
            found["pat"]["runs"] = []
    for repeat in range(repeats):
        for case in cases:
            print(f"bench: repeat {repeat + 1}/{repeats}, first request, {case.family}", flush=True)
            found[case.family]["runs"].append(measure(case))
    for entry in found.values():
        if "runs" in entry:
            entry.update(summarize(entry["runs"]))
    return found


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.first_request [--repeats 9] [--no-pat]`: this part of `python -m bench` alone, printed and
    written to build/bench/first-request.json (folded into `python -m bench`'s report)."""
    import argparse
    import json

    from bench.models import prepare

    root = Path(__file__).resolve().parents[1] / "build" / "bench"
    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="fresh servers per family")
    parser.add_argument("--no-pat", action="store_true")
    parser.add_argument("--out", type=Path, default=root / "first-request.json")
    args = parser.parse_args(argv)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    model = prepare(root / "models", ("example",))["example"]
    found = run(model, args.repeats, STEADY, root, root / "logs", pat=not args.no_pat)
    for family, entry in found.items():
        if "median" in entry:
            print(f"{family}: first request {', '.join(f'{v:.1f}' for v in entry['first_ms'])} ms, steady p50 "
                  f"{', '.join(f'{v:.2f}' for v in entry['steady_p50_ms'])} ms: {entry['median']:.2f}x "
                  f"[{entry['min']:.2f}-{entry['max']:.2f}] (goal <= {GOAL}: {'met' if entry['met'] else 'NOT met'})")
            if entry["controls"]:
                print(f"{family}: {describe_controls(entry['controls'])} "
                      f"(medians over {entry['n']} repeat{'s' * (entry['n'] != 1)})")
        else:
            print(f"{family}: {entry.get('skipped')}")
    args.out.write_text(json.dumps({"command": "python -m bench.first_request", **found}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
