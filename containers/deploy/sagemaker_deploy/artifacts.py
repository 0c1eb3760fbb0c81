"""Model artifacts: each model directory packaged as a reproducible model.tar.gz and uploaded, SSE-KMS, under a
content-addressed key, models/<name>/<sha256>/model.tar.gz; register then points the models at those URIs.

Reproducible: members sorted by path, mtime 0, owner root (uid/gid 0, no names), files 0644 and directories 0755,
gzip without a timestamp or file name. The same directory gives the same bytes, so the same key, and an upload
that finds the key present sends nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from . import DeployError, say
from .aws import error_code

ARCHIVE = "model.tar.gz"
PREFIX = "models"


@dataclass(frozen=True)
class Artifact:
    name: str  # the config's model name
    source: Path
    archive: Path
    sha256: str

    def key(self) -> str:
        return f"{PREFIX}/{self.name}/{self.sha256}/{ARCHIVE}"


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def archive_bytes(model_dir: Path) -> bytes:
    """model.tar.gz of the directory's contents (at the archive root), the same bytes for the same files."""
    if not model_dir.is_dir() or not any(model_dir.iterdir()):
        raise DeployError(f"model directory {model_dir} is missing or empty: train the model first "
                          "(./build.sh train) or fix 'source' in the config")
    paths = sorted(model_dir.rglob("*"), key=lambda path: path.relative_to(model_dir).as_posix())
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise DeployError(f"{path}: only regular files and directories go into a model artifact")
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False, filter=_normalized)
    return buffer.getvalue()


def package(name: str, source: Path, out_dir: Path, write: bool = True) -> Artifact:
    data = archive_bytes(source)
    archive = out_dir / name / ARCHIVE
    if write:
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.write_bytes(data)
    return Artifact(name, source, archive, hashlib.sha256(data).hexdigest())


def upload(s3, artifact: Artifact, bucket: str, kms_key: str, tags: list[dict]) -> tuple[str, bool]:
    """Puts the archive under its content-addressed key unless that key exists; returns (s3 uri, uploaded)."""
    key, uri = artifact.key(), f"s3://{bucket}/{artifact.key()}"
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return uri, False
    except ClientError as error:
        if error_code(error) not in ("404", "NoSuchKey", "NotFound"):
            raise
    # A dry run packages nothing: the request then shows the archive's path as its body.
    body = artifact.archive.read_bytes() if artifact.archive.exists() else str(artifact.archive)
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/gzip",
                  ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key, BucketKeyEnabled=True,
                  ChecksumAlgorithm="SHA256", Tagging=urlencode({tag["Key"]: tag["Value"] for tag in tags}))
    return uri, True


def models_with_source(config: dict):
    """(family name, family, model) for every model the config builds from a local directory."""
    for family_name, family in config["families"].items():
        for model in family["models"]:
            if "source" in model:
                yield family_name, family, model


def apply(config: dict, uploaded: dict[str, dict]) -> dict:
    """The filled config with each sourced model's model_data_url set to its uploaded artifact's URI."""
    missing = [model["name"] for _, _, model in models_with_source(config) if model["name"] not in uploaded]
    if missing:
        raise DeployError(f"no uploaded artifact for {', '.join(missing)}: run ./build.sh upload first")
    for _, _, model in models_with_source(config):
        model["model_data_url"] = uploaded[model["name"]]["uri"]
    return config


def say_result(artifact: Artifact, uri: str, uploaded: bool) -> None:
    say(("uploaded" if uploaded else "already present, not uploaded:") + f" {uri} ({artifact.source})")
