"""Container tests: images built by ./build.sh, run with `docker run IMAGE serve` as SageMaker runs them.

Tests marked `docker` need a Docker engine: without one they fail in CI (CI=true) and skip loudly elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import IN_CI, engine_problem

ROOT = Path(__file__).resolve().parents[2]
READY_DEADLINE_SECONDS = 60
STARTUP_SECONDS: dict[str, float] = {}  # docker run -> first 200 on /ping, per test container
BUILD_SECONDS: dict[str, float] = {}  # ./build.sh build FAMILY, including the base and the wheelhouse
ENGINE_SKIPS: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None or engine_problem() is None:
        return
    message = (f"NO DOCKER ENGINE, CONTAINER TEST NOT RUN: {engine_problem()}. "
               "Start one with `./build.sh engine --install` (as root) or run `bash .ci/run`.")
    if IN_CI:
        pytest.fail(message, pytrace=False)
    ENGINE_SKIPS.append(item.nodeid)
    pytest.skip(message)


def pytest_terminal_summary(terminalreporter) -> None:
    if ENGINE_SKIPS:
        terminalreporter.write_sep("!", f"{len(ENGINE_SKIPS)} CONTAINER TESTS SKIPPED: NO DOCKER ENGINE", red=True)
    if BUILD_SECONDS:
        terminalreporter.write_sep("-", "./build.sh build (with the base image and wheelhouse when missing)")
        for family, seconds in BUILD_SECONDS.items():
            terminalreporter.write_line(f"{seconds:6.1f} s  {family}")
    if STARTUP_SECONDS:
        terminalreporter.write_sep("-", "docker run -> first 200 on /ping")
        for label, seconds in STARTUP_SECONDS.items():
            terminalreporter.write_line(f"{seconds:6.2f} s  {label}")


# --- building --------------------------------------------------------------------------------------------------


def build_sh(*args: str) -> str:
    """Runs ./build.sh with this interpreter on the host; fails the test with its output when it fails."""
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run([str(ROOT / "build.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"./build.sh {' '.join(args)} failed ({result.returncode}):\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}", pytrace=False)
    return result.stdout + result.stderr


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout)


def readable_by_anyone(path: Path) -> Path:
    """Model directories are mounted into containers that may run as another user (--user 1000:1000)."""
    for item in [path, *path.rglob("*")]:
        item.chmod(0o755 if item.is_dir() else 0o644)
    return path


def built_image(family: str) -> str:
    """`./build.sh build FAMILY` (layer caching makes a rebuild quick); returns the image's :latest tag."""
    if engine_problem() is not None:  # the marker hook has already failed or skipped the test
        pytest.skip(engine_problem())
    started = time.monotonic()
    build_sh("build", family)
    BUILD_SECONDS[family] = time.monotonic() - started
    return f"{family}-inference:latest"


@pytest.fixture(scope="session")
def xgboost_image() -> str:
    return built_image("xgboost")


@pytest.fixture(scope="session")
def xgboost_models(tmp_path_factory) -> Path:
    """The example models (risk, treatment, outcome), trained as `build.sh demo` trains them."""
    out = tmp_path_factory.mktemp("xgboost-models")
    subprocess.run([sys.executable, "-m", "models.xgboost.examples", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    return readable_by_anyone(out)


# --- running ---------------------------------------------------------------------------------------------------


@dataclass
class Container:
    name: str
    url: str | None  # None when the container has no published port (--network none)

    def post(self, body: bytes, content_type: str, accept: str | None = None, **headers) -> requests.Response:
        headers = {"Content-Type": content_type, **headers}
        if accept:
            headers["Accept"] = accept
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=60)

    def exec_python(self, code: str) -> subprocess.CompletedProcess:
        return docker("exec", self.name, "python", "-c", code, check=False)


def _ping_inside(name: str, port: int) -> bool:
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/ping', timeout=2)"
    return docker("exec", name, "python", "-c", probe, check=False).returncode == 0


def _ping(url: str) -> bool:
    try:
        return requests.get(f"{url}/ping", timeout=2).status_code == 200
    except requests.RequestException:  # refused, reset, or queued while the worker is still loading the model
        return False


def wait_until_ready(name: str, url: str | None, port: int) -> None:
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if (_ping(url) if url else _ping_inside(name, port)):
            return
        state = docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
        if state[0] != "running":
            raise AssertionError(f"container {name} stopped before answering /ping (exit code {state[1]})")
        time.sleep(0.05)  # poll interval; the deadline above bounds the wait
    raise AssertionError(f"container {name} did not answer /ping within {READY_DEADLINE_SECONDS} s")


@contextmanager
def running(image: str, model_dir: Path, *docker_args: str, env: dict[str, str] | None = None, port: int = 8080,
            publish: bool = True, label: str | None = None, mount: str = "/opt/ml/model"):
    """`docker run IMAGE serve` with the model mounted read-only; yields once /ping answers 200, removes it after."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    command = ["run", "--detach", "--name", name, "--volume", f"{model_dir}:{mount}:ro"]
    if publish:
        command += ["--publish", f"127.0.0.1::{port}"]
    for key, value in (env or {}).items():
        command += ["--env", f"{key}={value}"]
    started = time.monotonic()
    try:
        docker(*command, *docker_args, image, "serve")
        url = None
        if publish:
            host_port = docker("port", name, f"{port}/tcp").stdout.splitlines()[0].rsplit(":", 1)[1]
            url = f"http://127.0.0.1:{host_port}"
        wait_until_ready(name, url, port)
        STARTUP_SECONDS[f"{image} {label or ' '.join(docker_args) or 'default'}"] = time.monotonic() - started
        yield Container(name, url)
    finally:
        logs = docker("logs", name, check=False)
        print(f"--- logs of {name}\n{logs.stdout[-4000:]}{logs.stderr[-4000:]}")  # shown when the test fails
        docker("rm", "--force", name, check=False)
