"""Which tag a push uses in a repository with immutable tags (no registry: a stand-in answers config_of)."""

from __future__ import annotations

import sys

import pytest

from .conftest import DEPLOY_CONFIGS

sys.path.insert(0, str(DEPLOY_CONFIGS))
from sagemaker_deploy import DeployError, pushes  # noqa: E402

LABELS = {"org.opencontainers.image.title": "pat-inference", "org.opencontainers.image.description": "torch cuda",
          "org.opencontainers.image.version": "0.1.0", "org.opencontainers.image.revision": "d80c81c" + "0" * 33,
          "org.opencontainers.image.base.name": "python:3.11-slim-bookworm"}
LOCAL_ID = "sha256:" + "1" * 64


class Registry:
    host = "registry.example"

    def __init__(self, tags: dict[str, tuple[str, dict]]):
        self.tags = tags

    def config_of(self, repository: str, tag: str):
        return self.tags.get(tag)


def remote(image_id: str, labels: dict) -> tuple[str, dict]:
    return image_id, {"config": {"Labels": labels}}


def test_a_new_tag_is_pushed():
    assert pushes.choose(Registry({}), "pat-inference", "0.1.0-d80c81c-cuda", LOCAL_ID, LABELS) == \
        ("push", "0.1.0-d80c81c-cuda")


@pytest.mark.parametrize("remote_id, remote_labels", [(LOCAL_ID, {}), ("sha256:" + "2" * 64, LABELS)])
def test_the_same_image_or_the_same_clean_commit_rebuilt_reuses_the_tag(remote_id, remote_labels):
    registry = Registry({"0.1.0-d80c81c-cuda": remote(remote_id, remote_labels)})
    assert pushes.choose(registry, "pat-inference", "0.1.0-d80c81c-cuda", LOCAL_ID, LABELS) == \
        ("reuse", "0.1.0-d80c81c-cuda")


@pytest.mark.parametrize("change", [{"org.opencontainers.image.revision": "d80c81c-dirty"},
                                    {"org.opencontainers.image.base.name": "inference-base:bookworm"}])
def test_another_build_under_the_tag_gets_a_tag_of_its_own_before_the_torch_variant(change):
    other = remote("sha256:" + "2" * 64, LABELS)
    local = {**LABELS, **change}
    if "dirty" in str(change):
        other = remote("sha256:" + "2" * 64, local)  # even the same labels: a dirty tree is not one build
    registry = Registry({"0.1.0-d80c81c-cuda": other})
    assert pushes.choose(registry, "pat-inference", "0.1.0-d80c81c-cuda", LOCAL_ID, local) == \
        ("push", "0.1.0-d80c81c-111111111111-cuda")
    assert pushes.choose(Registry({"1.0.0-abc": other}), "xgboost-inference", "1.0.0-abc", LOCAL_ID, local) == \
        ("push", "1.0.0-abc-111111111111")


def test_both_tags_taken_by_other_builds_is_an_error_that_says_what_to_do():
    other = remote("sha256:" + "2" * 64, {})
    registry = Registry({"1.0.0-abc": other, "1.0.0-abc-111111111111": other})
    with pytest.raises(DeployError, match="set IMAGE_TAG to a new tag"):
        pushes.choose(registry, "xgboost-inference", "1.0.0-abc", LOCAL_ID, {})
