"""Start a real `serve` process (gunicorn) on a free loopback port, for tests and benchmarks (stdlib only).

No part of the server: nothing in the runtime imports it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from http.client import HTTPException
from pathlib import Path

SERVE = Path(sys.executable).parent / "serve"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(self, env: dict[str, str], log_path: Path, deadline_s: float = 60):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {"PATH": "/usr/bin:/bin", "HOME": str(log_path.parent), "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
                    **{k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "LD_", "OPENBLAS"))},
                    **env, "SAGEMAKER_BIND_TO_PORT": str(self.port)}
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen([str(SERVE), "serve"], env=full_env, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.deadline_s = deadline_s

    def wait_ready(self) -> "ServeProcess":
        deadline = time.monotonic() + self.deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self.logs()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (OSError, HTTPException):  # refused, 503 (urllib's HTTPError), or queued while the worker loads
                pass
            time.sleep(0.05)
        raise TimeoutError(f"serve did not answer /ping within {self.deadline_s} s: {self.logs()[-2000:]}")

    def logs(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
        return self.process.returncode
