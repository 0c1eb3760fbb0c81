"""How busy the shared 2-core machine was while we measured (other engineers build and test on it too)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # Intel AMX (Sapphire Rapids on) and AVX-512 BF16 (also AMD Zen 4)


def cpu_info(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and bfloat16 flags, from the first processor of /proc/cpuinfo (the same ratios can differ
    between CPU families: the issue's were measured on an Intel Xeon with AMX)."""
    text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name", "unknown")
    return {"model": model, "vendor": fields.get("vendor_id", "unknown"),
            **{flag: flag in flags for flag in BF16_FLAGS},
            "summary": f"{model} ({', '.join(f for f in BF16_FLAGS if f in flags) or 'no bf16 flags'})"}


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    return cpu_info()["model"]


def cpu_probe_s() -> float:
    """Seconds for a fixed pure-Python loop, best of 15 (about 0.035 s on the 2-vCPU machine of PERFORMANCE.md): how
    fast this machine runs the bench's own Python, for its duration estimate."""
    best = float("inf")
    for _ in range(15):
        started, total = time.perf_counter(), 0
        for i in range(300_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return best


def busy_seconds() -> float:
    """CPU seconds all processes on the machine have spent busy since boot (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """CPU use over a stretch of wall time: the whole machine, and what of it was ours (server, wrk, this process)."""

    def __init__(self, server_cpu=lambda: 0.0):
        self.server_cpu = server_cpu
        self.start = (time.perf_counter(), busy_seconds(), server_cpu(), children_cpu_seconds(), self_cpu_seconds())

    def close(self) -> dict:
        wall, busy, server, children, own = self.start
        wall = time.perf_counter() - wall
        machine = (busy_seconds() - busy) / wall
        ours = ((self.server_cpu() - server) + (children_cpu_seconds() - children) + (self_cpu_seconds() - own)) / wall
        return {"machine_busy_cores": round(machine, 2), "ours_cores": round(ours, 2),
                "others_cores": round(max(0.0, machine - ours), 2), "load_average_1m": os.getloadavg()[0]}


class BusyCore:
    """A background process that keeps one core busy (a pure-Python loop at normal priority) while in the block:
    the `--busy` profile, for machines where other work shares the cores."""

    def __enter__(self) -> "BusyCore":
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()


def matmul_flops_per_s(device, size: int, budget_s: float, dtype=None) -> float:
    """The device's matmul rate on size x size matrices, on torch's current threads, run for about `budget_s` (fp16 by
    default: what a GPU's tensor cores give a plain GEMM)."""
    import torch

    a, b = (torch.randn(size, size, device=device, dtype=dtype or torch.float16) for _ in range(2))
    torch.matmul(a, b)
    runs, started = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - started < budget_s:
        torch.matmul(a, b)
        runs += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * size ** 3 * runs / (time.perf_counter() - started)
