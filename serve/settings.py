"""Runtime settings: read once from the environment into one frozen object.

This is the only module that touches ``os.environ``. Everything else receives a ``Settings``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

MIB = 1024 * 1024
SAGEMAKER_MAX_PAYLOAD_BYTES = 6 * MIB
BATCH_TIMEOUT_SECONDS = 600  # SageMaker Batch Transform's default invocation timeout
BATCH_MAX_PAYLOAD_MB = 100  # Batch Transform: MaxConcurrentTransforms x MaxPayloadInMB may not exceed it
MULTI_MODEL_MEMORY_SHARE = 0.75  # default multi-model budget: this share of the container's memory

INFERENCE_OUTPUT_KEYS = (
    "predicted_label",
    "labels",
    "probability",
    "probabilities",
    "raw_score",
    "raw_scores",
    "predicted_score",
)


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    return len(os.sched_getaffinity(0)) or 1


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


def _text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{name} must be {bounds}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not (value >= minimum and math.isfinite(value)):
        raise SettingsError(f"{name} must be a finite number of at least {minimum}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_text(env, name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _payload_limit(env: Mapping[str, str]) -> int:
    """The body limit: MAX_CONTENT_LENGTH (bytes) and SAGEMAKER_MAX_PAYLOAD_IN_MB (set by Batch Transform; 0 there means
    the platform's largest payload, 100 MB), the larger when both are set, 6 MiB when neither is."""
    limits = []
    if _text(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB") is not None:
        limits.append((_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, minimum=0) or BATCH_MAX_PAYLOAD_MB) * MIB)
    if _text(env, "MAX_CONTENT_LENGTH") is not None:
        limits.append(_int(env, "MAX_CONTENT_LENGTH", SAGEMAKER_MAX_PAYLOAD_BYTES))
    return max(limits, default=SAGEMAKER_MAX_PAYLOAD_BYTES)


def container_memory_bytes() -> int | None:
    """The container's memory limit (cgroup v2 or v1), else the machine's memory; None when neither can be read."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    try:
        with open("/proc/meminfo") as meminfo:
            return int(meminfo.readline().split()[1]) * 1024  # MemTotal, kB
    except (OSError, ValueError, IndexError):
        return None


def _memory_budget(env: Mapping[str, str]) -> int:
    """SERVE_MODEL_MEMORY_MB; for a multi-model endpoint without it, a share of the container's memory, so that
    loads answer 507 (SageMaker then unloads models) before the kernel's OOM killer takes every model at once."""
    if _text(env, "SERVE_MODEL_MEMORY_MB") is not None:
        return _int(env, "SERVE_MODEL_MEMORY_MB", 0, minimum=0) * MIB
    if not _bool(env, "SAGEMAKER_MULTI_MODEL", False):
        return 0
    memory = container_memory_bytes()
    return int(memory * MULTI_MODEL_MEMORY_SHARE) if memory else 0


def _inference_output(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _text(env, "SAGEMAKER_INFERENCE_OUTPUT")
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


def _media_type(env: Mapping[str, str], name: str) -> str | None:
    value = _text(env, name)
    if value is None:
        return None
    if "/" not in value:
        raise SettingsError(f"{name} must be a media type such as text/csv, got {value!r}")
    return value.split(";")[0].strip().lower()


@dataclass(frozen=True)
class Settings:
    handler: str = "xgboost"
    model_dir: Path = Path("/opt/ml/model")
    multi_model: bool = False
    multi_model_dir: Path = Path("/opt/ml/models")
    port: int = 8080
    workers: int = field(default_factory=cpu_count)
    threads: int = 1
    timeout_seconds: int = 60
    graceful_timeout_seconds: int = 25
    batch: bool = False
    max_payload_bytes: int = SAGEMAKER_MAX_PAYLOAD_BYTES
    default_accept: str | None = None  # None: the handler's own default
    inference_output: tuple[str, ...] = ()
    program: str | None = None
    allow_pickle: bool = False
    libsvm_one_based: bool = False
    log_level: str = "info"
    # Multi-model endpoints: memory budget for loaded models (bytes, 0 = none).
    model_memory_budget_bytes: int = 0
    # PAT
    device: str = "auto"
    torch_threads: int = 0  # 0 = one per worker CPU
    max_batch_size: int = 64
    batch_wait_ms: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        batch = _bool(env, "SAGEMAKER_BATCH", False)
        default_timeout = BATCH_TIMEOUT_SECONDS if batch else 60
        return cls(
            handler=_choice(env, "SERVE_HANDLER", "xgboost", ("xgboost", "pat")),
            model_dir=Path(_text(env, "SM_MODEL_DIR", "/opt/ml/model")),
            multi_model=_bool(env, "SAGEMAKER_MULTI_MODEL", False),
            multi_model_dir=Path(_text(env, "SAGEMAKER_MULTI_MODEL_DIR", "/opt/ml/models")),
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, maximum=65535),
            workers=_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", cpu_count()),
            threads=_int(env, "SERVE_THREADS", 1),
            timeout_seconds=_int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", default_timeout),
            graceful_timeout_seconds=_int(env, "SERVE_GRACEFUL_TIMEOUT", 25),
            batch=batch,
            max_payload_bytes=_payload_limit(env),
            default_accept=_media_type(env, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"),
            inference_output=_inference_output(env),
            program=_text(env, "SAGEMAKER_PROGRAM"),
            allow_pickle=_bool(env, "SERVE_ALLOW_PICKLE", False),
            libsvm_one_based=_bool(env, "SERVE_LIBSVM_ONE_BASED", False),
            log_level=_choice(env, "SERVE_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            model_memory_budget_bytes=_memory_budget(env),
            device=_choice(env, "SERVE_DEVICE", "auto", ("auto", "cpu", "cuda")),
            torch_threads=_int(env, "SERVE_TORCH_THREADS", 0, minimum=0),
            max_batch_size=_int(env, "SERVE_MAX_BATCH_SIZE", 64),
            batch_wait_ms=_float(env, "SERVE_BATCH_WAIT_MS", 2.0),
        )

    @property
    def max_payload_mb(self) -> int:
        return max(1, self.max_payload_bytes // MIB)

    @property
    def max_concurrent_transforms(self) -> int:
        """What /execution-parameters offers Batch Transform: requests served at once, within its 100 MB rule."""
        return max(1, min(self.server_processes * self.server_threads, BATCH_MAX_PAYLOAD_MB // self.max_payload_mb))

    @property
    def server_processes(self) -> int:
        """gunicorn worker processes. Multi-model endpoints run one, so every model is visible to every request and
        loaded once (XGBoost and torch release the GIL while predicting); PAT runs one that owns the device."""
        return 1 if self.multi_model or self.handler == "pat" else self.workers

    @property
    def server_threads(self) -> int:
        """Threads per worker process: requests served at once by each."""
        if self.handler == "pat":
            return max(self.threads, self.max_batch_size)  # requests wait together for the dynamic batcher
        if self.multi_model:
            return max(self.threads, self.workers * 4)
        return self.threads


def apply_process_defaults(env=None) -> None:
    """One thread per worker process unless the operator said otherwise (set before XGBoost/torch load OpenMP)."""
    env = os.environ if env is None else env
    env.setdefault("OMP_NUM_THREADS", "1")
