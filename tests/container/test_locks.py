"""The image lock files: complete, hashed, current with their .in files, and in step with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import ROOT

CONTAINERS = ROOT / "containers"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Image lock -> the pyproject extra it implements; images use the CPU-only XGBoost wheel.
LOCKS = {
    "xgboost/requirements.lock": "xgboost",
    "pat/requirements-cpu.lock": "pat",
    "pat/requirements-cuda.lock": "pat",
}
RENAMED = {"xgboost": "xgboost-cpu"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(lock: Path) -> dict[str, tuple[Version, int]]:
    """name -> (version, number of hashes) for every requirement in a pip-compile lock."""
    found: dict[str, tuple[Version, int]] = {}
    name = None
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            found[name] = (Version(match.group(2)), 0)
        elif name and line.strip().startswith("--hash=sha256:"):
            found[name] = (found[name][0], found[name][1] + 1)
        elif line and not line.startswith((" ", "#")):
            raise AssertionError(f"{lock.name}: unexpected line {line!r}")
    return found


def top_level(source: Path) -> list[Requirement]:
    """The requirements of a .in file, following -r includes."""
    requirements = []
    for line in source.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            requirements += top_level(source.parent / line[3:].strip())
        elif line:
            requirements.append(Requirement(line))
    return requirements


def assert_satisfied(requirement: Requirement, locked: dict, lock: str) -> None:
    name = canonicalize_name(RENAMED.get(requirement.name, requirement.name))
    assert name in locked, f"{lock} lacks {name} (from {requirement})"
    assert requirement.specifier.contains(locked[name][0], prereleases=True), \
        f"{lock} pins {name}=={locked[name][0]}, outside {requirement}: run ./build.sh lock"


@pytest.mark.parametrize("lock", [*LOCKS, "build-tools.lock"])
def test_every_pin_is_exact_and_hashed(lock):
    locked = pins(CONTAINERS / lock)
    assert locked
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []


@pytest.mark.parametrize("lock", [*LOCKS, "build-tools.lock"])
def test_lock_is_current_with_its_in_file(lock):
    source = CONTAINERS / (lock.removesuffix(".lock") + ".in")
    locked = pins(CONTAINERS / lock)
    for requirement in top_level(source):
        assert_satisfied(requirement, locked, lock)


@pytest.mark.parametrize("lock, extra", LOCKS.items())
def test_lock_satisfies_pyproject(lock, extra):
    locked = pins(CONTAINERS / lock)
    for line in PROJECT["dependencies"] + PROJECT["optional-dependencies"][extra]:
        assert_satisfied(Requirement(line), locked, lock)


def test_images_use_the_cpu_only_xgboost_and_torch_wheels():
    assert "xgboost" not in pins(CONTAINERS / "xgboost/requirements.lock")
    torch_version = pins(CONTAINERS / "pat/requirements-cpu.lock")["torch"][0]
    assert torch_version == Version("2.13.0+cpu")


def test_the_cuda_lock_is_pypis_cuda_12_torch_that_sagemakers_535_and_550_hosts_run():
    """PyPI's Linux torch wheel is the CUDA build and brings the CUDA runtime as nvidia-* wheels. 2.10.0 is the
    newest built against CUDA 12 (12.8; 2.11.0 on need CUDA 13, driver >= 580, which no g4dn host AMI has)."""
    cuda = pins(CONTAINERS / "pat/requirements-cuda.lock")
    assert cuda["torch"][0] == Version("2.10.0")
    nvidia = {name: version for name, (version, _) in cuda.items() if name.startswith("nvidia-")}
    assert nvidia and all(name.endswith("-cu12") for name in nvidia), sorted(nvidia)
    assert nvidia["nvidia-cuda-runtime-cu12"].major == 12 and nvidia["nvidia-cublas-cu12"].major == 12
    assert not any("cu13" in name or name.startswith("cuda-toolkit") for name in cuda)
