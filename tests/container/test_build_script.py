"""build.sh's interface, through --help and --dry-run (which print the commands instead of running them)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib

from .conftest import ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def build_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / "build.sh"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_help_lists_every_command():
    result = build_sh("--help")
    assert result.returncode == 0
    for command in ("build [xgboost|pat|all]", "demo", "test [PYTEST_ARGS]", "install [python|engine|registry|all]",
                    "base", "engine", "lock", "train", "package", "upload", "push", "register", "deploy", "smoke",
                    "destroy", "batch", "infra [check]", "all", "--dry-run"):
        assert command in result.stdout


def test_dry_run_build_prints_the_docker_builds_with_tags_and_build_args():
    result = build_sh("--dry-run", "build", "all", BASE_IMAGE="example.org/python:3.11-slim-bookworm")
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stderr.splitlines() if line.startswith("+ docker build")]
    assert len(builds) == 2
    for build, image in zip(builds, ("xgboost", "pat")):
        assert f"--file containers/{image}/Dockerfile" in build
        assert "--build-arg BASE_IMAGE=example.org/python:3.11-slim-bookworm" in build
        assert f"--build-arg VERSION={VERSION}" in build and "--build-arg GIT_REVISION=" in build
        assert f"--tag {image}-inference:latest --tag {image}-inference:{VERSION}-" in build
    assert "--build-arg PAT_TORCH_VARIANT=cpu" in builds[1]
    # The images say their torch and CUDA (read from the locks) in labels the deploy tool checks hosts against.
    assert "--label sagemaker-clinical-inference.cuda.version=none --tag xgboost-inference:latest" in builds[0]
    assert ("--label sagemaker-clinical-inference.torch.version=2.13.0+cpu "
            "--label sagemaker-clinical-inference.cuda.version=none --tag pat-inference:latest") in builds[1]


def test_cuda_variant_is_selected_by_the_build_argument_and_labelled_cuda_12():
    result = build_sh("--dry-run", "build", "pat", PAT_TORCH_VARIANT="cuda", BASE_IMAGE="base")
    assert result.returncode == 0, result.stderr
    build = next(line for line in result.stderr.splitlines() if line.startswith("+ docker build"))
    assert "--build-arg PAT_TORCH_VARIANT=cuda" in build
    assert ("--label sagemaker-clinical-inference.torch.version=2.10.0 "
            "--label sagemaker-clinical-inference.cuda.version=12.8") in build
    # Its floating tag is its own, so :latest stays the CPU build the tests run.
    assert f"--tag pat-inference:latest-cuda --tag pat-inference:{VERSION}-" in build and "-cuda build/context/pat" in build


def test_bad_arguments_fail_with_a_message():
    for args, message in ((["build", "tensorflow"], "unknown image 'tensorflow'"), (["frobnicate"], "unknown command"),
                          (["build", "xgboost", "pat"], "build takes one image name")):
        result = build_sh("--dry-run", *args, PAT_TORCH_VARIANT="cpu")
        assert result.returncode != 0 and message in result.stderr, args
    assert build_sh("--dry-run", "build", "pat", PAT_TORCH_VARIANT="rocm").returncode != 0


def test_each_image_build_context_carries_its_own_wheelhouse_only(tmp_path):
    """build.sh stages each image's context in build/context/IMAGE; a stand-in docker lists what it is given."""
    wheelhouse = tmp_path / "wheelhouse"
    locks = [ROOT / "containers/build-tools.lock", ROOT / "containers/xgboost/requirements.lock"]
    digest = hashlib.sha256(b"".join(lock.read_bytes() for lock in locks)).hexdigest()
    for name, wheel in (("xgboost", "xgboost-3.0-py3-none-any.whl"), ("pat-cuda", "torch-2.9.1-cu128.whl"),
                        ("pat-cpu", "torch-2.9.1-cpu.whl"), ("ci", "pytest-8.whl")):
        (wheelhouse / name).mkdir(parents=True)
        (wheelhouse / name / wheel).write_text("wheel")
    (wheelhouse / "xgboost" / ".locks.sha256").write_text(digest + "\n")
    bin_dir, received = tmp_path / "bin", tmp_path / "context.txt"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f"""#!/bin/sh
case "$1" in
    build) for last; do :; done; (cd "$last" && find . -type f | sed 's|^./||') > {received} ;;
    image) echo 1 ;;
esac
""")
    (bin_dir / "docker").chmod(0o755)
    result = build_sh("build", "xgboost", BASE_IMAGE="base", WHEELHOUSE=str(wheelhouse),
                      PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert result.returncode == 0, result.stderr
    members = received.read_text().split()
    assert "build/wheelhouse/xgboost/xgboost-3.0-py3-none-any.whl" in members
    assert not [m for m in members if "pat-" in m or "wheelhouse/ci" in m or "torch" in m]
    assert "containers/xgboost/Dockerfile" in members and "models/xgboost/handler.py" in members
    assert not [m for m in members if m.startswith(("models/pat", "tests/", "bench/")) or "__pycache__" in m]


def test_the_base_image_fallback_updates_the_package_lists_before_installing_debootstrap(tmp_path):
    """A fresh CodeBuild image has no apt lists: `apt-get install debootstrap` alone fails there."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "apt-get.log"
    bin_dir.mkdir()
    stubs = {"docker": "exit 1",  # no base image yet
             "id": "echo 0",  # as root
             "apt-get": f'echo "$*" >> {calls}; case "$*" in *install*) exit 1 ;; esac'}
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    result = subprocess.run([str(ROOT / "containers/base/build-base.sh")], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin",
                                             "LOCAL_BASE_IMAGE": "build-base-test:never"})
    assert result.returncode != 0 and "could not install debootstrap" in result.stderr
    lines = calls.read_text().splitlines()
    assert [line.split()[-1] if "install" in line else line.split()[0] for line in lines] == ["update", "debootstrap"]


def test_install_checks_before_installing_and_test_runs_pytest_on_this_tree():
    result = build_sh("--dry-run", "test", "tests/unit/test_settings.py")
    assert result.returncode == 0, result.stderr
    assert "the Python dependencies are installed" in result.stderr and "pip install" not in result.stderr
    assert f"+ {sys.executable} -m pytest tests/unit/test_settings.py" in result.stderr
    assert build_sh("install", "nothing").returncode != 0
