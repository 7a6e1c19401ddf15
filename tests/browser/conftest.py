"""Browser tests use the integration fixtures (real workers, Redis, moto)."""

from tests.integration.conftest import grant, ledger_reader, token, workers  # noqa: F401
