"""Benchmark models and request bodies, made once and cached under build/bench/models/.

- `example`: the README's risk model (models.xgboost.examples): binary, 200 trees of depth 6, 40 features.
- `large`: regression, 1000 trees of depth 8, 100 features (trained once: 1-3 minutes on 2 cores).

Both are saved as SageMaker's built-in algorithm saves them (`xgboost-model`, UBJSON, no feature names), so the
naive baseline can serve them too. Bodies are headerless CSV (`%.7g`, empty field = missing), as clients send them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

from models.xgboost import examples

MAX_BODY_BYTES = 6 * 1024 * 1024


@dataclass(frozen=True)
class BenchModel:
    name: str
    model_dir: Path
    num_features: int
    description: str

    @property
    def booster_path(self) -> Path:
        return self.model_dir / "xgboost-model"

    def booster(self) -> xgb.Booster:
        booster = xgb.Booster(model_file=str(self.booster_path))
        booster.set_param({"nthread": 1})
        return booster


def _save(booster: xgb.Booster, model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    booster.feature_names = None
    tmp = model_dir / "xgboost-model.tmp"
    tmp.write_bytes(booster.save_raw("ubj"))
    tmp.replace(model_dir / "xgboost-model")


def _train_large(rows: int = 6000, seed: int = 3) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 100))
    weights = rng.normal(size=100) * (rng.random(100) < 0.6)
    y = x @ weights + 3 * np.sin(x[:, 0] * x[:, 1]) + rng.normal(scale=5, size=rows)
    params = {"objective": "reg:squarederror", "max_depth": 8, "eta": 0.05, "tree_method": "hist", "nthread": 2,
              "seed": seed}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=1000)


def prepare(root: Path, names: tuple[str, ...] = ("example", "large")) -> dict[str, BenchModel]:
    found = {}
    for name in names:
        model_dir = root / name
        if not (model_dir / "xgboost-model").exists():
            print(f"bench: training the {name} model into {model_dir} (once)", flush=True)
            booster = examples.train("risk")[0] if name == "example" else _train_large()
            _save(booster, model_dir)
        if name == "example":
            found[name] = BenchModel(name, model_dir, len(examples.FEATURES), "binary, 200 trees depth 6, 40 features")
        else:
            found[name] = BenchModel(name, model_dir, 100, "regression, 1000 trees depth 8, 100 features")
    return found


def rows(model: BenchModel, count: int, seed: int = 11) -> np.ndarray:
    """Realistic rows: the example's synthetic patients (3 % missing), or normal noise for the large model."""
    if model.num_features == len(examples.FEATURES):
        return examples.synthetic_patients(count, seed)
    x = np.random.default_rng(seed).normal(size=(count, model.num_features))
    x[np.random.default_rng(seed + 1).random(x.shape) < 0.03] = np.nan
    return x


def csv_lines(x: np.ndarray) -> list[bytes]:
    return [",".join("" if np.isnan(v) else "%.7g" % v for v in row).encode() for row in x]


def csv_body(x: np.ndarray) -> bytes:
    return b"\n".join(csv_lines(x)) + b"\n"


def body_under(model: BenchModel, limit: int = MAX_BODY_BYTES) -> bytes:
    """The largest CSV body of whole rows that fits under the default 6 MiB payload limit."""
    lines = csv_lines(rows(model, 40000, seed=13))
    total, kept = 0, []
    for line in lines:
        if total + len(line) + 1 > limit:
            break
        kept.append(line)
        total += len(line) + 1
    return b"\n".join(kept) + b"\n"


def parse_exact(body: bytes) -> np.ndarray:
    """Reference parse: Python's correctly rounded float() per field, empty = NaN (for checking exactness)."""
    return np.array([[float(v) if v.strip() else np.nan for v in line.split(b",")]
                     for line in body.splitlines() if line.strip()], dtype=np.float64)
