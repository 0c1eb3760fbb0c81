"""Concurrent load from a separate process: wrk (C, epoll) with bench/wrk/post.lua, so the load generator costs the
2-core machine as little CPU as possible. Install it with `apt-get install wrk`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "wrk" / "post.lua"


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(us: int | None) -> float | None:
    return None if us is None else us / 1e3


def run(url: str, body: bytes, connections: int, seconds: float = 0, requests: int = 0, threads: int = 1,
        timeout_s: int = 10, path: str = "/invocations", content_type: str = "text/csv",
        accept: str = "text/csv") -> dict:
    """wrk POSTing body to url + path: for `seconds`, or until `requests` responses (split evenly over threads).

    Returns requests, requests/s, latency percentiles (ms) and errors (socket errors + non-2xx/3xx answers).
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("load is only ever sent to 127.0.0.1")
    with tempfile.TemporaryDirectory() as work:
        body_path, done_dir = Path(work) / "body", Path(work) / "done"
        body_path.write_bytes(body)
        done_dir.mkdir()
        env = {**os.environ, "WRK_BODY": str(body_path), "WRK_DONE_DIR": str(done_dir), "WRK_PATH": path,
               "WRK_CONTENT_TYPE": content_type, "WRK_ACCEPT": accept,
               "WRK_REQUESTS_PER_THREAD": str(-(-requests // threads) if requests else 0)}
        duration = f"{int(seconds)}s" if seconds else f"{max(60, requests // 100)}s"  # an upper bound with a count
        start = time.perf_counter()
        wrk = subprocess.Popen(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", f"--timeout={timeout_s}s",
                                "-s", str(SCRIPT), url + path],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if requests:  # wrk sleeps for -d even when its threads stopped: end it once every thread has its count
            while wrk.poll() is None and len(list(done_dir.iterdir())) < threads:
                time.sleep(0.01)
            wall_s = time.perf_counter() - start
            wrk.send_signal(signal.SIGINT)
        out, err = wrk.communicate()
        if wrk.returncode != 0:
            raise RuntimeError(f"wrk failed: {err.strip()[-500:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    if figures["requests"] == 0:  # nothing answered within the window: no latency to report (not 0 ms)
        figures.update({f"{k}_us": None for k in ("p50", "p90", "p99", "p999", "max")})
    errors = sum(figures[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "connections": connections,
        "requests": figures["requests"],
        # wrk reports the time until SIGINT, which includes the poll above: a counted run is timed from here
        "requests_per_s": figures["requests"] / (wall_s if requests else figures["duration_us"] / 1e6),
        "p50_ms": _ms(figures["p50_us"]),
        "p90_ms": _ms(figures["p90_us"]),
        "p99_ms": _ms(figures["p99_us"]),
        "p999_ms": _ms(figures["p999_us"]),
        "max_ms": _ms(figures["max_us"]),
        "errors": errors,
        "error_detail": {k: figures[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors",
                                                 "timeouts")},
    }
