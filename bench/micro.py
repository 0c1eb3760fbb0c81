"""The micro-benchmarks and exactness counts behind bench/PERFORMANCE.md's "What makes it fast", reproducible:

    python -m bench.micro [--hard-cases 400000] [--calls 20000]

1. CSV exactness on hard cases: decimal strings at and next to the halfway points between adjacent float64 values,
   long mantissas, tiny and huge exponents, both signs; each parsed by `serve.csv_codec.decode_csv` (the simdjson
   fast path, in 1,000-row chunks; not its field-by-field fallback) must equal Python's correctly rounded `float()`.
   Prints how many were checked and how many differed.
2. CSV parse time, fast path vs the field-by-field path (`field_by_field_rows`, which the fast one falls back to): one
   40-field row, and 10,000 rows with 3 % of fields missing (CPU time).
3. Single-row predict on the example model: `Booster.inplace_predict` vs `models.xgboost.fast_predict.predict` (the same
   C function, XGBoosterPredictFromDense, called directly), and the same row through `Booster.predict(DMatrix)`.

Writes build/bench/micro.json (folded into `python -m bench`'s report).
"""

from __future__ import annotations

import argparse
import decimal
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.models import csv_body, csv_lines, prepare, rows
from models.xgboost import fast_predict
from serve import csv_codec

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench" / "micro.json"


def hard_cases(count: int, seed: int = 1) -> list[str]:
    """Decimal strings that are hard to round: halfway points between neighbouring doubles and their neighbours."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < count:
        x = float(rng.choice([-1, 1]) * rng.lognormal(0, 8))
        if not np.isfinite(x) or x == 0:
            continue
        up = float(np.nextafter(x, np.inf))
        half = (x + up) / 2  # the double nearest the exact midpoint; its shortest repr is the tie case's neighbour
        with decimal.localcontext(prec=1200):  # exact: the decimal expansion of the midpoint, a rounding tie
            exact_mid = str((decimal.Decimal(x) + decimal.Decimal(up)) / 2)
        out += [repr(x), repr(up), repr(half), exact_mid, f"{x:.17g}", f"{x:.20e}", f"{x:.12g}",
                repr(-half), f"{x * 1e-300:.17g}", f"{x * 1e290:.17g}"]
    return [case for case in out if np.isfinite(float(case))][:count]


def check_hard_cases(count: int, width: int = 8) -> dict:
    cases = hard_cases(count - count % width)
    table = [cases[i:i + width] for i in range(0, len(cases), width)]
    body = "\n".join(",".join(row) for row in table).encode()
    parsed = csv_codec.vectorized_rows(body)  # the fast path itself: None means it handed the body to the slow one
    if parsed is None:
        raise RuntimeError("the hard cases left the fast path")
    expected = np.array([[float(v) for v in row] for row in table])
    same = (parsed == expected) | (np.isnan(parsed) & np.isnan(expected))
    return {"checked": int(same.size), "differ": int(same.size - same.sum())}


def _timings(function, runs: int, clock) -> list[float]:
    times = []
    for _ in range(runs):
        start = clock()
        function()
        times.append(clock() - start)
    return times


def _cpu_ms(function, repeats: int) -> float:
    return min(_timings(function, repeats, time.process_time)) * 1e3


def _wall_us(function, calls: int) -> float:
    return statistics.median(_timings(function, calls, time.perf_counter)) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hard-cases", type=int, default=400000)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    model = prepare(ROOT / "build" / "bench" / "models", ("example",))["example"]
    booster = model.booster()
    x = rows(model, 10000)
    line, body = csv_lines(x[:1])[0], csv_body(x)
    lines = body.decode().strip().split("\n")
    exact = check_hard_cases(args.hard_cases)
    print(f"CSV hard cases: {exact['checked']:,} fields checked against float(), {exact['differ']} differ")
    one = csv_codec.decode_csv(line, {})
    import xgboost as xgb

    result = {
        "csv_hard_cases": exact,
        "parse_one_row_us": {"fast": _wall_us(lambda: csv_codec.decode_csv(line, {}), args.calls),
                             "field_by_field": _wall_us(lambda: csv_codec.field_by_field_rows([line.decode()]),
                                                        args.calls)},
        "parse_10k_rows_cpu_ms": {"fast": _cpu_ms(lambda: csv_codec.decode_csv(body, {}), 5),
                                  "field_by_field": _cpu_ms(lambda: csv_codec.field_by_field_rows(lines), 5)},
        "predict_one_row_us": {
            "fast_predict.predict (XGBoosterPredictFromDense)": _wall_us(
                lambda: fast_predict.predict(booster, one), args.calls),
            "Booster.inplace_predict": _wall_us(lambda: booster.inplace_predict(one), args.calls),
            "Booster.predict(DMatrix)": _wall_us(lambda: booster.predict(xgb.DMatrix(one)), args.calls // 40)},
        "same_bits": bool(np.array_equal(fast_predict.predict(booster, one), booster.inplace_predict(one))),
        "xgboost": xgb.__version__,
    }
    for key in ("parse_one_row_us", "parse_10k_rows_cpu_ms", "predict_one_row_us"):
        print(f"{key}: " + ", ".join(f"{k} {v:.1f}" for k, v in result[key].items()))
    print(f"fast_predict.predict and inplace_predict give the same bits: {result['same_bits']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python -m bench.micro", **result}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
