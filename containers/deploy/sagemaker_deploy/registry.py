"""ECR repositories and image digests. The docker login/tag/push in between is build.sh's."""

from __future__ import annotations

import base64
import ipaddress
import sys
import urllib.error
import urllib.request

from botocore.exceptions import ClientError

from . import DeployError
from .aws import error_code

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def ecr_host(account: str, region: str) -> str:
    suffix = ".cn" if region.startswith("cn-") else ""
    return f"{account}.dkr.ecr.{region}.amazonaws.com{suffix}"


def ensure_repository(ecr, name: str, kms_key: str, tags: list[dict]) -> bool:
    """Creates the repository (immutable tags, scan on push, KMS) only when ECR says it does not exist."""
    try:
        ecr.describe_repositories(repositoryNames=[name])
        return False
    except ClientError as error:
        if error_code(error) != "RepositoryNotFoundException":
            raise
    ecr.create_repository(
        repositoryName=name,
        imageTagMutability="IMMUTABLE",
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": kms_key},
        tags=[{"Key": tag["Key"], "Value": tag["Value"]} for tag in tags],
    )
    return True


def login_password(ecr) -> str:
    """What `aws ecr get-login-password` prints: the token is base64 of 'AWS:<password>'."""
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).decode().partition(":")[2]


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def manifest_digest(host: str, repository: str, tag: str, password: str, dry_run: bool = False) -> str:
    """The digest the registry holds for repository:tag (Registry HTTP API v2, as ECR and Distribution serve it).

    Plain HTTP only for a loopback registry, as Docker itself allows.
    """
    scheme = "http" if is_loopback(host) else "https"
    url = f"{scheme}://{host}/v2/{repository}/manifests/{tag}"
    if dry_run:
        print(f"+ curl --head --user AWS:*** {url}", file=sys.stderr)
        return "sha256:<digest-of-" + tag + ">"
    credentials = base64.b64encode(f"AWS:{password}".encode()).decode()
    request = urllib.request.Request(url, method="HEAD", headers={
        "Accept": MANIFEST_TYPES, "Authorization": f"Basic {credentials}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            digest = response.headers.get("Docker-Content-Digest", "")
    except (urllib.error.URLError, OSError) as error:
        raise DeployError(f"cannot read back the digest of {host}/{repository}:{tag} ({error}): "
                          "check that the registry is up and that the push above succeeded") from error
    if not digest.startswith("sha256:"):
        raise DeployError(f"{url} answered without a Docker-Content-Digest header; is {host} a Docker registry?")
    return digest
