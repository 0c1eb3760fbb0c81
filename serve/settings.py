"""Runtime settings: read once from the environment into one frozen object.

This is the only module that touches ``os.environ``. Everything else receives a ``Settings``. It holds what every image
shares; a model family's own settings (a `FamilySettings` that serve.families names) are read from the same mapping,
handed to the family here, and kept in `Settings.family`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from serve import families

MIB = 1024 * 1024
SAGEMAKER_MAX_PAYLOAD_BYTES = 6 * MIB
BATCH_TIMEOUT_SECONDS = 600  # SageMaker Batch Transform's default invocation timeout
BATCH_MAX_PAYLOAD_MB = 100  # Batch Transform: MaxConcurrentTransforms x MaxPayloadInMB may not exceed it
MULTI_MODEL_MEMORY_SHARE = 0.75  # default multi-model budget: this share of the container's memory
METRICS_NAMESPACE = "ClinicalInference"
# The metric dimensions the deploy sets (serve.metrics): environment variable -> CloudWatch dimension name.
METRIC_DIMENSIONS = {"SERVE_METRICS_ENDPOINT": "EndpointName", "SERVE_METRICS_VARIANT": "VariantName",
                     "SERVE_METRICS_MODEL": "ModelName"}
NAMESPACE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/#: ")

def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count)."""
    return len(os.sched_getaffinity(0)) or 1


class SettingsError(ValueError):
    """A setting has a value the server cannot start with."""


def read_text(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def read_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
    raw = read_text(env, name)
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


def read_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = read_text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not (value >= minimum and math.isfinite(value)):
        raise SettingsError(f"{name} must be a finite number of at least {minimum}, got {raw}")
    return value


def read_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = read_text(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def read_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (read_text(env, name) or default).lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _payload_limit(env: Mapping[str, str]) -> int:
    """The body limit: MAX_CONTENT_LENGTH (bytes) and SAGEMAKER_MAX_PAYLOAD_IN_MB (set by Batch Transform; 0 there means
    the platform's largest payload, 100 MB), the larger when both are set, 6 MiB when neither is."""
    limits = []
    if read_text(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB") is not None:
        limits.append((read_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, minimum=0) or BATCH_MAX_PAYLOAD_MB) * MIB)
    if read_text(env, "MAX_CONTENT_LENGTH") is not None:
        limits.append(read_int(env, "MAX_CONTENT_LENGTH", SAGEMAKER_MAX_PAYLOAD_BYTES))
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
    if read_text(env, "SERVE_MODEL_MEMORY_MB") is not None:
        return read_int(env, "SERVE_MODEL_MEMORY_MB", 0, minimum=0) * MIB
    if not read_bool(env, "SAGEMAKER_MULTI_MODEL", False):
        return 0
    memory = container_memory_bytes()
    return int(memory * MULTI_MODEL_MEMORY_SHARE) if memory else 0


def read_media_type(env: Mapping[str, str], name: str) -> str | None:
    value = read_text(env, name)
    if value is None:
        return None
    if "/" not in value:
        raise SettingsError(f"{name} must be a media type such as text/csv, got {value!r}")
    return value.split(";")[0].strip().lower()


def read_dimension(env: Mapping[str, str], name: str) -> str | None:
    """A CloudWatch dimension value, unset when absent. "Dimension values must contain only ASCII characters and must
    include at least one non-whitespace character. ASCII control characters are not supported", 1 to 1024 characters
    (Amazon CloudWatch API Reference, Dimension:
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html).
    Used as it is, never trimmed."""
    value = env.get(name)
    if value is None:
        return None
    if not value.strip():
        raise SettingsError(f"{name} must include at least one non-whitespace character (a CloudWatch dimension value)")
    if len(value) > 1024:
        raise SettingsError(f"{name} must be at most 1024 characters (a CloudWatch dimension value), got {len(value)}")
    if not value.isascii() or not value.isprintable():
        raise SettingsError(f"{name} must hold printable ASCII characters only (a CloudWatch dimension value)")
    return value


def read_namespace(env: Mapping[str, str], name: str) -> str:
    """A CloudWatch namespace: 1 to 255 characters of 0-9A-Za-z . - _ / # : and space, at least one not a space
    (Amazon CloudWatch User Guide, Metrics concepts, Namespaces:
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Namespace), and not
    beginning with "AWS/", which is reserved for AWS services (API Reference, PutMetricData, Namespace:
    https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html)."""
    value = env.get(name)
    if value is None:
        return METRICS_NAMESPACE
    if not value.strip() or len(value) > 255 or not set(value) <= NAMESPACE_CHARACTERS:
        raise SettingsError(f"{name} must be 1 to 255 characters of A-Z a-z 0-9 . - _ / # : and space "
                            "(a CloudWatch namespace)")
    if value.startswith("AWS/"):
        raise SettingsError(f"{name} must not begin with AWS/ (reserved for AWS services)")
    return value


def read_label(env: Mapping[str, str], name: str) -> str:
    """An image label the container knows at run time (a response header's value): printable ASCII."""
    value = read_text(env, name, "unknown")
    if len(value) > 200 or not value.isascii() or not value.isprintable():
        raise SettingsError(f"{name} must be at most 200 printable ASCII characters")
    return value


@dataclass(frozen=True)
class Settings:
    handler: str = families.DEFAULT
    model_dir: Path = Path("/opt/ml/model")
    multi_model: bool = False
    multi_model_dir: Path = Path("/opt/ml/models")
    port: int = 8080
    workers: int = field(default_factory=cpu_count)
    threads: int = 1
    timeout_seconds: int = 60
    graceful_timeout_seconds: int = 25
    read_timeout_seconds: float = 5.0  # headers due this long after their first byte; the body may not pause longer
    batch: bool = False
    max_payload_bytes: int = SAGEMAKER_MAX_PAYLOAD_BYTES
    default_accept: str | None = None  # None: the handler's own default
    program: str | None = None
    log_level: str = "info"
    # Multi-model endpoints: memory budget for loaded models (bytes, 0 = none).
    model_memory_budget_bytes: int = 0
    # Observability (serve.provenance, serve.metrics): the image's labels, and the metric records' set-up.
    image_version: str = "unknown"
    image_revision: str = "unknown"
    metrics: bool = True
    metrics_namespace: str = METRICS_NAMESPACE
    metric_dimensions: tuple[tuple[str, str], ...] = ()  # (CloudWatch dimension name, value), those the deploy set
    model_name: str | None = None  # SERVE_METRICS_MODEL: the model's name in headers, logs and the ModelName dimension
    family: FamilySettings = None  # the handler's family's own settings; its defaults when not given

    def __post_init__(self):
        settings_class = family_settings_class(self.handler)
        if self.family is None:
            object.__setattr__(self, "family", settings_class())
        elif not isinstance(self.family, settings_class):
            raise TypeError(f"SERVE_HANDLER={self.handler} takes a {settings_class.__name__}, "
                            f"not a {type(self.family).__name__}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        batch = read_bool(env, "SAGEMAKER_BATCH", False)
        default_timeout = BATCH_TIMEOUT_SECONDS if batch else 60
        handler = read_choice(env, "SERVE_HANDLER", families.DEFAULT, tuple(families.FAMILIES))
        dimensions = tuple((dimension, value) for variable, dimension in METRIC_DIMENSIONS.items()
                           if (value := read_dimension(env, variable)) is not None)
        return cls(
            handler=handler,
            model_dir=Path(read_text(env, "SM_MODEL_DIR", "/opt/ml/model")),
            multi_model=read_bool(env, "SAGEMAKER_MULTI_MODEL", False),
            multi_model_dir=Path(read_text(env, "SAGEMAKER_MULTI_MODEL_DIR", "/opt/ml/models")),
            port=read_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, maximum=65535),
            workers=read_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", cpu_count()),
            threads=read_int(env, "SERVE_THREADS", 1),
            timeout_seconds=read_int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", default_timeout),
            graceful_timeout_seconds=read_int(env, "SERVE_GRACEFUL_TIMEOUT", 25),
            read_timeout_seconds=read_float(env, "SERVE_READ_TIMEOUT", 5.0, minimum=0.1),
            batch=batch,
            max_payload_bytes=_payload_limit(env),
            default_accept=read_media_type(env, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"),
            program=read_text(env, "SAGEMAKER_PROGRAM"),
            log_level=read_choice(env, "SERVE_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            model_memory_budget_bytes=_memory_budget(env),
            image_version=read_label(env, "SERVE_IMAGE_VERSION"),
            image_revision=read_label(env, "SERVE_IMAGE_REVISION"),
            metrics=read_bool(env, "SERVE_METRICS", True),
            metrics_namespace=read_namespace(env, "SERVE_METRICS_NAMESPACE"),
            metric_dimensions=dimensions,
            model_name=dict(dimensions).get("ModelName"),
            family=family_settings_class(handler).from_env(env),
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
        """gunicorn worker processes (the family's process layout)."""
        return self.family.layout(self).processes

    @property
    def server_threads(self) -> int:
        """Threads per worker process: requests served at once by each (the family's process layout)."""
        return self.family.layout(self).threads

    @property
    def serve_inline(self) -> bool:
        """Whether each worker serves its requests on its poller thread (one thread, and the family allows it)."""
        layout = self.family.layout(self)
        return layout.threads == 1 and layout.inline


@dataclass(frozen=True)
class ProcessLayout:
    processes: int  # gunicorn worker processes
    threads: int  # threads per process
    # With one thread, serve each request on the worker's poller thread (serve.workers.InlineWorker). False for a
    # family whose requests wait on a thread of its own (a dynamic batcher): that wait ends in the family's own 503.
    inline: bool = True


@dataclass(frozen=True)
class FamilySettings:
    """A model family's own settings: a frozen dataclass in models/<family>/settings.py, named in serve.families.

    `from_env` reads them once, at start-up, from the environment mapping Settings.from_env hands over (the family
    never reads os.environ itself) with this module's readers; a bad value raises SettingsError, which stops
    start-up with a one-line message. `layout` is how many processes and threads serve the family's models.
    """

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FamilySettings:
        return cls()

    def layout(self, settings: Settings) -> ProcessLayout:
        """SAGEMAKER_MODEL_SERVER_WORKERS processes of SERVE_THREADS threads. A multi-model endpoint runs one process,
        so that every model is visible to every request and loaded once (model libraries release the GIL while
        predicting), with threads for what the workers would have served."""
        if settings.multi_model:
            return ProcessLayout(1, max(settings.threads, settings.workers * 4))
        return ProcessLayout(settings.workers, settings.threads)


def family_settings_class(handler: str) -> type[FamilySettings]:
    """The settings class of the family that SERVE_HANDLER names (its module is light: no model library)."""
    dotted = families.FAMILIES[handler].settings
    return families.load(dotted) if dotted else FamilySettings


def apply_process_defaults(env=None) -> None:
    """One thread per worker process unless the operator said otherwise (set before a model library loads OpenMP).
    OpenMP threads sleep between parallel regions instead of spinning: they share the cores with the request threads
    (decoding, metrics), and a spinning team slows a model thread that waits for a core several times over."""
    env = os.environ if env is None else env
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
