"""Registration of the inference images with ECR and SageMaker, driven by a per-stage JSON config.

build.sh runs it as `python -m sagemaker_deploy` (with containers/deploy on PYTHONPATH) for everything that needs
JSON and idempotency; the docker commands stay in build.sh.
"""


import sys


def say(message: str) -> None:
    print(f"sagemaker_deploy: {message}", file=sys.stderr)


class DeployError(Exception):
    """A failure the user can act on: the message says what failed and how to fix it."""
