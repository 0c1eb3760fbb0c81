"""The in-process floor: parse + `Booster.inplace_predict` on one thread, no HTTP.

Single rows are parsed field by field with `float()` (a few microseconds); large bodies with pandas' C CSV reader,
the fastest CSV parser measured on this machine. Run standalone: `python -m bench.baselines.floor MODEL_DIR`.
"""

from __future__ import annotations

import io
import statistics
import sys
import time

import numpy as np
import pandas as pd
import xgboost as xgb


def parse_row(line: bytes) -> np.ndarray:
    return np.array([[float(field) if field else np.nan for field in line.split(b",")]], dtype=np.float64)


def parse_csv(body: bytes) -> np.ndarray:
    return pd.read_csv(io.BytesIO(body), header=None, dtype=np.float64).to_numpy()


def single_row(booster: xgb.Booster, lines: list[bytes], calls: int, warmup: int = 200) -> list[float]:
    """Seconds per call for parse + predict of one row, cycling through distinct rows."""
    times = []
    for i in range(warmup + calls):
        line = lines[i % len(lines)]
        start = time.perf_counter()
        booster.inplace_predict(parse_row(line))
        times.append(time.perf_counter() - start)
    return times[warmup:]


def large_body(booster: xgb.Booster, body: bytes, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        booster.inplace_predict(parse_csv(body))
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str]) -> None:
    from pathlib import Path

    from bench.models import BenchModel, csv_body, csv_lines, rows

    model_dir = Path(argv[0])
    booster = xgb.Booster(model_file=str(model_dir / "xgboost-model"))
    booster.set_param({"nthread": 1})
    model = BenchModel(model_dir.name, model_dir, booster.num_features(), "")
    x = rows(model, 10000)
    one = single_row(booster, csv_lines(x[:2000]), 3000)
    big = large_body(booster, csv_body(x), 5)
    print(f"1 row: p50 {statistics.median(one) * 1e3:.3f} ms; 10,000 rows: min {min(big) * 1e3:.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
