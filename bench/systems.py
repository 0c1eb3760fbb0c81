"""The servers under test, each started the way its users start it, bound to 127.0.0.1 only.

- `ours`: the real `serve` console script (gunicorn workers of one thread, serve.workers.InlineWorker), as
  serve/process.py starts it.
- `naive`: bench/baselines/naive_byo.py under gunicorn sync workers, OMP_NUM_THREADS=1.
- `lean`: bench/baselines/lean_byo.py, the same way.
- `image`: `docker run IMAGE serve` with the model mounted read-only, published on a loopback port.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.protocols import CSV, JSON, Protocol
from serve.process import ServeProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


def wait_for_ping(port: int, deadline_s: float, alive=lambda: True, interval_s: float = 0.01,
                  path: str = "/ping") -> float:
    """Seconds until GET `path` answers 200, polling every 10 ms (liveness every 0.5 s); raises at the deadline."""
    start = checked = time.perf_counter()
    while time.perf_counter() - start < deadline_s:
        if time.perf_counter() - checked > 0.5:
            checked = time.perf_counter()
            if not alive():
                raise RuntimeError("server exited before answering /ping")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return time.perf_counter() - start
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
        time.sleep(interval_s)
    raise TimeoutError(f"no 200 on {path} within {deadline_s} s")


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _memory_mib(pid: int) -> dict[str, float]:
    """RSS and PSS of one process from /proc (PSS splits pages shared with the master and siblings)."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key.lower() + "_mib"] = int(rest.split()[0]) / 1024
    return values


def tree_memory(pid: int, worker_pids: list[int] | None = None) -> dict:
    """Memory of a server's master and its workers (by default the master's direct children)."""
    workers = [_memory_mib(child) for child in (children(pid) if worker_pids is None else worker_pids)]
    master = _memory_mib(pid)
    return {
        "master_rss_mib": master.get("rss_mib"),
        "worker_rss_mib": [w.get("rss_mib") for w in workers],
        "worker_pss_mib": [w.get("pss_mib") for w in workers],
        "total_rss_mib": master.get("rss_mib", 0) + sum(w.get("rss_mib", 0) for w in workers),
        "total_pss_mib": master.get("pss_mib", 0) + sum(w.get("pss_mib", 0) for w in workers),
    }


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by a process and its children (workers included while they live)."""
    total = 0.0
    for each in [pid, *children(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


class Server:
    name: str
    protocols: tuple[Protocol, ...] = (CSV,)  # what it is measured with; the first is its own
    port: int
    start_s: float
    pid: int

    def stop(self) -> None:
        raise NotImplementedError

    def worker_pids(self) -> list[int] | None:
        return None  # the master's direct children

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Ours(Server):
    name = "ours"
    protocols = (CSV, JSON)
    env: dict[str, str] = {}
    deadline_s = 60

    def __init__(self, model_dir: Path, log_dir: Path, workers: int = WORKERS):
        start = time.perf_counter()
        # 16 MiB, as for Batch Transform: 10,000 rows of the large model's 100 features are about 9 MB of CSV
        self.process = ServeProcess({"SM_MODEL_DIR": str(model_dir), "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers),
                                     "SAGEMAKER_MAX_PAYLOAD_IN_MB": "16", "SERVE_LOG_LEVEL": "warning", **self.env},
                                    log_dir / f"{self.name}.log")
        self.port, self.pid = self.process.port, self.process.process.pid
        wait_for_ping(self.port, self.deadline_s, lambda: self.process.process.poll() is None)
        self.start_s = time.perf_counter() - start

    def stop(self) -> None:
        self.process.stop()


class OursPat(Ours):
    """The PAT handler on the CPU (gunicorn's socket accepts before a worker has loaded torch, so /ping may time out
    at first: wait_for_ping retries)."""

    name = "ours-pat"
    env = {"SERVE_HANDLER": "pat", "SERVE_DEVICE": "cpu"}
    deadline_s = 180


class FlaskBaseline(Server):
    """gunicorn sync workers serving one of bench/baselines/'s Flask apps (OMP_NUM_THREADS=1)."""

    app: str  # module:app
    model_variable: str  # the environment variable the app reads the booster's path from

    def __init__(self, model_dir: Path, log_dir: Path, workers: int = WORKERS):
        self.port = free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OMP_NUM_THREADS": "1",
               self.model_variable: str(model_dir / "xgboost-model"), "PYTHONPATH": str(ROOT)}
        self.log = open(log_dir / f"{self.name}.log", "wb")
        start = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
             "--timeout", "60", self.app],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid
        wait_for_ping(self.port, 60, lambda: self.process.poll() is None)
        self.start_s = time.perf_counter() - start

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class Naive(FlaskBaseline):
    """bench/baselines/naive_byo.py: the model loads on each worker's first request, answers written by pandas."""

    name = "naive"
    app = "bench.baselines.naive_byo:app"
    model_variable = "NAIVE_MODEL_PATH"


class LeanNaive(FlaskBaseline):
    """bench/baselines/lean_byo.py: loaded at import, `DMatrix(data.values, nthread=1)`, answers joined with str."""

    name = "lean"
    app = "bench.baselines.lean_byo:app"
    model_variable = "LEAN_MODEL_PATH"


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, up to 30 s for a graceful exit, then SIGKILL to its process group (started with a new session)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def docker_available() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0 if _which("docker") else False


def _which(program: str) -> bool:
    return any((Path(p) / program).exists() for p in os.environ.get("PATH", "").split(os.pathsep))


def image_exists(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0


def image_size_mb(image: str) -> float:
    out = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True,
                         check=True).stdout
    return int(out.strip()) / 1e6


class Container(Server):
    """`docker run IMAGE serve` with the model at /opt/ml/model (read-only); start_s is `docker run` to /ping 200."""

    name = "image"

    def __init__(self, image: str, model_dir: Path, env: dict[str, str] | None = None, deadline_s: float = 120):
        self.port = free_port()
        command = ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{self.port}:8080",
                   "-v", f"{model_dir.resolve()}:/opt/ml/model:ro"]
        for key, value in (env or {}).items():
            command += ["-e", f"{key}={value}"]
        start = time.perf_counter()
        self.container = subprocess.run(command + [image, "serve"], capture_output=True, text=True,
                                        check=True).stdout.strip()
        try:
            wait_for_ping(self.port, deadline_s, self._running)
        except Exception:
            self.stop()
            raise
        self.start_s = time.perf_counter() - start
        self.pid = int(subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", self.container],
                                      capture_output=True, text=True, check=True).stdout)

    def _running(self) -> bool:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.container], capture_output=True,
                             text=True)
        return out.stdout.strip() == "true"

    def stop(self) -> None:
        subprocess.run(["docker", "stop", "-t", "30", self.container], capture_output=True)
