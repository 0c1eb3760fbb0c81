"""PAT's own settings (SERVE_HANDLER=pat), read once at start-up from the environment mapping the runtime hands
over: SERVE_DEVICE, SERVE_PRECISION, SERVE_TORCH_THREADS, SERVE_MAX_BATCH_SIZE, SERVE_BATCH_WAIT_MS (README,
Configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from serve.settings import (FamilySettings, ProcessLayout, Settings, SettingsError, read_choice, read_float, read_int,
                            read_text)

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # Intel AMX (Sapphire Rapids on) and AVX-512 BF16 (also AMD Zen 4)
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")  # present wherever a CUDA device can be visible


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The first processor's flags in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.split(":")[0].strip() == "flags"), "")
    return set(line.partition(":")[2].split())


def allowed_precisions(device: str, flags: set[str], nvidia_driver: bool) -> tuple[str, ...]:
    """What SERVE_PRECISION may be on this device: fp32 anywhere; bf16 on a CPU with native bfloat16 (elsewhere
    autocast emulates it, slower than fp32); fp16 on CUDA (the T4 has no bf16). SERVE_DEVICE=auto is CUDA where an
    NVIDIA driver is loaded."""
    cuda = device == "cuda" or (device == "auto" and nvidia_driver)
    if cuda:
        return ("fp32", "fp16")
    return ("fp32", "bf16") if flags & set(BF16_FLAGS) else ("fp32",)


def read_precision(env: Mapping[str, str], device: str, flags: set[str], nvidia_driver: bool) -> str:
    precision = (read_text(env, "SERVE_PRECISION") or "fp32").lower()
    allowed = allowed_precisions(device, flags, nvidia_driver)
    if precision not in allowed:
        where = "CUDA" if "fp16" in allowed else \
            f"this CPU ({'native bf16' if 'bf16' in allowed else 'no amx_bf16 or avx512_bf16 flag'})"
        raise SettingsError(f"SERVE_PRECISION must be one of {', '.join(allowed)} on {where}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class PatSettings(FamilySettings):
    device: str = "auto"
    precision: str = "fp32"  # fp32, bf16 (CPU autocast) or fp16 (CUDA autocast)
    torch_threads: int = 0  # 0 = one per worker CPU
    max_batch_size: int = 64
    batch_wait_ms: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PatSettings:
        device = read_choice(env, "SERVE_DEVICE", "auto", ("auto", "cpu", "cuda"))
        return cls(
            device=device,
            precision=read_precision(env, device, cpu_flags(), NVIDIA_DRIVER.exists()),
            torch_threads=read_int(env, "SERVE_TORCH_THREADS", 0, minimum=0),
            max_batch_size=read_int(env, "SERVE_MAX_BATCH_SIZE", 64),
            batch_wait_ms=read_float(env, "SERVE_BATCH_WAIT_MS", 2.0),
        )

    def layout(self, settings: Settings) -> ProcessLayout:
        """One process, which owns the device; enough threads that requests wait together for the dynamic batcher
        (a request waits for the batcher's thread, up to SAGEMAKER_MODEL_SERVER_TIMEOUT, so never on the poller's)."""
        return ProcessLayout(1, max(settings.threads, self.max_batch_size), inline=False)
