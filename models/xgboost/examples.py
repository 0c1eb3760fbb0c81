"""Train the three example models on synthetic clinical-looking data and package each as SageMaker does.

    python -m models.xgboost.examples --out build/models/xgboost

writes, per model (risk: binary 30-day readmission; treatment: 3-class therapy choice; outcome: length of stay),
a model directory `<out>/<name>/` holding `xgboost-model` (UBJSON, as the built-in algorithm writes it) and
`metadata.json` (feature names, class labels, model version), plus `<out>/<name>.tar.gz` for `ModelDataUrl`, and
`<out>/<name>.sample.csv` and `<out>/<name>.sample.json` (five rows to send, as CSV and as named-feature JSON), and
`<out>/<name>.baseline.csv`, the training rows' feature columns with a header (Model Monitor's data-quality baseline,
build.sh monitor). The data are random: no real patient is in them.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import numpy as np
import xgboost as xgb

VITALS = ["age", "bmi", "systolic_bp", "diastolic_bp", "heart_rate", "resp_rate", "temperature_c", "spo2"]
LABS = ["hba1c", "glucose", "ldl", "hdl", "triglycerides", "creatinine", "egfr", "sodium", "potassium",
        "hemoglobin", "wbc", "platelets", "albumin", "bilirubin", "alt", "ast", "crp", "troponin", "bnp", "inr"]
HISTORY = ["sex_female", "smoker", "diabetes", "hypertension", "ckd", "copd", "heart_failure", "prior_admissions",
           "ed_visits_12m", "medication_count", "days_since_discharge", "lives_alone"]
FEATURES = VITALS + LABS + HISTORY  # 40 features
TREATMENTS = ["lifestyle", "oral_agent", "insulin"]


def synthetic_patients(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES)))
    x[:, 0] = rng.uniform(18, 95, rows)  # age
    x[:, 1] = rng.normal(28, 6, rows)  # bmi
    x[:, len(VITALS) + len(LABS):] = rng.integers(0, 3, size=(rows, len(HISTORY)))
    x[rng.random(x.shape) < 0.03] = np.nan  # labs and vitals go missing in real records
    return x


def _signal(x: np.ndarray, seed: int) -> np.ndarray:
    weights = np.random.default_rng(seed).normal(size=x.shape[1])
    z = np.nan_to_num((x - np.nanmean(x, axis=0)) / np.nanstd(x, axis=0))
    return z @ weights / np.sqrt(x.shape[1]) + 0.5 * np.sin(z[:, 0] * z[:, 1])


def training_features(rows: int = 4000, seed: int = 7) -> np.ndarray:
    return synthetic_patients(rows, seed)


def train(name: str, rows: int = 4000, rounds: int = 200, depth: int = 6, seed: int = 7) -> tuple[xgb.Booster, dict]:
    x = training_features(rows, seed)
    signal = _signal(x, seed + 1)
    rng = np.random.default_rng(seed + 2)
    params = {"max_depth": depth, "eta": 0.1, "nthread": 2, "seed": seed}
    metadata = {"model_name": name, "model_version": "1.0.0", "feature_names": FEATURES,
                "trained_on": "synthetic data (no patient records)"}
    if name == "risk":
        y = (signal + rng.normal(scale=0.5, size=rows) > 0.3).astype(int)
        params["objective"] = "binary:logistic"
        metadata["class_labels"] = [0, 1]
    elif name == "treatment":
        y = np.digitize(signal + rng.normal(scale=0.4, size=rows), [-0.3, 0.4])
        params.update(objective="multi:softprob", num_class=len(TREATMENTS))
        metadata["class_labels"] = TREATMENTS
    elif name == "outcome":
        y = np.clip(4 + 2 * signal + rng.gamma(2, 1, rows), 0.5, None)  # length of stay, days
        params["objective"] = "reg:squarederror"
    else:
        raise ValueError(f"unknown example model {name}")
    data = xgb.DMatrix(x, label=y, feature_names=FEATURES)
    return xgb.train(params, data, num_boost_round=rounds), metadata


def package(booster: xgb.Booster, metadata: dict, out: Path, name: str) -> Path:
    model_dir = out / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "xgboost-model").write_bytes(booster.save_raw("ubj"))
    (model_dir / "metadata.json").write_text(json.dumps(metadata, indent=1) + "\n")
    archive = out / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    write_samples(out, name)
    write_baseline(out / f"{name}.baseline.csv", training_features())
    return model_dir


def write_baseline(path: Path, x: np.ndarray) -> None:
    """Feature columns only, a header of the feature names, a missing value as an empty field."""
    lines = [",".join(FEATURES)] + [",".join("" if np.isnan(value) else f"{value:.6g}" for value in row) for row in x]
    path.write_text("\n".join(lines) + "\n")


def write_samples(out: Path, name: str) -> None:
    """The same five synthetic patients as `<name>.sample.csv` and as named-feature `<name>.sample.json`."""
    sample = synthetic_patients(5, seed=99)
    np.savetxt(out / f"{name}.sample.csv", sample, delimiter=",", fmt="%.6g")
    text = (out / f"{name}.sample.csv").read_text().replace("nan", "")
    (out / f"{name}.sample.csv").write_text(text)
    instances = [{feature: None if np.isnan(value) else float(f"{value:.6g}") for feature, value in zip(FEATURES, row)}
                 for row in sample]
    (out / f"{name}.sample.json").write_text(json.dumps({"instances": instances}) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/models/xgboost"))
    parser.add_argument("--models", nargs="+", default=["risk", "treatment", "outcome"])
    args = parser.parse_args(argv)
    for name in args.models:
        booster, metadata = train(name)
        print(f"{name}: {package(booster, metadata, args.out, name)}")


if __name__ == "__main__":
    main()
