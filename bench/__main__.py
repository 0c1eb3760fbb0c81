"""`python -m bench [--quick] [--busy]`: every benchmark, printed, in build/bench/report.json and report.png.

Systems: ours (CSV and JSON), MLServer (REST V2; its venv is made under build/peers/ on first use), the naive
bring-your-own baseline, the lean naive one (bench/baselines/lean_byo.py) and the in-process floor, interleaved; then
the first request after /ping 200 against the steady p50 (XGBoost and PAT-S, a fresh server per repeat, 9 by
default and with --quick: --first-repeats; bench.first_request); then PAT against the authors' Keras encoder
(bench.keras_peer; its venv is made on first use too). Issue 20's ratio goals are printed with the CPU model and its
bfloat16 flags. It prints how long it will take before starting, scaled by the load average per CPU. --busy keeps one
core busy with a background process throughout.
Needs wrk (`apt-get install wrk`), matplotlib and pandas (`pip install -e .[bench]`); Docker figures are skipped with
a reason when no engine or image is there (`./build.sh build xgboost`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import first_request as first_request_bench, load, machine, mlserver_peer, paired, report, stages, suite, \
    systems, venvs
from bench.mlserver_peer import MLServer
from bench.models import prepare

ROOT = Path(__file__).resolve().parents[1]
OWN_FILES = {"report.json", "report-busy.json"}
KERAS_FILE = "pat-keras.json"  # what `python -m bench.pat --peer keras` writes; measured here too unless --no-keras
FIRST_FILE = "first-request.json"  # what `python -m bench.first_request` writes; measured here too


def keras_command(plan: suite.Plan, path: Path) -> list[str]:
    """`python -m bench.pat --peer keras` for this plan (its own process: ours is timed with the image's wait policy,
    which libgomp reads only when torch loads)."""
    quick = ["--quick"] if plan.keras_budget_s < 3.0 else []  # 1 s per side and figure instead of 3
    return [sys.executable, "-m", "bench.pat", "--peer", "keras", "--variants",
            *[variant.rpartition("-")[2] for variant in plan.keras_variants], "--batches", "1", "8", *quick,
            "--repeats", str(plan.repeats), "--out", str(path)]


def measure_keras(plan: suite.Plan, out: Path) -> dict:
    """PAT-S/M/L against the authors' Keras encoder (fidelity, batch 1 and 8), run as `bench.pat --peer keras`."""
    from bench.keras_peer import with_serving_wait_policy

    path = out / KERAS_FILE
    try:
        subprocess.run(keras_command(plan, path), env=with_serving_wait_policy(dict(os.environ)), check=True)
        return json.loads(path.read_text())
    except (OSError, ValueError, subprocess.CalledProcessError) as error:  # e.g. no package index for the venv
        print(f"bench: Keras skipped: {error}", flush=True)
        return {"skipped": str(error)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, example model only, shorter phases")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3, quick 1)")
    parser.add_argument("--models", nargs="+", choices=["example", "large"], help="default: both (quick: example)")
    parser.add_argument("--no-docker", action="store_true", help="skip the container figures")
    parser.add_argument("--no-peers", action="store_true", help="skip MLServer and Keras (no venv is made)")
    parser.add_argument("--no-keras", action="store_true", help="skip PAT against the authors' Keras encoder")
    parser.add_argument("--no-naive", action="store_true",
                        help="skip the first naive baseline (issue 20's goals are taken against the lean one)")
    parser.add_argument("--no-first-request", action="store_true",
                        help="skip the first request after /ping against the steady p50 (XGBoost and PAT)")
    parser.add_argument("--no-pat", action="store_true", help="measure the first request on XGBoost only")
    parser.add_argument("--first-repeats", type=int,
                        help=f"fresh servers per family for the first request (default {first_request_bench.REPEATS}, "
                             "--quick too)")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with a background process")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--xgboost-image", default="xgboost-inference:latest")
    parser.add_argument("--pat-image", default="pat-inference:latest")
    args = parser.parse_args(argv)
    if not load.available():
        print("bench: wrk is needed for the concurrent load (apt-get install wrk)", file=sys.stderr)
        return 2
    plan = suite.Plan.quick() if args.quick else suite.Plan()
    given = (("repeats", args.repeats), ("models", tuple(args.models or ())),
             ("first_request_repeats", args.first_repeats))
    plan = dataclasses.replace(plan, **{k: v for k, v in given if v})
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    kinds = [systems.Ours, *([] if args.no_naive else [systems.Naive]), systems.LeanNaive] + (
        [] if args.no_peers else [MLServer])
    keras = not (args.no_peers or args.no_keras)
    probe = machine.cpu_probe_s()
    first = not args.no_first_request
    estimate = suite.estimate_s(plan, kinds, not args.no_docker, keras, probe, first, first and not args.no_pat)
    print(f"bench: about {estimate / 60:.0f} minutes at the present load average ({os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs; {plan.repeats} repeats of "
          f"{', '.join(plan.models)}; {', '.join(kind.name for kind in kinds)}, floor"
          f"{f', first request ({plan.first_request_repeats} fresh servers each)' if first else ''}"
          f"{'' if args.no_docker else ', containers'}"
          f"{', Keras: ' + ' '.join(plan.keras_variants) if keras else ''}"
          f"), plus any one-time venv or model training", flush=True)
    started = time.perf_counter()
    background = machine.BusyCore() if args.busy else contextlib.nullcontext()
    with background:
        whole = machine.Window()
        load_before = os.getloadavg()
        models = prepare(args.out / "models", plan.models)
        peers = "--no-peers" if args.no_peers else "measured"
        if not args.no_peers:
            try:
                venvs.ensure("mlserver", mlserver_peer.pins())  # once, before the clock of the first repeat
            except (OSError, RuntimeError, subprocess.CalledProcessError) as error:  # e.g. no package index
                peers = f"MLServer skipped: {error}"
                print(f"bench: {peers}", flush=True)
                kinds.remove(MLServer)
        measured = time.perf_counter()
        runs = suite.interleaved(models, plan, log_dir, kinds)
        # their logs apart: the stage split reads the interleaved servers' logs
        single_pairs = {name: paired.measure(model, suite.Payloads.make(model), kinds, log_dir / "paired",
                                             plan.paired_rounds, plan.paired_burst) for name, model in models.items()}
        primary = models["example"] if "example" in models else next(iter(models.values()))
        first_request = {"skipped": "--no-first-request"}
        if first:
            first_request = first_request_bench.run(primary, plan.first_request_repeats, plan.first_request_steady,
                                                     args.out, log_dir, pat=not args.no_pat)
        containers = {"skipped": "--no-docker"}
        if not args.no_docker:
            pat_dir = ROOT / "build" / "models" / "pat"
            containers = suite.containers(primary, plan, pat_dir if pat_dir.is_dir() else None,
                                          {"xgboost": args.xgboost_image, "pat": args.pat_image})
        pat_vs_keras = {"skipped": "--no-peers" if args.no_peers else "--no-keras"}
        if keras:
            pat_vs_keras = measure_keras(plan, args.out)
        cpu = whole.close()
    took = time.perf_counter() - measured
    import xgboost

    summary = report.summarize(runs)
    for name, figures in single_pairs.items():
        summary[name].update(paired.summarize(figures))
    cpu_info = machine.cpu_info()
    result = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m bench" + " ".join(["", *(argv if argv is not None else sys.argv[1:])]).rstrip(),
        "duration_s": {"estimated": round(estimate), "measured": round(took), "cpu_probe_s": round(probe, 4),
                       "one_time_setup": round(measured - started)},
        "plan": dataclasses.asdict(plan),
        "machine": {"cpu_model": cpu_info["model"], "cpu_info": cpu_info, "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "xgboost": xgboost.__version__, "background_busy_core": args.busy,
                    "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpu": cpu,
                    "summary": f"{os.cpu_count()} x {cpu_info['summary']}; other processes used "
                               f"{cpu['others_cores']:.2f} cores on average"
                               + (" (one of them a busy loop we started)" if args.busy else "")},
        "peers": peers,
        "models": {name: model.description for name, model in models.items()},
        "summary": summary,
        "targets": report.targets(summary, containers),
        "goals": report.ratio_goals(summary, first_request if "skipped" not in first_request else None),
        "first_request": first_request,
        "containers": containers,
        "pat_vs_keras": pat_vs_keras,
        "runs": runs,
        "paired_single_row": single_pairs,
        "stages": stages.split(list(log_dir.glob("*.log"))),  # our servers' own metric records, per log
        "other_benchmarks": report.other_benchmarks(
            args.out, OWN_FILES | ({KERAS_FILE} if keras else set()) | ({FIRST_FILE} if first else set())),
    }
    name = "report-busy" if args.busy else "report"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    report.plot(result, args.out / f"{name}.png")
    if result["stages"]:
        stages.plot(result["stages"], args.out / f"{name}-stages.png")
    report.print_report(result)
    print(f"\nwrote {args.out / name}.json and .png; measuring took {took / 60:.1f} min "
          f"(estimated {estimate / 60:.1f}), one-time setup {(measured - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
