"""buildspec.yml: its schema, the local runner's CodeBuild semantics, and the real pipeline run end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from .conftest import ROOT, build_sh_env, stage_config

RUNNER = ROOT / "containers" / "codebuild" / "local_codebuild.py"
PIPELINE = ROOT / "containers" / "codebuild" / "pipeline.sh"
SCHEMA = ROOT / "containers" / "codebuild" / "buildspec.schema.json"


def run_buildspec(source: Path, *overrides: str, env: dict | None = None, out: Path | None = None):
    """Runs source/buildspec.yml with the local runner; returns (exit status, build.json or None, output)."""
    out = out or source / "codebuild-out"
    arguments = [sys.executable, str(RUNNER), "--source", str(source), "--out", str(out)]
    for override in overrides:
        arguments += ["--env", override]
    result = subprocess.run(arguments, cwd=source, env=env, capture_output=True, text=True, timeout=1800)
    summary = out / "build.json"
    return result.returncode, json.loads(summary.read_text()) if summary.exists() else None, \
        result.stdout + result.stderr


def write_buildspec(tmp_path: Path, text: str) -> Path:
    (tmp_path / "buildspec.yml").write_text(textwrap.dedent(text))
    return tmp_path


def test_the_buildspec_follows_the_schema_and_every_phase_calls_the_pipeline_script():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    spec = yaml.safe_load((ROOT / "buildspec.yml").read_text())
    jsonschema.Draft202012Validator(schema).validate(spec)
    assert spec["version"] == 0.2
    assert {name: phase["commands"] for name, phase in spec["phases"].items()} == {
        name: [f"containers/codebuild/pipeline.sh {name}"] for name in ("install", "pre_build", "build", "post_build")}
    assert os.access(PIPELINE, os.X_OK)
    assert spec["reports"]["pytest"]["file-format"] == "JUNITXML"
    assert "*/registration.json" in spec["artifacts"]["files"]
    # The cache keeps the CPU wheelhouses; the CUDA one (several GB) is downloaded when a release needs it.
    cached = spec["cache"]["paths"]
    assert "build/wheelhouse/ci/**/*" in cached and "build/wheelhouse/xgboost/**/*" in cached
    assert not [path for path in cached if "cuda" in path or path.startswith("build/wheelhouse/**")]


@pytest.mark.parametrize("broken, message", [
    ({"version": 0.1}, "version: 0.1 is not one of"),
    ({"phases": {"build": {"commands": "make"}}}, "phases.build.commands: 'make' is not of type 'array'"),
    ({"phases": {"build": {"commands": ["make"], "runtime-versions": {"python": 3.11}}}}, "phases.build"),
    ({"env": {"variables": {"RETRIES": 3}}}, "env.variables.RETRIES: 3 is not of type 'string'"),
    ({"reports": {"unit": {"files": ["*.xml"], "file-format": "XUNIT"}}}, "'XUNIT' is not one of"),
])
def test_the_runner_refuses_a_buildspec_that_breaks_the_schema(tmp_path, broken, message):
    spec = {"version": 0.2, "phases": {"build": {"commands": ["true"]}}}
    spec.update(broken)
    (tmp_path / "buildspec.yml").write_text(yaml.safe_dump(spec))
    status, summary, output = run_buildspec(tmp_path)
    assert status == 2 and summary is None and message in output


def test_each_command_gets_its_own_shell_with_the_directory_and_variables_carried(tmp_path):
    write_buildspec(tmp_path, """\
        version: 0.2
        env:
          shell: bash
          variables: {GREETING: from-buildspec, OVERRIDDEN: before}
        phases:
          install:
            commands:
              - mkdir -p sub && cd sub
              - export EXPORTED=1; PLAIN=2
              - echo $$ > ../pid-1
          build:
            commands:
              - echo $$ > ../pid-2
              - echo "$PWD|$EXPORTED|$PLAIN|$GREETING|$OVERRIDDEN|$CODEBUILD_SRC_DIR" > ../state
              - set -e; shopt -s nullglob
              - shopt -q nullglob || touch ../options-not-carried
        """)
    status, summary, output = run_buildspec(tmp_path, "OVERRIDDEN=yes")
    assert status == 0, output
    assert (tmp_path / "state").read_text().strip() == f"{tmp_path}/sub|1|2|from-buildspec|yes|{tmp_path}"
    assert (tmp_path / "pid-1").read_text() != (tmp_path / "pid-2").read_text()
    assert (tmp_path / "options-not-carried").exists()
    assert summary["phases"] == {"install": "SUCCEEDED", "build": "SUCCEEDED"} and summary["status"] == "SUCCEEDED"


def test_a_failed_build_skips_its_commands_runs_finally_and_post_build_with_succeeding_0(tmp_path):
    write_buildspec(tmp_path, """\
        version: 0.2
        phases:
          pre_build:
            commands:
              - echo "$CODEBUILD_BUILD_SUCCEEDING" > succeeding-before
          build:
            commands:
              - exit 3
              - touch skipped
            finally:
              - touch finally-ran
          post_build:
            commands:
              - echo "$CODEBUILD_BUILD_SUCCEEDING" > succeeding-after
        reports:
          unit:
            files: ["*.xml"]
        artifacts:
          files: [missing-artifact]
        """)
    status, summary, output = run_buildspec(tmp_path)
    assert status == 1
    assert "Command did not exit successfully exit 3 exit status 3" in output
    assert not (tmp_path / "skipped").exists() and (tmp_path / "finally-ran").exists()
    assert (tmp_path / "succeeding-before").read_text().strip() == "1"
    assert (tmp_path / "succeeding-after").read_text().strip() == "0"
    assert summary["phases"] == {"pre_build": "SUCCEEDED", "build": "FAILED", "post_build": "SUCCEEDED"}
    assert summary["artifacts"] == [] and summary["status"] == "FAILED"


@pytest.mark.parametrize("on_failure, runs_on", [("ABORT", False), ("CONTINUE", True)])
def test_a_failed_pre_build_ends_the_build_unless_it_continues(tmp_path, on_failure, runs_on):
    write_buildspec(tmp_path, f"""\
        version: 0.2
        phases:
          pre_build:
            on-failure: {on_failure}
            commands: ["false"]
          build:
            commands: [touch built]
          post_build:
            commands: [touch post-built]
        artifacts:
          files: [built]
        """)
    status, summary, _ = run_buildspec(tmp_path)
    assert status == 1 and summary["status"] == "FAILED"
    assert (tmp_path / "built").exists() is runs_on and (tmp_path / "post-built").exists() is runs_on
    assert summary.get("artifacts") == (["built"] if runs_on else None)  # no UPLOAD_ARTIFACTS after FINALIZING


def test_reports_are_read_as_junit_and_artifacts_copied(tmp_path):
    write_buildspec(tmp_path, """\
        version: 0.2
        phases:
          build:
            commands:
              - mkdir -p reports out/dev
              - printf '<testsuites><testsuite tests="3" failures="1" errors="0" skipped="1"/></testsuites>' > reports/a.xml
              - echo '{}' > out/dev/registration.json
        reports:
          pytest:
            base-directory: reports
            files: ["*.xml"]
            file-format: JUNITXML
        artifacts:
          base-directory: out
          files: ["*/registration.json"]
        """)
    status, summary, output = run_buildspec(tmp_path)
    assert status == 0, output
    assert summary["reports"]["pytest"] == {"files": ["reports/a.xml"], "tests": 3, "failures": 1, "errors": 0,
                                            "skipped": 1}
    assert summary["artifacts"] == ["dev/registration.json"]
    assert (tmp_path / "codebuild-out" / "artifacts" / "dev" / "registration.json").exists()


def test_the_runner_refuses_what_it_cannot_do_locally(tmp_path):
    write_buildspec(tmp_path, """\
        version: 0.2
        env:
          parameter-store: {TOKEN: /ci/token}
        phases:
          build:
            commands: ["true"]
        """)
    status, summary, output = run_buildspec(tmp_path)
    assert status == 2 and "does not support: parameter-store" in output


def test_post_build_pushes_only_after_a_successful_build():
    env = {key: value for key, value in os.environ.items() if key != "CODEBUILD_BUILD_SUCCEEDING"}
    failed = subprocess.run([str(PIPELINE), "post_build"], env={**env, "CODEBUILD_BUILD_SUCCEEDING": "0"},
                            capture_output=True, text=True)
    assert failed.returncode == 0 and "the build failed: nothing is pushed or registered" in failed.stderr
    outside = subprocess.run([str(PIPELINE), "post_build"], env=env, capture_output=True, text=True)
    assert outside.returncode == 2 and "CODEBUILD_BUILD_SUCCEEDING is not set" in outside.stderr
    unknown = subprocess.run([str(PIPELINE), "deploy"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "usage" in unknown.stderr


@pytest.mark.deploy
@pytest.mark.docker
def test_the_real_pipeline_runs_end_to_end_and_post_build_only_after_a_good_build(moto, registry, execution_role,
                                                                                 tmp_path):
    """buildspec.yml as it is, through the runner: install, tests, the real xgboost build, push and register.
    The settings that buildspec.yml declares narrow the test runs to one quick file, as a project override would."""
    config = stage_config(tmp_path, stage="prod", tiny=False, families=("xgboost",))
    spec = json.loads(config.read_text())
    spec["stage"] = "pipeline-test"
    config.write_text(json.dumps(spec))
    env = build_sh_env(moto, tmp_path, registry.host)
    del env["DEPLOY_STATE_DIR"]  # the artifacts come from build/deploy, as in CodeBuild
    env.pop("CI", None)
    state, out = ROOT / "build" / "deploy" / "pipeline-test", tmp_path / "codebuild-out"
    # A fixed tag: others commit to this checkout while the pipeline runs, which a CodeBuild checkout never sees.
    overrides = ["IMAGE_TAG=0.0.0-pipeline-test", f"DEPLOY_CONFIG={config}", "PIPELINE_EXTRAS=", "IMAGES=xgboost",
                 "UNIT_TESTS=tests/deploy/test_plan.py", "CONTAINER_TESTS=tests/deploy/test_plan.py -k names"]
    try:
        status, summary, output = run_buildspec(ROOT, *overrides, env=env, out=out)
        assert status == 0, output[-6000:]
        assert summary["phases"] == dict.fromkeys(("install", "pre_build", "build", "post_build"), "SUCCEEDED")
        report = summary["reports"]["pytest"]
        assert {"build/reports/pre_build.xml", "build/reports/build.xml"} <= set(report["files"])
        assert report["tests"] > 10 and report["failures"] == report["errors"] == 0
        assert summary["artifacts"] == ["pipeline-test/endpoints.env", "pipeline-test/registration.json"]
        registration = json.loads((out / "artifacts" / "pipeline-test" / "registration.json").read_text())
        assert len(registration["models"]) == 3 and all("@sha256:" in m["image"] for m in registration["models"])
        assert moto.requests("CreateEndpoint") == []  # post_build pushes and registers; deploy is separate

        shutil.rmtree(state)
        moto.journal.write_text("")
        status, summary, output = run_buildspec(ROOT, *overrides[:-3], "IMAGES=no-such-image",
                                                "UNIT_TESTS=tests/deploy/test_plan.py -k names", env=env, out=out)
        assert status == 1
        assert summary["phases"]["build"] == "FAILED" and summary["phases"]["post_build"] == "SUCCEEDED"
        assert "the build failed: nothing is pushed or registered" in output
        assert moto.operations() == [] and not state.exists()
        assert summary["artifacts"] == [] and summary["status"] == "FAILED"
    finally:
        shutil.rmtree(state, ignore_errors=True)
        subprocess.run(["docker", "rmi", "xgboost-inference:0.0.0-pipeline-test"], capture_output=True)
        for report in ("pre_build", "build"):
            (ROOT / "build" / "reports" / f"{report}.xml").unlink(missing_ok=True)

