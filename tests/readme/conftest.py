"""README tests: examples marked `docker` fail in CI without a Docker engine and skip loudly elsewhere, as in
tests/container (whose hook this reuses)."""

from tests.container.conftest import pytest_runtest_setup  # noqa: F401  (a pytest hook, registered by its name)
