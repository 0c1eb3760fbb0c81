"""Where a single-row request's CPU goes, in CPU seconds (steadier than wall time on a shared machine):

    python -m bench.cpu_split [--model example|large] [--requests 3000]

- floor: parse with float() + Booster.inplace_predict in this process (bench/baselines/floor.py);
- app: the same request through our WSGI app called in this process (Flask, serve.pipeline, the handler), no HTTP;
- worker: the serving worker's CPU per request over keep-alive HTTP (one worker), from /proc, user and system: the
  app plus gunicorn's HTTP parsing, the worker loop and the kernel's socket work;
- client: this process's CPU per request as the HTTP client (on another core when one is free).

Worker minus app is what the HTTP server costs per request. Writes build/bench/cpu-split.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

from bench import systems
from bench.baselines import floor
from bench.client import Client
from bench.models import csv_lines, prepare, rows

ROOT = Path(__file__).resolve().parents[1]


def _environ(body: bytes) -> dict:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/invocations", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "CONTENT_TYPE": "text/csv", "CONTENT_LENGTH": str(len(body)), "HTTP_ACCEPT": "text/csv",
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False}


def app_cpu_s(model_dir: Path, lines: list[bytes], requests: int) -> float:
    """CPU seconds per request through the WSGI app in this process (after 300 warm-up requests)."""
    from serve.app import create_app
    from serve.loading import build_handler
    from serve.settings import Settings

    settings = Settings.from_env({"SM_MODEL_DIR": str(model_dir)})
    app = create_app(build_handler(settings), settings)
    statuses = []

    def call(i: int) -> None:
        for _ in app(_environ(lines[i % len(lines)]), lambda status, headers, exc_info=None: statuses.append(status)):
            pass

    for i in range(300):
        call(i)
    start = time.process_time()
    for i in range(requests):
        call(i)
    took = (time.process_time() - start) / requests
    if any(not status.startswith("200") for status in statuses):
        raise RuntimeError("the app answered other than 200")
    return took


def _user_system_s(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(model_dir: Path, lines: list[bytes], requests: int, log_dir: Path) -> tuple[float, float, float]:
    """The worker's user and system CPU seconds per request (one worker, keep-alive), and the client's."""
    server = systems.Ours(model_dir, log_dir, workers=1)
    try:
        client = Client(server.port)
        client.timed(lines, 300)
        worker = systems.children(server.pid)[0]
        before, own = _user_system_s(worker), time.process_time()
        client.timed(lines, requests)
        after, own_after = _user_system_s(worker), time.process_time()
        client.close()
    finally:
        server.stop()
    return (after[0] - before[0]) / requests, (after[1] - before[1]) / requests, (own_after - own) / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["example", "large"], default="example")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "cpu-split.json")
    args = parser.parse_args(argv)
    log_dir = args.out.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    model = prepare(args.out.parent / "models", (args.model,))[args.model]
    lines = csv_lines(rows(model, 500))
    start = time.process_time()
    floor.single_row(model.booster(), lines, args.requests, warmup=0)
    floor_s = (time.process_time() - start) / args.requests
    app_s = app_cpu_s(model.model_dir, lines, args.requests)
    user_s, system_s, client_s = server_cpu_s(model.model_dir, lines, args.requests, log_dir)
    figures = {"floor": floor_s, "app": app_s, "worker": user_s + system_s, "worker_user": user_s,
               "worker_system": system_s, "http_server": user_s + system_s - app_s, "client": client_s}
    result = {"command": "python -m bench.cpu_split", "model": args.model, "requests": args.requests,
              "cpu_us_per_request": {k: round(v * 1e6, 1) for k, v in figures.items()}}
    print(f"{args.model} model, CPU per single-row request, µs: "
          + ", ".join(f"{k} {v:.0f}" for k, v in result["cpu_us_per_request"].items()))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
