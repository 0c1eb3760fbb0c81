"""The deploy as it runs for real, against moto and the local registry, with every AWS call recorded: `./build.sh
infra` as the deployer, CodeBuild's post_build steps (taken from containers/codebuild/pipeline.sh) as the
CodeBuild role, then deploy, smoke, batch, monitor (with the XGBoost models on endpoints of their own), a second
release (an update), verify when build.sh has it, destroy."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..conftest import ROOT, TINY_IMAGES, BuildSh, build_sh_env

PIPELINE = ROOT / "containers" / "codebuild" / "pipeline.sh"
# No AWS call: train runs the example trainers locally (minutes of CPU), so the run gives upload the model
# directories itself.
LOCAL_ONLY = {"train"}
FEATURES = ["age", "bmi", "hba1c"]
PAT_TASKS = ["depression", "ssri"]  # moto answers smoke with canned bodies: its checks may fail


@dataclass
class Step:
    principal: str  # "deployer" or the logical id of the stack's role that runs it
    command: list[str]
    calls: list[dict]

    @property
    def label(self) -> str:
        """What the table calls it: the build.sh command line, or CodeBuild's post_build."""
        command = "build.sh " + " ".join(self.command)
        return f"CodeBuild post_build, {command}" if self.principal == "CodeBuildRole" else command


def pipeline_steps() -> list[str]:
    """The build.sh commands of post_build after a successful build, as pipeline.sh runs them."""
    match = re.search(r"^\s*1\)[^\n]*\./build\.sh ([a-z ]+?) ;;", PIPELINE.read_text(), re.MULTILINE)
    if match is None:
        raise AssertionError(f"{PIPELINE}: no `1) ... ./build.sh STEPS ;;` line in post_build")
    return match.group(1).split()


def build_sh_commands() -> set[str]:
    usage = subprocess.run([str(ROOT / "build.sh"), "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"^  ([a-z]+)\b", usage, re.MULTILINE))


def model_dirs(root: Path) -> dict[str, Path]:
    """Small model directories that smoke can make samples from (the bytes of the model do not matter here)."""
    sources = {}
    for name, classes in (("xgboost-risk", [0, 1]), ("xgboost-treatment", ["a", "b", "c"]), ("xgboost-outcome", [])):
        sources[name] = root / name
        sources[name].mkdir(parents=True)
        (sources[name] / "xgboost-model").write_bytes(b"\x00booster")
        (sources[name] / "metadata.json").write_text(json.dumps({"feature_names": FEATURES, "class_labels": classes}))
    sources["pat"] = root / "pat"
    sources["pat"].mkdir()
    (sources["pat"] / "config.json").write_text(json.dumps({"tasks": {task: {} for task in PAT_TASKS}}))
    return sources


def stage_config(path: Path, stage: str, sources: dict[str, Path]) -> Path:
    """The shipped config as it is ({platform.NAME} read from the stack), with the tiny images and these sources."""
    config = json.loads((ROOT / "containers" / "deploy" / f"{stage}.json").read_text())
    config.pop("$schema")
    for name, family in config["families"].items():
        family["image"] = {"repository": family["image"]["repository"], "local_image": TINY_IMAGES[name]}
        for model in family["models"]:
            model["source"] = str(sources[model["name"]])
    path.write_text(json.dumps(config, indent=2))
    return path


def monitor_config(path: Path, stage_config_path: Path) -> Path:
    """The stage's config with its XGBoost models on their own endpoints, which Model Monitor can watch (the dev
    stage serves them from one multi-model endpoint), and a baseline beside each model as train writes it."""
    config = json.loads(stage_config_path.read_text())
    config["families"]["xgboost"]["mode"] = "SingleModel"
    for model in config["families"]["xgboost"]["models"]:
        Path(model["source"] + ".baseline.csv").write_text(",".join(FEATURES) + "\n1,2,3\n")
    path.write_text(json.dumps(config, indent=2))
    return path


def run(moto, registry, tiny_images, call_logs, work: Path, stage: str = "dev") -> list[Step]:
    sources = model_dirs(work / "models")
    config = stage_config(work / f"{stage}.json", stage, sources)
    monitored = monitor_config(work / f"{stage}-monitor.json", config)
    env = build_sh_env(moto, work, registry.host)
    build_sh = BuildSh(env)
    steps: list[Step] = []

    def step(principal: str, *command: str, tag: str = "1.0.0-aaaaaaa", check: bool = True, using: Path = config):
        log = call_logs(f"{len(steps):02d}-{command[0]}")
        result = build_sh(*command, check=check, DEPLOY_CONFIG=str(using), IMAGE_TAG=tag, **log.env)
        steps.append(Step(principal, list(command), log.calls()))
        return result

    tiny_images("1.0.0-aaaaaaa")
    tiny_images("1.0.1-bbbbbbb")
    step("deployer", "infra")
    codebuild = [command for command in pipeline_steps() if command not in LOCAL_ONLY]
    step("CodeBuildRole", *codebuild)
    step("deployer", "deploy")
    step("deployer", "smoke", check=False)
    step("deployer", "batch", "--model", "xgboost-risk", "--wait")
    if "monitor" in build_sh_commands():
        # moto has no monitoring schedules: the run stops at the first DescribeMonitoringSchedule, after the
        # baselines, the job definitions (which pass the role) and the alarms of every endpoint.
        step("deployer", "monitor", check=False, using=monitored)
    step("CodeBuildRole", *codebuild, tag="1.0.1-bbbbbbb")
    step("deployer", "deploy", tag="1.0.1-bbbbbbb")
    if "verify" in build_sh_commands():
        step("deployer", "verify", check=False)
    step("deployer", "destroy", tag="1.0.1-bbbbbbb")
    return steps
