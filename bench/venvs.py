"""Bench-only virtual environments for the peers (MLServer, the authors' Keras encoder), under build/peers/.

Each is made on first use with `python -m venv` and pip from the package index, pinned, so the project's own
dependencies stay clean; later runs reuse it while its pins are unchanged (recorded in `pins.txt` inside it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / "build" / "peers"


def ensure(name: str, pins: list[str]) -> Path:
    """The Python of build/peers/<name>, created and installed with `pins` if missing or pinned differently."""
    venv = HOME / name
    python, stamp = venv / "bin" / "python", venv / "pins.txt"
    wanted = "\n".join(pins) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"bench: creating {venv} with {' '.join(pins)} from the package index (once; a few minutes)", flush=True)
    started = time.perf_counter()
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    log = venv / "install.log"
    with open(log, "wb") as out:
        done = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", *pins],
                              stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"pip install into {venv} failed; see {log}")
    stamp.write_text(wanted)
    print(f"bench: {venv} ready in {time.perf_counter() - started:.0f} s", flush=True)
    return python
