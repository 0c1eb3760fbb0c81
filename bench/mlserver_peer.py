"""MLServer (Seldon's `mlserver` + `mlserver-xgboost`) serving the same booster over its REST V2 protocol.

It runs from its own venv (build/peers/mlserver, made on first use; `bench.venvs`), bound to 127.0.0.1, with the
settings MLServer documents for CPU-bound models: an inference pool of `parallel_workers` processes, one per core
(as ours runs one gunicorn worker per core), metrics and request logging left as shipped. The model directory holds
the booster as `model.ubj` (the runtime picks its loader by extension) and a model-settings.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from bench import systems, venvs
from bench.protocols import Protocol, v2

# uvloop 0.22 breaks MLServer 1.7.1's inference pool workers (SeldonIO/MLServer#2286, unreleased fix #2285)
PINS = ["mlserver==1.7.1", "mlserver-xgboost==1.7.1", "uvloop==0.21.0"]
MODEL_NAME = "bench-model"


def pins() -> list[str]:
    import xgboost

    return [*PINS, f"xgboost=={xgboost.__version__}"]  # the booster is predicted by the same XGBoost as ours


class MLServer(systems.Server):
    name = "mlserver"
    protocols: tuple[Protocol, ...] = (v2(MODEL_NAME),)
    ready_path = "/v2/health/ready"

    def __init__(self, model_dir: Path, log_dir: Path, workers: int = systems.WORKERS):
        python = venvs.ensure("mlserver", pins())
        repo = (log_dir / "mlserver-models").resolve()
        shutil.rmtree(repo, ignore_errors=True)
        (repo / MODEL_NAME).mkdir(parents=True)
        shutil.copyfile(model_dir / "xgboost-model", repo / MODEL_NAME / "model.ubj")
        (repo / MODEL_NAME / "model-settings.json").write_text(json.dumps({
            "name": MODEL_NAME, "implementation": "mlserver_xgboost.XGBoostModel",
            "parameters": {"uri": "./model.ubj"}}))
        self.port = systems.free_port()
        (repo / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "http_port": self.port, "grpc_port": systems.free_port(),
            "metrics_port": systems.free_port(), "parallel_workers": workers}))
        env = {"PATH": f"{python.parent}:/usr/bin:/bin", "HOME": str(log_dir)}
        self.log = open(log_dir / "mlserver.log", "wb")
        start = time.perf_counter()
        self.process = subprocess.Popen([str(python.parent / "mlserver"), "start", str(repo)], env=env, cwd=repo,
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.process.pid
        systems.wait_for_ping(self.port, 120, lambda: self.process.poll() is None, path=self.ready_path)
        self.start_s = time.perf_counter() - start

    def worker_pids(self) -> list[int]:
        """The inference pool's processes (multiprocessing spawn children), not its resource tracker."""
        return [pid for pid in systems.children(self.pid)
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]

    def stop(self) -> None:
        systems.stop_process(self.process)
        self.log.close()
