"""XGBoost's own settings (SERVE_HANDLER=xgboost), read once at start-up from the environment mapping the runtime
hands over: SAGEMAKER_INFERENCE_OUTPUT, SERVE_ALLOW_PICKLE, SERVE_LIBSVM_ONE_BASED (README, Configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from serve.settings import FamilySettings, SettingsError, read_bool, read_text

INFERENCE_OUTPUT_KEYS = (
    "predicted_label",
    "labels",
    "probability",
    "probabilities",
    "raw_score",
    "raw_scores",
    "predicted_score",
)


def _inference_output(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = read_text(env, "SAGEMAKER_INFERENCE_OUTPUT")
    if raw is None:
        return ()
    keys = tuple(key.strip().lower() for key in raw.split(",") if key.strip())
    unknown = [key for key in keys if key not in INFERENCE_OUTPUT_KEYS]
    if unknown or not keys:
        raise SettingsError(
            f"SAGEMAKER_INFERENCE_OUTPUT has unknown keys {unknown or [raw]}; "
            f"valid keys: {', '.join(INFERENCE_OUTPUT_KEYS)}"
        )
    return keys


@dataclass(frozen=True)
class XGBoostSettings(FamilySettings):
    inference_output: tuple[str, ...] = ()
    allow_pickle: bool = False
    libsvm_one_based: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> XGBoostSettings:
        return cls(
            inference_output=_inference_output(env),
            allow_pickle=read_bool(env, "SERVE_ALLOW_PICKLE", False),
            libsvm_one_based=read_bool(env, "SERVE_LIBSVM_ONE_BASED", False),
        )
