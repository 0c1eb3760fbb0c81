"""`python -m bench [--quick]`: every benchmark, printed, in build/bench/report.json and build/bench/report.png.

Default run: 3 interleaved repeats of both models (~8-10 minutes on 2 cores); --quick: one repeat, example model,
a 5,000-request load (~2 minutes). Needs wrk (`apt-get install wrk`), matplotlib and pandas (`pip install -e
.[bench]`); Docker figures are skipped with a reason when no engine or image is there (`./build.sh build xgboost`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
from pathlib import Path

from bench import load, machine, report, suite
from bench.models import prepare

ROOT = Path(__file__).resolve().parents[1]
OWN_FILES = {"report.json"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, example model only, shorter phases")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 3, quick 1)")
    parser.add_argument("--models", nargs="+", choices=["example", "large"], help="default: both (quick: example)")
    parser.add_argument("--no-docker", action="store_true", help="skip the container figures")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--xgboost-image", default="xgboost-inference:latest")
    parser.add_argument("--pat-image", default="pat-inference:latest")
    args = parser.parse_args(argv)
    if not load.available():
        print("bench: wrk is needed for the concurrent load (apt-get install wrk)", file=sys.stderr)
        return 2
    plan = suite.Plan.quick() if args.quick else suite.Plan()
    plan = dataclasses.replace(plan, **{k: v for k, v in (("repeats", args.repeats), ("models", tuple(args.models or ())))
                                        if v})
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = args.out / "logs"
    log_dir.mkdir(exist_ok=True)
    whole = machine.Window()
    load_before = os.getloadavg()
    models = prepare(args.out / "models", plan.models)
    runs = suite.interleaved(models, plan, log_dir)
    containers = {"skipped": "--no-docker"}
    if not args.no_docker:
        pat_dir = ROOT / "build" / "models" / "pat"
        containers = suite.containers(models["example"] if "example" in models else next(iter(models.values())),
                                      plan, pat_dir if pat_dir.is_dir() else None,
                                      {"xgboost": args.xgboost_image, "pat": args.pat_image})
    cpu = whole.close()
    import xgboost

    summary = report.summarize(runs)
    result = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m bench" + (" --quick" if args.quick else ""),
        "plan": dataclasses.asdict(plan),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "xgboost": xgboost.__version__,
                    "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpu": cpu,
                    "summary": f"{os.cpu_count()} CPUs; other processes used {cpu['others_cores']:.2f} cores on "
                               f"average during the run"},
        "models": {name: model.description for name, model in models.items()},
        "summary": summary,
        "targets": report.targets(summary, containers),
        "containers": containers,
        "runs": runs,
        "other_benchmarks": report.other_benchmarks(args.out, OWN_FILES),
    }
    (args.out / "report.json").write_text(json.dumps(result, indent=1) + "\n")
    report.plot(result, args.out / "report.png")
    report.print_report(result)
    print(f"\nwrote {args.out / 'report.json'} and {args.out / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
