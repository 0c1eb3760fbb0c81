"""GPU hosts: the SageMaker AMI (and so the NVIDIA driver) a GPU endpoint or transform job runs on, and whether an
image's CUDA runtime runs there.

An image says its torch and CUDA versions in labels that build.sh computes from its lock file with
`python -m sagemaker_deploy.gpu_hosts labels LOCK` (lock_labels below), so they are read back with
`docker image inspect`, without running the image.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import DeployError

TORCH_LABEL = "sagemaker-clinical-inference.torch.version"
CUDA_LABEL = "sagemaker-clinical-inference.cuda.version"  # "12.8", or "none" for a CPU build
NO_CUDA = "none"
ENDPOINT, BATCH = "endpoint", "batch"


@dataclass(frozen=True)
class HostAmi:
    name: str
    job: str  # ENDPOINT: ProductionVariant.InferenceAmiVersion; BATCH: TransformResources.TransformAmiVersion
    driver: int  # NVIDIA driver major version
    cuda: str  # the CUDA version the driver runs natively


# From the ProductionVariant and TransformResources API reference (checked 2026-12-01), in order of preference:
# the oldest driver that runs an image is chosen (al2-ami-sagemaker-inference-gpu-2 is the one whose documentation
# lists ml.g4dn). A GPU endpoint without InferenceAmiVersion gets driver 470 (CUDA 11.4), so one is always set.
# al2023-ami-sagemaker-inference-gpu-4-1 (driver 580, CUDA 13.0) is left out: AWS documents no instance types for it.
AMIS = (
    HostAmi("al2-ami-sagemaker-inference-gpu-2", ENDPOINT, 535, "12.2"),
    HostAmi("al2-ami-sagemaker-inference-gpu-2-1", ENDPOINT, 535, "12.2"),  # CUDA-compat mounting disabled
    HostAmi("al2-ami-sagemaker-inference-gpu-3-1", ENDPOINT, 550, "12.4"),  # CUDA-compat mounting disabled
    HostAmi("al2-ami-sagemaker-batch-gpu-470", BATCH, 470, "11.4"),
    HostAmi("al2-ami-sagemaker-batch-gpu-535", BATCH, 535, "12.2"),
)
# CUDA minor-version compatibility: a CUDA X.y runtime runs on any driver at least this new (SASS for the GPU
# shipped, as torch's wheels do for sm_75).
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_CUDA_RUNTIME = re.compile(r"nvidia-cuda-runtime(-cu\d+)?")


def lock_labels(lock: Path) -> dict[str, str]:
    """The labels an image built from a hashed lock carries: torch's version and the CUDA runtime's major.minor
    (from the pinned nvidia-cuda-runtime wheel); no torch label for an image without torch."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    torch = pins.get("torch")
    if torch is None:
        return {CUDA_LABEL: NO_CUDA}
    runtime = next((version for name, version in pins.items() if _CUDA_RUNTIME.fullmatch(name)), None)
    if runtime is None:
        if "+cpu" not in torch:
            raise DeployError(f"{lock} pins torch=={torch} but no nvidia-cuda-runtime wheel: its CUDA is unknown")
        return {TORCH_LABEL: torch, CUDA_LABEL: NO_CUDA}
    return {TORCH_LABEL: torch, CUDA_LABEL: ".".join(runtime.split(".")[:2])}


def image_labels(reference: str) -> dict[str, str] | None:
    """The labels of a local image (docker image inspect), or None when there is no such image."""
    try:
        result = subprocess.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", reference],
                                capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return None
    if result.returncode != 0:
        return None
    return json.loads(result.stdout) or {}


def describe(labels: dict[str, str]) -> str:
    cuda = labels.get(CUDA_LABEL)
    torch = f"torch {labels[TORCH_LABEL]}, " if TORCH_LABEL in labels else ""
    return f"{torch}CUDA {cuda}" if cuda and cuda != NO_CUDA else f"{torch}no CUDA"


def runs(ami: HostAmi, cuda: str) -> bool:
    major = int(cuda.split(".")[0])
    return major in MIN_DRIVER and ami.driver >= MIN_DRIVER[major]


def is_gpu(instance_type: str) -> bool:
    """ml.g4dn.xlarge, ml.p3.2xlarge: NVIDIA GPU instances."""
    return instance_type.split(".")[1].startswith(("g", "p"))


def choose(instance_type: str, labels: dict[str, str] | None, job: str, image: str) -> str | None:
    """The AMI version for a job on instance_type, or None for a CPU instance; DeployError (one line) when the
    image cannot use the GPU there: a CPU build, no CUDA label, or a CUDA runtime no host AMI's driver runs."""
    if not is_gpu(instance_type):
        return None
    cuda = (labels or {}).get(CUDA_LABEL)
    if cuda is None:
        raise DeployError(f"{image} has no {CUDA_LABEL} label, so whether {instance_type} can run it is unknown: "
                          "build it with ./build.sh build (which labels it from its lock file)")
    if cuda == NO_CUDA:
        raise DeployError(f"{image} is a CPU build ({describe(labels)}) but {instance_type} is a GPU instance: "
                          "build it with PAT_TORCH_VARIANT=cuda, or use a CPU instance type")
    hosts = [ami for ami in AMIS if ami.job == job]
    for ami in hosts:
        if runs(ami, cuda):
            return ami.name
    major = int(cuda.split(".")[0])
    offered = ", ".join(f"{ami.name} (driver {ami.driver}, CUDA {ami.cuda})" for ami in hosts)
    raise DeployError(f"{image} ({describe(labels)}) needs NVIDIA driver >= {MIN_DRIVER.get(major, '?')}, which no "
                      f"SageMaker {job} AMI for {instance_type} has ({offered}): build it with a CUDA 12 torch")


def main(argv: list[str]) -> int:
    """`labels LOCK`: the image labels as KEY=VALUE lines (build.sh passes them to docker build --label)."""
    if len(argv) != 2 or argv[0] != "labels":
        print("usage: python -m sagemaker_deploy.gpu_hosts labels LOCK", file=sys.stderr)
        return 2
    try:
        labels = lock_labels(Path(argv[1]))
    except (DeployError, OSError) as error:
        print(f"sagemaker_deploy: error: {error}", file=sys.stderr)
        return 1
    print("".join(f"{key}={value}\n" for key, value in labels.items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
