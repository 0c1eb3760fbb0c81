"""The guides' variables, read from a mapping (the environment by default); all problems in one line."""

from __future__ import annotations

import re
from typing import Mapping

from clinical_services.errors import ConfigurationError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")  # DynamoDB table and SageMaker endpoint names fit this
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY = re.compile(r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[A-Za-z0-9/_-]+|[0-9a-f-]{36}|alias/[\w/-]+)$")


def read(env: Mapping[str, str], kinds: Mapping[str, str]) -> dict[str, str]:
    """The variables named in `kinds` (name -> name, region, bucket, key, days), checked; raises one
    ConfigurationError naming every missing or malformed one (their values are not repeated)."""
    missing = [name for name in kinds if not env.get(name, "").strip()]
    values = {name: env[name].strip() for name in kinds if name not in missing}
    malformed = [name for name, value in values.items() if not _valid(kinds[name], value)]
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
               ([f"malformed {', '.join(malformed)}"] if malformed else [])
    if problems:
        raise ConfigurationError("; ".join(problems) + " (see platform.env, written by ./build.sh infra)")
    return values


def _valid(kind: str, value: str) -> bool:
    if kind == "days":
        return value.isdigit() and 0 < int(value) <= 36500
    pattern = {"name": _NAME, "region": _REGION, "bucket": _BUCKET, "key": _KEY}[kind]
    return pattern.fullmatch(value) is not None
