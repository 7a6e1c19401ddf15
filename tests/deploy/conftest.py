"""Fixtures of tests/deploy/: the shared ones of tests/integration (token, grant)."""

from tests.integration.conftest import grant, token  # noqa: F401 - shared fixtures
