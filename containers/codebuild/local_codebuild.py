"""Runs a buildspec (version 0.2) on this machine with CodeBuild's semantics, so the pipeline is tested here.

    python containers/codebuild/local_codebuild.py [--buildspec buildspec.yml] [--env NAME=VALUE ...] [--out DIR]

What it does as CodeBuild does:
- The phases run in order: install, pre_build, build, post_build. A failed install or pre_build ends the build;
  after a failed build, post_build still runs. `on-failure: CONTINUE` goes on to the next phase instead.
- In a phase, a failing command skips the phase's remaining commands; the `finally` commands run anyway.
- Each command runs in its own shell (env.shell, default sh) in the directory and with the variables the
  previous command left; shell options and functions do not carry over.
- CODEBUILD_BUILD_SUCCEEDING is 1, and 0 from the first failure on; CODEBUILD_SRC_DIR, CODEBUILD_BUILD_ID,
  CODEBUILD_BUILD_NUMBER, CODEBUILD_RESOLVED_SOURCE_VERSION and CODEBUILD_INITIATOR are set as well.
- env.variables, then --env (like start-build --environment-variables-override), override the environment.
- Afterwards the report groups' files are read (JUnit XML: test counts) and, once the build phase has run, the
  artifacts are copied to OUT/artifacts; finding no artifact fails the build. OUT/build.json sums it all up.
Refused here: parameter-store, secrets-manager, run-as, RETRY on-failure modes.
The exit status is 0 when the build succeeded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(__file__).with_name("buildspec.schema.json")
PHASES = ("install", "pre_build", "build", "post_build")
ENDS_THE_BUILD = ("install", "pre_build")  # CodeBuild goes to FINALIZING; after build it goes to POST_BUILD
SHELL_VARIABLES = {"PWD", "OLDPWD", "SHLVL", "_"}
# Runs the command, then records the variables and the directory it leaves, whatever way it exits.
WRAPPER = """trap 'status=$?; env -0 > "{env}"; pwd > "{cwd}"; exit $status' EXIT
set -a
"""


class BuildspecError(Exception):
    pass


def load(path: Path) -> dict:
    spec = yaml.safe_load(path.read_text())
    errors = [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
              for error in jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text())).iter_errors(spec)]
    if errors:
        raise BuildspecError(f"{path} does not follow {SCHEMA.name}:\n  " + "\n  ".join(errors))
    env = spec.get("env", {})
    refused = [key for key in ("parameter-store", "secrets-manager") if key in env] + [
        f"phases.{name}.run-as" for name, phase in spec["phases"].items() if "run-as" in phase] + [
        f"phases.{name}.on-failure: {phase['on-failure']}" for name, phase in spec["phases"].items()
        if phase.get("on-failure", "ABORT") not in ("ABORT", "CONTINUE")]
    if "run-as" in spec:
        refused.append("run-as")
    if refused:
        raise BuildspecError(f"{path} uses what the local runner does not support: {', '.join(refused)}")
    return spec


class Build:
    def __init__(self, spec: dict, source: Path, overrides: dict[str, str]):
        self.spec, self.source = spec, source
        self.shell = {"bash": "bash", "sh": "sh", "/bin/sh": "sh"}.get(spec.get("env", {}).get("shell", "sh"))
        if self.shell is None:
            raise BuildspecError(f"env.shell {spec['env']['shell']} does not run here")
        self.cwd = source
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True)
        self.env = {**os.environ,
                    "CODEBUILD_BUILD_ID": f"local:{uuid.uuid4()}", "CODEBUILD_BUILD_NUMBER": "1",
                    "CODEBUILD_SRC_DIR": str(source), "CODEBUILD_INITIATOR": "local_codebuild",
                    "CODEBUILD_RESOLVED_SOURCE_VERSION": revision.stdout.strip(),
                    "CODEBUILD_BUILD_SUCCEEDING": "1",
                    **spec.get("env", {}).get("variables", {}), **overrides}
        self.phases: dict[str, str] = {}

    def log(self, message: str) -> None:
        print(f"[Container] {message}", flush=True)

    def command(self, text: str) -> bool:
        self.log(f"Running command {text}")
        with tempfile.TemporaryDirectory() as state:
            env_file, cwd_file = Path(state) / "env", Path(state) / "cwd"
            wrapper = WRAPPER.format(env=env_file, cwd=cwd_file)  # temporary paths: no quotes or $ in them
            result = subprocess.run([self.shell, "-c", wrapper + text], cwd=self.cwd, env=self.env)
            if env_file.exists():
                pairs = (item.partition("=") for item in env_file.read_text().split("\0") if "=" in item)
                self.env = {key: value for key, _, value in pairs if key not in SHELL_VARIABLES}
                self.cwd = Path(cwd_file.read_text().strip())
        if result.returncode != 0:
            self.log(f"Command did not exit successfully {text} exit status {result.returncode}")
            self.env["CODEBUILD_BUILD_SUCCEEDING"] = "0"
        return result.returncode == 0

    def phase(self, name: str) -> bool:
        phase = self.spec["phases"].get(name)
        if phase is None:
            return True
        self.log(f"Entering phase {name.upper()}")
        if "runtime-versions" in phase:
            self.log(f"runtime-versions {phase['runtime-versions']} not installed locally: using what is on PATH")
        succeeded = all(self.command(text) for text in phase["commands"])
        finally_succeeded = all(self.command(text) for text in phase.get("finally", []))
        state = "SUCCEEDED" if succeeded and finally_succeeded else "FAILED"
        self.phases[name] = state
        self.log(f"Phase complete: {name.upper()} State: {state}")
        return state == "SUCCEEDED"

    def run(self, out: Path) -> dict:
        ended_early = False
        for name in PHASES:
            if not self.phase(name) and name in ENDS_THE_BUILD \
                    and self.spec["phases"][name].get("on-failure", "ABORT") == "ABORT":
                ended_early = True
                break
        summary = {"phases": self.phases, "reports": self.reports()}
        if not ended_early:
            summary["artifacts"] = self.artifacts(out / "artifacts")
        failed = "FAILED" in self.phases.values() or summary.get("artifacts") == []
        summary["status"] = "FAILED" if failed else "SUCCEEDED"
        summary["exported_variables"] = {name: self.env.get(name, "")
                                         for name in self.spec.get("env", {}).get("exported-variables", [])}
        out.mkdir(parents=True, exist_ok=True)
        (out / "build.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.log(f"Build {summary['status']}: {out / 'build.json'}")
        return summary

    def matches(self, section: dict) -> tuple[Path, list[Path]]:
        base = self.source / section.get("base-directory", ".")
        found = sorted({path for pattern in section["files"] for path in base.glob(pattern) if path.is_file()})
        return base, found

    def reports(self) -> dict:
        reports = {}
        for group, section in self.spec.get("reports", {}).items():
            _, files = self.matches(section)
            counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
            for path in files:
                if section.get("file-format", "JUNITXML") == "JUNITXML":
                    root = ElementTree.parse(path).getroot()
                    for suite in root.iter("testsuite"):
                        for key in counts:
                            counts[key] += int(suite.get(key, 0))
            if not files:
                self.log(f"Report group {group}: no files match {section['files']}")
            reports[group] = {"files": [str(path.relative_to(self.source)) for path in files], **counts}
        return reports

    def artifacts(self, destination: Path) -> list[str] | None:
        section = self.spec.get("artifacts")
        if section is None:
            return None
        base, files = self.matches(section)
        if not files:
            self.log(f"UPLOAD_ARTIFACTS failed: no matching artifact paths found for {section['files']}")
        shutil.rmtree(destination, ignore_errors=True)
        copied = []
        for path in files:
            target = destination / (path.name if section.get("discard-paths") in (True, "yes")
                                    else path.relative_to(base))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(str(target.relative_to(destination)))
        return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildspec", type=Path, default=Path("buildspec.yml"))
    parser.add_argument("--source", type=Path, default=Path.cwd(), help="the source directory (CODEBUILD_SRC_DIR)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="override a variable")
    parser.add_argument("--out", type=Path, default=Path("build/codebuild"), help="build.json and artifacts/")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    try:
        spec = load(args.buildspec if args.buildspec.is_absolute() else source / args.buildspec)
        overrides = dict(item.partition("=")[::2] for item in args.env)
        summary = Build(spec, source, overrides).run(args.out if args.out.is_absolute() else source / args.out)
    except BuildspecError as error:
        print(f"local_codebuild: error: {error}", file=sys.stderr)
        return 2
    return 0 if summary["status"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
