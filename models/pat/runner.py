"""A PAT artifact on its device, fed by the dynamic batcher: the one place the model runs.

The device is chosen once from the settings. On CUDA a batch is copied through a reused pinned host buffer; on CPU
the same code runs with the configured number of threads. The encoder runs in SERVE_PRECISION: float32, or under
autocast in bfloat16 (CPU) or float16 (CUDA: the T4 has no bf16). Pooling and the task heads always run in float32,
and every output is float32. A batch whose reduced-precision result is not finite (an input too large for fp16) is run
again in float32. Everything runs under torch.inference_mode().

Faults of a batch (PatModel.run_batch):
- Out of memory is raised as MemoryError, which the batcher answers by running the batch in halves:
  torch.cuda.OutOfMemoryError ("Exception raised when device is out of memory", the caching allocator), CUDA's own
  cudaErrorMemoryAllocation, or the CPU allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory").
- A CUDA error after which "any further CUDA work will return the same error. To continue using CUDA, the process must
  be terminated and relaunched" (CUDA Runtime API, Data types, enum cudaError:
  https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html) is raised as DeviceFailed, for this batch
  and every later one, without touching the device again. torch >= 2.8 raises CUDA errors as torch.AcceleratorError
  ("Exception raised while executing on device"), whose `error_code` is the CUDA error (pytorch/pytorch#152023,
  "Introduce torch.AcceleratorError"); older releases, and some paths still, raise a RuntimeError with the same
  message ("CUDA error: an illegal memory access was encountered").
Any other error fails its request (a 500) and leaves the device in use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from models.pat.artifact import PatArtifact
from models.pat.batcher import DynamicBatcher
from models.pat.inputs import ModelFacts
from serve.errors import ModelLoadError
from serve.settings import cpu_count

log = logging.getLogger("models.pat")

# CUDA errors that leave the process's CUDA context unusable (enum cudaError, see above), with their messages.
UNRECOVERABLE_CUDA_ERRORS = {
    700: "an illegal memory access was encountered",
    702: "the launch timed out and was terminated",
    710: "device-side assert triggered",
    714: "hardware stack error",
    715: "an illegal instruction was encountered",
    716: "misaligned address",
    717: "operation not supported on global/shared address space",
    718: "invalid program counter",
    719: "unspecified launch failure",
}
CUDA_OUT_OF_MEMORY = 2  # cudaErrorMemoryAllocation (a pinned host buffer, a library's workspace): the device stays usable
_CUDA_MESSAGES = {**UNRECOVERABLE_CUDA_ERRORS, CUDA_OUT_OF_MEMORY: "out of memory"}
_OUT_OF_MEMORY_MESSAGES = ("DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory",
                           "CUBLAS_STATUS_ALLOC_FAILED")

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # SERVE_PRECISION: autocast dtype
SERVED_PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16")}  # what each device serves in
WEEK_MINUTES = 10080
MAX_WEEKS = 4  # longest model input; attention memory grows with the square of the length


@dataclass(frozen=True)
class BatchKey:
    minutes: int
    saliency: bool


class DeviceFailed(RuntimeError):
    """The device can no longer run anything in this process."""


def cuda_error_code(error: BaseException) -> int | None:
    """The CUDA error behind a torch error: torch.AcceleratorError's `error_code` (torch >= 2.8), else the code whose
    message it carries (older releases, and the paths that raise a plain RuntimeError with the same message)."""
    if not isinstance(error, RuntimeError):
        return None
    code = getattr(error, "error_code", None)
    if isinstance(code, int):
        return code
    message = str(error)
    return next((known for known, text in _CUDA_MESSAGES.items() if f"CUDA error: {text}" in message), None)


def out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or cuda_error_code(error) == CUDA_OUT_OF_MEMORY:
        return True
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _OUT_OF_MEMORY_MESSAGES)


def unrecoverable_cuda_error(error: BaseException) -> str | None:
    """The CUDA error that left the device unusable ("CUDA error 700: ..."), or None for any other error."""
    code = cuda_error_code(error)
    return f"CUDA error {code}: {UNRECOVERABLE_CUDA_ERRORS[code]}" if code in UNRECOVERABLE_CUDA_ERRORS else None


def choose_device(name: str) -> torch.device:
    """'auto': CUDA when a device is visible, else CPU."""
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise ModelLoadError("SERVE_DEVICE=cuda but torch sees no CUDA device")
    return torch.device("cpu")


class BatchRunner:
    """Runs one batch: rows of standardized minutes (missing minutes already 0) -> numpy outputs."""

    def __init__(self, artifact: PatArtifact, device: torch.device, precision: str = "fp32"):
        self.artifact = artifact.to(device)
        self.device = device
        self.cuda = device.type == "cuda"
        self.precision = precision
        self.autocast_dtype = AUTOCAST[precision]
        self.tasks = list(artifact.heads)
        self._host: torch.Tensor | None = None  # CUDA: pinned staging buffer, reused (only the batcher thread runs)
        self._copied: torch.cuda.Event | None = None  # the last copy out of it
        self.fp32_reruns = 0

    def _staged(self, parts: Sequence[np.ndarray]) -> torch.Tensor:
        if not self.cuda:
            return torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False))
        rows, minutes = sum(len(part) for part in parts), parts[0].shape[1]
        if self._copied is not None:
            self._copied.synchronize()  # the previous batch's copy has left the buffer (even if that batch failed)
        if self._host is None or self._host.numel() < rows * minutes:
            self._host = torch.empty(rows * minutes, dtype=torch.float32, pin_memory=True)
        host = self._host[:rows * minutes].view(rows, minutes)
        np.concatenate(parts, out=host.numpy(), casting="same_kind")
        x = host.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return x

    def _forward(self, x: torch.Tensor, saliency: bool, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            encoded = self.artifact.encoder.encode(x, saliency=saliency)
        embedding = encoded.tokens.float().mean(dim=1)
        out = {"embedding": embedding}
        if self.tasks:
            out["scores"] = torch.stack(list(self.artifact.scores(embedding).values()), dim=1)
        if saliency:
            out["saliency"] = encoded.saliency.float()
        return out

    def __call__(self, key: BatchKey, parts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            x = self._staged(parts)
            out = self._forward(x, key.saliency, self.autocast_dtype)
            if self.autocast_dtype is not None and not all(torch.isfinite(v).all() for v in out.values()):
                self.fp32_reruns += 1
                out = self._forward(x, key.saliency, None)
            return {name: value.cpu().numpy() for name, value in out.items()}


def _max_rows(max_batch_size: int):
    """Rows per batch: max_batch_size weeks' worth of minutes, and at least one row."""
    return lambda key: max(1, max_batch_size * WEEK_MINUTES // key.minutes)


class PatModel:
    """A loaded artifact ready to serve: device, batch runner, dynamic batcher."""

    def __init__(self, artifact: PatArtifact, device: torch.device, max_batch_size: int, batch_wait_ms: float,
                 torch_threads: int = 0, runner: BatchRunner | None = None, precision: str = "fp32"):
        if precision not in SERVED_PRECISIONS[device.type]:  # SERVE_DEVICE=auto chose another device than expected
            raise ModelLoadError(f"SERVE_PRECISION={precision} cannot run on {device.type}: use one of "
                                 f"{', '.join(SERVED_PRECISIONS[device.type])}")
        if device.type == "cpu":
            torch.set_num_threads(torch_threads or cpu_count())
        artifact.encoder.eval()
        for head in artifact.heads.values():
            head.eval()
        self.artifact = artifact
        self.runner = runner or BatchRunner(artifact, device, precision)
        self.device = device
        self.max_batch_size = max_batch_size
        self.device_failure: str | None = None  # set once the device is unusable
        self.batcher = DynamicBatcher(self.run_batch, _max_rows(max_batch_size), batch_wait_ms / 1000.0,
                                      name="pat-batcher")
        stats = artifact.standardization
        self.facts = ModelFacts(
            patch_size=artifact.patch_size,
            week_minutes=stats.minutes if stats is not None else None,
            max_minutes=MAX_WEEKS * WEEK_MINUTES,
            counts=stats is not None,
            has_heads=bool(artifact.heads),
        )

    def standardize(self, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) float32 model input and the (B,) count of missing minutes, each set to 0 (the minute's mean)."""
        missing = np.isnan(activity)
        with np.errstate(over="ignore", invalid="ignore"):  # too-large values are refused just below
            x = self.artifact.standardize(activity)
        x[missing] = 0.0
        if not np.isfinite(x).all():
            raise ValueError("activity values too large to standardize")
        return x, missing.sum(axis=1)

    def submit(self, x: np.ndarray, saliency: bool):
        """Future of {embedding (B, 96), scores (B, tasks)?, saliency (B, T)?} for standardized rows."""
        if self.device_failure is not None:
            raise DeviceFailed(self.device_failure)
        return self.batcher.submit(BatchKey(int(x.shape[1]), saliency), x)

    def run_batch(self, key: BatchKey, parts: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The runner on one batch (the batcher's thread), its faults raised as MemoryError or DeviceFailed."""
        if self.device_failure is not None:
            raise DeviceFailed(self.device_failure)
        try:
            return self.runner(key, parts)
        except Exception as error:
            if out_of_memory(error):
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()  # cached blocks back to the device, for the halves
                raise MemoryError(f"{sum(len(part) for part in parts)} rows of {key.minutes} minutes did not fit in "
                                  f"{self.device.type} memory") from error
            failure = unrecoverable_cuda_error(error)
            if failure is None:
                raise
            self.device_failure = f"the {self.device.type} device failed ({failure}); this worker cannot serve again"
            log.critical("the device failed", extra={"reason": failure, "device": str(self.device)})
            raise DeviceFailed(self.device_failure) from error

    def warm_up(self) -> None:
        """Run the common shapes through the batcher's thread, where requests run, so that the first request does not
        pay for building kernels, caches and that thread's own state (thread pools, cuBLAS handles)."""
        minutes = self.facts.week_minutes or WEEK_MINUTES
        sizes = {1, self.max_batch_size} if self.device.type == "cuda" else {1}
        for rows in sorted(sizes):
            self.batcher(BatchKey(minutes, False), np.zeros((rows, minutes), dtype=np.float32))
        self.batcher(BatchKey(minutes, True), np.zeros((1, minutes), dtype=np.float32))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def device_memory_bytes(self) -> int | None:
        """Device memory the caching allocator holds on CUDA (what the device has given this process for tensors);
        None on the CPU, whose memory the instance metrics show."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.memory_reserved(self.device)

    def describe(self) -> dict:
        artifact = self.artifact
        return {
            "variant": artifact.variant,
            "patch_size": artifact.patch_size,
            "tasks": list(artifact.heads),
            "pretrained": artifact.config.pretrained,
            "standardization": "none" if artifact.standardization is None else
            ("per-minute" if artifact.standardization.minutes else "scalar"),
            "device": str(self.device),
            "precision": self.runner.precision,
            "torch_threads": torch.get_num_threads(),
            "max_batch_size": self.max_batch_size,
            "batch_wait_ms": self.batcher.max_wait_s * 1000.0,
        }

    def close(self) -> None:
        self.batcher.close()
