"""PAT's own settings (SERVE_HANDLER=pat), read once at start-up from the environment mapping the runtime hands
over: SERVE_DEVICE, SERVE_TORCH_THREADS, SERVE_MAX_BATCH_SIZE, SERVE_BATCH_WAIT_MS (README, Configuration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from serve.settings import FamilySettings, ProcessLayout, Settings, read_choice, read_float, read_int


@dataclass(frozen=True)
class PatSettings(FamilySettings):
    device: str = "auto"
    torch_threads: int = 0  # 0 = one per worker CPU
    max_batch_size: int = 64
    batch_wait_ms: float = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PatSettings:
        return cls(
            device=read_choice(env, "SERVE_DEVICE", "auto", ("auto", "cpu", "cuda")),
            torch_threads=read_int(env, "SERVE_TORCH_THREADS", 0, minimum=0),
            max_batch_size=read_int(env, "SERVE_MAX_BATCH_SIZE", 64),
            batch_wait_ms=read_float(env, "SERVE_BATCH_WAIT_MS", 2.0),
        )

    def layout(self, settings: Settings) -> ProcessLayout:
        """One process, which owns the device; enough threads that requests wait together for the dynamic batcher
        (a request waits for the batcher's thread, up to SAGEMAKER_MODEL_SERVER_TIMEOUT, so never on the poller's)."""
        return ProcessLayout(1, max(settings.threads, self.max_batch_size), inline=False)
