"""Benchmark: actigraphy metrics (models/pat/actigraphy.py) on one week and on 100 weeks.

Input is real minute counts: pyActigraphy's example_04 recording from the test fixtures,
tiled to length. Prints the figures and writes build/bench/actigraphy.json.

pyActigraphy 1.2.2 (GPL, never a project dependency) is timed on the same counts when it
imports here, or when --pyactigraphy-python names an interpreter that has it (the throwaway
venv of tests/fixtures/pyactigraphy/make_fixtures.py); otherwise the report says it is absent.
Its timings cover the same measures: IS, IV, L5, M10, RA (binarized), Sadeh, CK('mean').

    python -m bench.actigraphy [--pyactigraphy-python /tmp/pyact/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np

from models.pat.actigraphy import compute_metrics

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "pyactigraphy" / "example_04.json"
OUT = ROOT / "build" / "bench" / "actigraphy.json"
WEEK = 7 * 1440
SIZES = {"1 week": WEEK, "100 weeks": 100 * WEEK}
REPEATS = {"1 week": 20, "100 weeks": 3}

# Runs under the pyActigraphy interpreter: argv = AWD path, repeats; prints best seconds.
PYACTIGRAPHY_TIMER = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import pyActigraphy
raw = pyActigraphy.io.read_raw_awd(sys.argv[1])
def run():
    raw.IS(); raw.IV(); raw.L5(); raw.M10(); raw.RA()
    raw.Sadeh(); raw.CK(settings="mean")
best = float("inf")
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter(); run(); best = min(best, time.perf_counter() - t0)
print(json.dumps({"seconds": best, "version": pyActigraphy.__version__}))
"""


def recording(minutes: int) -> tuple[np.ndarray, datetime]:
    fixture = json.loads(FIXTURE.read_text())
    counts = np.array(fixture["counts"], dtype=float)
    return np.resize(counts, minutes), datetime.fromisoformat(fixture["start"])


def best_seconds(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - t0)
    return best


def peak_mib(function) -> float:
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def write_awd(path: Path, counts: np.ndarray, start: datetime) -> None:
    header = ["bench", start.strftime("%d-%b-%Y"), start.strftime("%H:%M"), "4", "00", "V000000", "X"]
    path.write_text("\n".join(header + [str(int(c)) for c in counts]) + "\n")


def time_pyactigraphy(python: str | None, counts, start, repeats: int) -> dict:
    if python is None:
        try:
            import pyActigraphy  # noqa: F401  (GPL: optional, never a dependency)
        except ImportError:
            return {"absent": "pyActigraphy is not installed here and no --pyactigraphy-python"}
        python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        awd = Path(tmp) / "bench.AWD"
        write_awd(awd, counts, start)
        done = subprocess.run([python, "-c", PYACTIGRAPHY_TIMER, str(awd), str(repeats)],
                              capture_output=True, text=True, check=False)
    if done.returncode:
        return {"absent": f"pyActigraphy run failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description="actigraphy metrics benchmark")
    parser.add_argument("--pyactigraphy-python", help="interpreter with pyActigraphy 1.2.2")
    args = parser.parse_args()

    results = {"machine": platform.processor() or platform.machine(),
               "python": platform.python_version(), "numpy": np.__version__, "runs": {}}
    for label, minutes in SIZES.items():
        counts, start = recording(minutes)
        metrics = partial(compute_metrics, counts, start)
        run = {"minutes": minutes, "seconds": best_seconds(metrics, REPEATS[label]),
               "peak_mib": peak_mib(metrics)}
        reference = time_pyactigraphy(args.pyactigraphy_python, counts, start, REPEATS[label])
        run["pyactigraphy"] = reference
        if "seconds" in reference:
            run["speedup_vs_pyactigraphy"] = reference["seconds"] / run["seconds"]
        results["runs"][label] = run
        against = (f"pyActigraphy {reference['seconds'] * 1e3:9.1f} ms "
                   f"({run['speedup_vs_pyactigraphy']:.0f}x)" if "seconds" in reference
                   else f"pyActigraphy: {reference['absent']}")
        print(f"{label:>10} ({minutes:>9,} min): {run['seconds'] * 1e3:8.1f} ms, "
              f"peak {run['peak_mib']:6.1f} MiB | {against}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
