"""build.sh's interface, through --help and --dry-run (which print the commands instead of running them)."""

from __future__ import annotations

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
                    "base", "engine", "lock", "push", "register", "deploy", "batch", "all", "--dry-run"):
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
    assert f"--tag pat-inference:latest-cuda --tag pat-inference:{VERSION}-" in build and "-cuda ." in build


def test_bad_arguments_fail_with_a_message():
    for args, message in ((["build", "tensorflow"], "unknown image 'tensorflow'"), (["frobnicate"], "unknown command"),
                          (["build", "xgboost", "pat"], "build takes one image name")):
        result = build_sh("--dry-run", *args, PAT_TORCH_VARIANT="cpu")
        assert result.returncode != 0 and message in result.stderr, args
    assert build_sh("--dry-run", "build", "pat", PAT_TORCH_VARIANT="rocm").returncode != 0


def test_install_checks_before_installing_and_test_runs_pytest_on_this_tree():
    result = build_sh("--dry-run", "test", "tests/unit/test_settings.py")
    assert result.returncode == 0, result.stderr
    assert "the Python dependencies are installed" in result.stderr and "pip install" not in result.stderr
    assert f"+ {sys.executable} -m pytest tests/unit/test_settings.py" in result.stderr
    assert build_sh("install", "nothing").returncode != 0
