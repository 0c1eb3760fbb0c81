"""PAT artifacts for the serving tests, and the in-process forward pass that served results are compared with."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.pat.artifact import ArtifactConfig, PatArtifact, Standardization, load_artifact, save_artifact
from models.pat.handler import PatHandler
from models.pat.network import PatEncoder, TaskHead, spec_for
from models.pat.runner import BatchRunner, PatModel

WEEK = 10080
TASKS = {"depression": {"threshold": 0.4}, "ssri": {"threshold": 0.6}}


def build_artifact(model_dir: Path, variant: str = "PAT-S", heads: bool = True, standardization: bool = True,
                   seed: int = 0) -> Path:
    """A randomly initialized encoder, random heads and per-minute statistics, saved as an artifact."""
    torch.manual_seed(seed)
    encoder = PatEncoder(spec_for(variant)).eval()
    task_heads = {name: TaskHead().eval() for name in TASKS} if heads else {}
    stats = None
    if standardization:
        rng = np.random.default_rng(seed)
        stats = Standardization.checked(rng.uniform(40, 160, WEEK), rng.uniform(60, 240, WEEK))
    config = ArtifactConfig(variant=variant, tasks=TASKS if heads else {}, description="test artifact")
    save_artifact(model_dir, encoder, task_heads, config, stats)
    return model_dir


def weeks(n: int, minutes: int = WEEK, seed: int = 1) -> np.ndarray:
    """(n, minutes) activity counts: a daily rhythm with gamma noise and still nights."""
    rng = np.random.default_rng(seed)
    clock = (np.arange(minutes) % 1440) / 60.0
    level = 150 * (1.2 + np.sin(2 * np.pi * (clock - 9) / 24))
    night = (clock < 6) | (clock > 23)
    counts = rng.gamma(1.5, level / 1.5, (n, minutes)) * np.where(night, 0.05, 1.0)
    return np.round(counts)


def forward(model_dir: Path, activity: np.ndarray) -> dict[str, np.ndarray]:
    """Embedding, scores and saliency of a fresh load, run directly on the encoder (float32, CPU).

    Standardized here from the .npz itself; a missing (NaN) minute becomes 0, the minute's mean."""
    artifact = load_artifact(model_dir)
    x = np.asarray(activity, dtype=np.float64)
    stats_file = model_dir / "standardization.npz"
    if stats_file.exists():
        with np.load(stats_file) as stats:
            x = (x.astype(np.float32) - stats["mean"]) / stats["std"]
    x = np.where(np.isnan(x), 0.0, x).astype(np.float32)
    with torch.inference_mode():
        encoded = artifact.encoder.encode(torch.from_numpy(x), saliency=True)
        embedding = encoded.tokens.mean(dim=1)
        scores = [artifact.heads[name](embedding).numpy() for name in artifact.heads]
    return {"embedding": embedding.numpy(), "saliency": encoded.saliency.numpy(),
            "scores": np.stack(scores, axis=1) if scores else np.empty((len(x), 0), np.float32)}


def at_once(call: Callable[[int], object], clients: int) -> list:
    """call(0) ... call(clients - 1), each from its own thread, released together; results in order."""
    barrier = threading.Barrier(clients)

    def released(i):
        barrier.wait(60)
        return call(i)

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(released, range(clients)))


def cuda_error(code: int, text: str) -> torch.AcceleratorError:
    """The exception torch raises for a failed CUDA call: its message, and the CUDA error code as `error_code`."""
    error = torch.AcceleratorError(f"CUDA error: {text}\nCUDA kernel errors might be asynchronously reported at some "
                                   "other API call, so the stacktrace below might be incorrect.")
    error.error_code = code
    return error


class FaultyRunner(BatchRunner):
    """The real CPU runner, whose forward pass raises `fault(rows)` when that is an exception: device faults on
    demand, on the CPU. `forwards` counts the forward passes tried."""

    def __init__(self, artifact: PatArtifact):
        super().__init__(artifact, torch.device("cpu"))
        self.fault: Callable[[int], BaseException | None] = lambda rows: None
        self.forwards = 0

    def _forward(self, x, saliency, dtype):
        self.forwards += 1
        error = self.fault(len(x))
        if error is not None:
            raise error
        return super()._forward(x, saliency, dtype)


class FaultyPatHandler(PatHandler):
    """PatHandler serving its artifact through a FaultyRunner (`handler.model.runner`)."""

    def serving(self, artifact: PatArtifact) -> PatModel:
        s = self.settings.family
        return PatModel(artifact, torch.device("cpu"), s.max_batch_size, s.batch_wait_ms, s.torch_threads,
                        runner=FaultyRunner(artifact))
