"""An AWS CLI (v1) plugin for the tests: appends each call the CLI makes to the deploy tool's call log
(DEPLOY_CALL_LOG), in the same form as sagemaker_deploy's --call-log. tests/deploy/conftest.py's call_log fixture
names it in the CLI's config file ([plugins]); build.sh runs the CLI only for `aws ecr get-login-password`."""

from __future__ import annotations

import json
import os


def _log_call(params, model, **_):
    entry = {"service": model.service_model.service_name, "operation": model.name,
             "params": json.loads(json.dumps(params, default=lambda value: f"<{type(value).__name__}>"))}
    with open(os.environ["DEPLOY_CALL_LOG"], "a") as log:
        log.write(json.dumps(entry, sort_keys=True) + "\n")


def awscli_initialize(event_hooks) -> None:
    event_hooks.register("before-parameter-build.*.*", _log_call)
