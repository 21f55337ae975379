"""Runs a test module on both back-office databases: `from tests.databases import both_databases`.

The fixture replaces conftest's `database` (SQLite only) in the importing module, so every test
there runs once on SQLite and once on a fresh database of the session's PostgreSQL cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.postgres import ThrowawayPostgres

DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(name="database", params=DATABASES)
def both_databases(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "backoffice.db")
    cluster: ThrowawayPostgres = request.getfixturevalue("postgres")
    return cluster.new_database()
