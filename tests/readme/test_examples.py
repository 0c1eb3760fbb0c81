"""The README as a newcomer meets it: its set-up is two commands, and every ```bash block in README.md runs as pasted.

Blocks run in document order, from the repository root, as a reader who follows the README runs them: after the
example models that `./build.sh demo` writes (the fixture below writes them the same way), each block in a fresh
`bash -euo pipefail`; a later block may use what an earlier one wrote under build/. Blocks fenced as ```console are
not run: they need real AWS or a GPU, or they are the test suite itself.

Three things differ from a terminal, so that concurrent test runs stay apart and a wrong answer fails: port 8080
becomes a free port (`localhost:8080`, `-p 8080:8080` published on 127.0.0.1 only, SAGEMAKER_BIND_TO_PORT for a
local `serve`); every `docker run` gains a label by which the containers a block leaves behind are removed; and `curl`
fails on an HTTP error status (--fail-with-body) unless the example passes --fail itself. Each block runs in its own
process group, stopped afterwards, so that a `serve &` left behind by a failing block does not outlive it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from serve.process import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{2,3} (.+)$", re.MULTILINE)
BLOCK_SECONDS = 1800  # the PAT example trains for minutes on a busy 2-core machine; image builds can take longer
CURL_FAILS_ON_HTTP_ERRORS = """
curl() {
    local arg
    for arg; do
        if [[ "$arg" == --fail* || "$arg" =~ ^-[a-zA-Z]*f ]]; then command curl "$@"; return; fi
    done
    command curl --fail-with-body "$@"
}
"""


@dataclass(frozen=True)
class Block:
    language: str
    text: str
    line: int
    section: str

    @property
    def name(self) -> str:
        return f"{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')}-line{self.line}"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        headings = HEADING.findall(text, 0, match.start())
        blocks.append(Block(match[1], match[2], text.count("\n", 0, match.start()) + 1,
                            headings[-1] if headings else "top"))
    return blocks


EXAMPLES = [block for block in readme_blocks() if block.language == "bash"]


def needs_docker(block: Block) -> bool:
    return "docker " in block.text or "./build.sh build" in block.text


def as_run(block: Block, port: int, label: str) -> str:
    """The block with port 8080 mapped to `port` and its containers labelled; fails on any other use of 8080."""
    text = (block.text.replace("localhost:8080", f"localhost:{port}")
            .replace("-p 8080:8080", f"-p 127.0.0.1:{port}:8080")
            .replace("docker run ", f"docker run --label {label} "))
    assert "8080" not in text.replace(f"{port}:8080", ""), \
        f"README line {block.line}: port 8080 in a form this test does not map to a free port:\n{block.text}"
    return f"set -euo pipefail\n{CURL_FAILS_ON_HTTP_ERRORS}\n{text}"


def stop_group(pgid: int) -> None:
    """SIGTERM to the block's process group (a `serve &` among them), SIGKILL what is left after 30 s."""
    for sig, grace_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 5)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def remove_containers(label: str) -> list[str]:
    """Removes the containers carrying `label`; returns those that were still running."""
    def ids(*flags: str) -> list[str]:
        return subprocess.run(["docker", "ps", "--quiet", *flags, "--filter", f"label={label}"], capture_output=True,
                              text=True, timeout=60).stdout.split()

    running = ids()
    leftover = ids("--all")
    if leftover:
        subprocess.run(["docker", "rm", "--force", *leftover], capture_output=True, timeout=120)
    return running


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def example_models() -> Path:
    """build/models/xgboost, written by the command `./build.sh demo` runs (the demo itself is tested below)."""
    out = ROOT / "build" / "models" / "xgboost"
    subprocess.run([sys.executable, "-m", "models.xgboost.examples", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=BLOCK_SECONDS)
    return out


def test_the_readme_opens_with_the_two_set_up_commands():
    first = readme_blocks()[0]
    commands = [line.split("#")[0].strip() for line in first.text.splitlines()]
    assert first.language == "console" and commands == ["./build.sh demo", "./build.sh test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^stage .* \./build\.sh test$", ci, re.MULTILINE), "CI runs the README's test command"


def test_the_readme_has_examples_to_run():
    assert len(EXAMPLES) >= 4 and any(needs_docker(block) for block in EXAMPLES)
    assert any("SAGEMAKER_MULTI_MODEL=true" in block.text for block in EXAMPLES)
    assert any("pat-inference" in block.text for block in EXAMPLES)


@pytest.mark.docker
def test_the_demo_serves_the_risk_model_in_a_container():
    result = subprocess.run([str(ROOT / "build.sh"), "demo"], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"container xgboost-demo-\d+ serves the risk model", result.stderr), result.stderr[-3000:]
    assert re.search(r'^\{"predictions": ?\[', result.stdout, re.MULTILINE), result.stdout[-3000:]  # after the build


@pytest.mark.parametrize("block", [pytest.param(block, id=block.name,
                                                marks=[pytest.mark.docker] if needs_docker(block) else [])
                                   for block in EXAMPLES])
def test_readme_example_runs_as_pasted(block: Block, example_models: Path, tmp_path: Path):
    port, label = free_port(), f"readme-example={uuid.uuid4().hex[:12]}"
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    log = tmp_path / "output.log"
    with log.open("wb") as output:  # a file, not a pipe: a background `serve` may hold it open after bash exits
        process = subprocess.Popen(["bash", "-c", as_run(block, port, label)], cwd=ROOT, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait(timeout=BLOCK_SECONDS)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            stop_group(process.pid)
            process.wait()
            still_running = remove_containers(label) if needs_docker(block) else []
    text = log.read_text(errors="replace")
    assert returncode is not None, f"README line {block.line}: still running after {BLOCK_SECONDS} s:\n{text[-4000:]}"
    assert returncode == 0, f"README line {block.line} failed (exit {returncode}):\n{text[-4000:]}"
    assert not still_running, f"README line {block.line} left containers running: {still_running}"
    assert port_is_free(port), f"port {port} is still in use after the block and its processes were stopped"
