"""Where a single-row request's time goes outside Python: system calls per request, counted with `strace -c`.

    python -m bench.syscalls [--requests 400] [--systems ours naive lean mlserver]

Starts each server on the example model, sends 50 warm-up rows, then attaches `strace -f -c` to its workers for
`--requests` sequential keep-alive single-row requests, and prints the calls per request by name, grouped by what
makes them (the HTTP worker's thread hand-offs, XGBoost's per-call CPU probe, the socket I/O itself). Writes
build/bench/syscalls.json (folded into `python -m bench`'s report). Needs strace (`apt-get install strace`) and
ptrace permission (root, or kernel.yama.ptrace_scope=0). Counts, not times: strace slows every call it sees.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import systems
from bench.client import Client
from bench.models import prepare, rows

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "bench" / "syscalls.json"
# what issues each call on these servers (read from `strace -f` of one request); read/close are shared by the
# wake-up pipe, cgroup files and sockets, so they stay in "other"
GROUPS = {
    "thread hand-offs and the worker loop (futex, epoll, FIONBIO, getppid, heartbeat, wake-up write)": {
        "futex", "epoll_wait", "epoll_pwait", "epoll_ctl", "ioctl", "getppid", "utimensat", "write"},
    "XGBoost's per-call CPU-count probe (cgroup stat/open, affinity)": {"stat", "newfstatat", "openat",
                                                                         "sched_getaffinity"},
    "socket I/O of the request and response": {"recvfrom", "sendto", "accept4", "shutdown", "getsockname",
                                              "setsockopt", "getpeername"},
}


def kinds() -> dict:
    from bench.mlserver_peer import MLServer

    return {"ours": systems.Ours, "naive": systems.Naive, "lean": systems.LeanNaive, "mlserver": MLServer}


def parse_summary(text: str, requests: int) -> dict[str, float]:
    """`strace -c` table -> calls per request by syscall name."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] != "total" and parts[3].isdigit():
            found[parts[-1]] = int(parts[3]) / requests
    return dict(sorted(found.items(), key=lambda item: -item[1]))


def grouped(per_request: dict[str, float]) -> dict[str, float]:
    out = {group: 0.0 for group in GROUPS}
    out["other"] = 0.0
    for name, count in per_request.items():
        group = next((g for g, names in GROUPS.items() if name in names), "other")
        out[group] += count
    return {group: round(count, 2) for group, count in out.items()}


def count(kind, model, requests: int, log_dir: Path) -> dict:
    server = kind(model.model_dir, log_dir)
    try:
        protocol = server.protocols[0]
        bodies = protocol.single_rows(rows(model, 200))
        client = Client(server.port, protocol.content_type, protocol.accept, protocol.path)
        for i in range(50):
            client.post(bodies[i % len(bodies)])
        traced = [server.pid, *systems.children(server.pid)]  # master and workers: MLServer's HTTP is the master
        summary = log_dir / f"strace-{kind.name}.txt"
        tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(summary)]
                                  + [arg for pid in traced for arg in ("-p", str(pid))], stderr=subprocess.DEVNULL)
        time.sleep(1.5)  # strace attaches
        for i in range(requests):
            status, _ = client.post(bodies[i % len(bodies)])
            if status != 200:
                raise RuntimeError(f"{kind.name} answered {status}")
        tracer.terminate()
        tracer.wait()
        client.close()
    finally:
        server.stop()
    per_request = parse_summary(summary.read_text(), requests)
    return {"requests": requests, "total_per_request": round(sum(per_request.values()), 2),
            "groups": grouped(per_request), "per_request": {k: round(v, 2) for k, v in per_request.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--systems", nargs="+", default=["ours", "naive", "mlserver"],
                        choices=["ours", "naive", "lean", "mlserver"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if shutil.which("strace") is None:
        print("bench.syscalls: strace is needed (apt-get install strace)", file=sys.stderr)
        return 2
    model = prepare(ROOT / "build" / "bench" / "models", ("example",))["example"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.systems:
            result = results[name] = count(kinds()[name], model, args.requests, Path(tmp))
            print(f"{name}: {result['total_per_request']:.1f} system calls per single-row request")
            for group, calls in result["groups"].items():
                print(f"  {calls:6.2f}  {group}")
            print("  by name: " + ", ".join(f"{k} {v:g}" for k, v in result["per_request"].items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python -m bench.syscalls", "systems": results}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
