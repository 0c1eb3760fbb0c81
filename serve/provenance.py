"""Which model and image made an answer: response headers and log fields, computed once when a model loads.

A model's version is `metadata.json`'s `model_version` when it has one, otherwise a hash of the artifact's content
(every regular file under the model directory, by relative path), so that a model without metadata still names what
answered. Header values are ASCII: a name that is not is sent percent-encoded (UTF-8), as a URL would carry it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import orjson

from serve.settings import Settings

MODEL_NAME = "X-Model-Name"
TARGET_MODEL = "X-Target-Model"
MODEL_VERSION = "X-Model-Version"
IMAGE_VERSION = "X-Image-Version"
IMAGE_REVISION = "X-Image-Revision"
# InvokeEndpoint hands a client only the body, ContentType, InvokedProductionVariant and CustomAttributes (the
# container's X-Amzn-SageMaker-Custom-Attributes): a request whose custom attributes say `provenance=true` gets the
# model's version back there ("InvokeEndpoint",
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpoint.html).
PROVENANCE_ATTRIBUTE = "provenance"
_CHUNK = 1 << 20


def content_hash(model_dir: Path) -> str:
    """`sha256:` and the first 16 hex digits of a SHA-256 over the directory's files: relative path, size, bytes."""
    digest = hashlib.sha256()
    root = Path(model_dir)
    files = sorted(path for path in root.rglob("*") if path.is_file())
    for path in files:
        relative = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
        digest.update(relative + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]


def model_version(model_dir: Path) -> str:
    """metadata.json's model_version (a non-empty string or number), else the content hash."""
    try:
        metadata = orjson.loads((Path(model_dir) / "metadata.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        metadata = None
    version = metadata.get("model_version") if isinstance(metadata, dict) else None
    if isinstance(version, (int, float)) and not isinstance(version, bool):
        version = str(version)
    if isinstance(version, str) and version.strip():
        return version.strip()[:200]
    return content_hash(model_dir)


def header_value(text: str) -> str:
    return text if text.isascii() and text.isprintable() else quote(text, safe="")


@dataclass(frozen=True)
class Identity:
    """What the headers and the request's log line say about the model that answered (or the endpoint, when the
    request named no model that is loaded)."""

    headers: tuple[tuple[str, str], ...]
    fields: dict


def image(settings: Settings) -> Identity:
    return Identity(((IMAGE_VERSION, settings.image_version), (IMAGE_REVISION, settings.image_revision)),
                    {"image_version": settings.image_version, "image_revision": settings.image_revision})


def endpoint(settings: Settings) -> Identity:
    """The model's name without a version: a multi-model endpoint's, or a single model's before it loads."""
    name = endpoint_name(settings)
    base = image(settings)
    return Identity(((MODEL_NAME, header_value(name)), *base.headers), {"model": name, **base.fields})


def endpoint_name(settings: Settings) -> str:
    """SERVE_METRICS_MODEL (the SageMaker model), else the model directory's name."""
    return settings.model_name or (settings.multi_model_dir if settings.multi_model else settings.model_dir).name


def loaded(settings: Settings, model_dir: Path, target: str | None = None) -> Identity:
    """A loaded model: the endpoint's name, the target's on a multi-model endpoint, and the version."""
    version = model_version(model_dir)
    base = endpoint(settings)
    headers = [*base.headers[:1], (MODEL_VERSION, header_value(version)), *base.headers[1:]]
    fields = {**base.fields, "model_version": version}
    if target is not None:
        headers.insert(1, (TARGET_MODEL, header_value(target)))
        fields["target_model"] = target
    return Identity(tuple(headers), fields)


def answer_attributes(echoed: str, asked: dict[str, str], identity: Identity) -> str:
    """The custom attributes an answer carries: the request's, verbatim, and `;model_version=<version>` after them
    when the request asked with `provenance=true` and a loaded model answered."""
    version = identity.fields.get("model_version")
    if asked.get(PROVENANCE_ATTRIBUTE, "").lower() != "true" or version is None:
        return echoed
    return f"{echoed};model_version={quote(version, safe=':/+@')}"
