"""Which tag to push under, in a repository with immutable tags (ECR refuses a second push of a tag, even of the
same image): push when the tag is new; reuse it when the registry already holds this build under it; otherwise push
under a tag of its own, TAG-<image id> (before PAT's -cpu/-cuda), so that a retry never fails and never overwrites.

"This build": the registry's image has the local image's id (its config digest), or it was built from the same
clean commit with the same version, base image and variant (the OCI labels build.sh sets), as a CodeBuild retry
of a commit does, whose layers differ only by timestamps. Then the image already pushed is the one deployed.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request

from . import DeployError, say
from .registry import MANIFEST_TYPES, is_loopback

SAME_BUILD_LABELS = ("org.opencontainers.image.title", "org.opencontainers.image.description",
                     "org.opencontainers.image.version", "org.opencontainers.image.revision",
                     "org.opencontainers.image.base.name")
REVISION = "org.opencontainers.image.revision"
ID_LENGTH = 12
TORCH_VARIANTS = ("cpu", "cuda")


class Registry:
    """Reads manifests and image configs over the Registry HTTP API v2, as ECR and Distribution serve it."""

    def __init__(self, host: str, password: str):
        self.host = host
        self.scheme = "http" if is_loopback(host) else "https"
        self.auth = "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()

    def _get(self, path: str, accept: str) -> bytes | None:
        request = urllib.request.Request(f"{self.scheme}://{self.host}/v2/{path}",
                                         headers={"Accept": accept, "Authorization": self.auth})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise DeployError(f"{self.host} answered {error.code} for /v2/{path}") from error
        except (urllib.error.URLError, OSError) as error:
            raise DeployError(f"cannot reach the registry {self.host} ({error})") from error

    def config_of(self, repository: str, tag: str) -> tuple[str, dict] | None:
        """(config digest, image config) of repository:tag, or None when the tag does not exist."""
        manifest = self._get(f"{repository}/manifests/{tag}", MANIFEST_TYPES)
        if manifest is None:
            return None
        document = json.loads(manifest)
        if "manifests" in document:  # an index: the linux/amd64 image
            chosen = next((m for m in document["manifests"] if m.get("platform", {}).get("architecture") == "amd64"),
                          document["manifests"][0])
            document = json.loads(self._get(f"{repository}/manifests/{chosen['digest']}", MANIFEST_TYPES) or b"{}")
        digest = document.get("config", {}).get("digest", "")
        blob = self._get(f"{repository}/blobs/{digest}", "*/*") if digest else None
        return digest, json.loads(blob) if blob else {}


def same_build(local_id: str, local_labels: dict, remote_id: str, remote_config: dict) -> bool:
    if local_id == remote_id:
        return True
    remote_labels = (remote_config.get("config") or {}).get("Labels") or {}
    revision = local_labels.get(REVISION, "")
    clean = bool(revision) and not revision.endswith("-dirty") and revision not in ("unknown", "nogit")
    return clean and all(local_labels.get(label) == remote_labels.get(label) for label in SAME_BUILD_LABELS)


def choose(registry: Registry | None, repository: str, tag: str, local_id: str, local_labels: dict) -> tuple[str, str]:
    """("push" or "reuse", tag). registry None: a dry run, which assumes the tag is new."""
    if registry is None:
        print(f"+ curl --user AWS:*** {repository}/manifests/{tag}  # is the tag taken?", file=sys.stderr)
        return "push", tag
    short = local_id.removeprefix("sha256:")[:ID_LENGTH]
    stem, _, variant = tag.rpartition("-")
    # PAT's tags end in the torch variant, which register checks: the id goes before it.
    distinct = f"{stem}-{short}-{variant}" if variant in TORCH_VARIANTS else f"{tag}-{short}"
    candidates = [tag, distinct]
    for candidate in candidates:
        existing = registry.config_of(repository, candidate)
        if existing is None:
            if candidate != tag:
                say(f"{registry.host}/{repository}:{tag} holds another build and the repository's tags are "
                    f"immutable: pushing this build as {candidate}")
            return "push", candidate
        if same_build(local_id, local_labels, *existing):
            say(f"{registry.host}/{repository}:{candidate} already holds this build: not pushing it again")
            return "reuse", candidate
    raise DeployError(f"{registry.host}/{repository} holds other builds under both {candidates[0]} and "
                      f"{candidates[1]}: set IMAGE_TAG to a new tag")
