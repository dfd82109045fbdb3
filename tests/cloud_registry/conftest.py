"""Fixtures of the registry tests: ``storage``, a fresh migrated engine per test, for every
engine in :data:`ENGINES` (the contract suite runs once per engine).

Adding an engine is one entry in :data:`ENGINES` plus a branch in :func:`_open_engine`; the
PostgreSQL branch asks for the function-scoped ``fresh_postgres_dsn`` fixture (a new database
per test, tests/cloud_registry/pg_cluster.py) only when that engine runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_registry.storage.base import Storage
from tests.cloud_registry.pg_cluster import (  # noqa: F401  (fixtures)
    fresh_postgres_dsn,
    postgres_cluster,
    postgres_databases,
    postgres_dsn,
)
from tests.cloud_registry.server_fixtures import (  # noqa: F401  (fixtures)
    registry,
    secure_registry,
)

#: The engines the contract suite runs against.
ENGINES = ["sqlite", "postgres"]


def _open_engine(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> Storage:
    if engine == "sqlite":
        from cloud_registry.storage.sqlite import SqliteStorage

        return SqliteStorage(tmp_path / "registry.db")
    if engine == "postgres":
        from cloud_registry.storage.postgres import PostgresStorage

        dsn = request.getfixturevalue("fresh_postgres_dsn")
        return PostgresStorage(dsn, replica_id="test-replica")
    raise AssertionError(f"unknown storage engine {engine!r}")


@pytest.fixture(params=ENGINES)
def storage_engine(request: pytest.FixtureRequest) -> str:
    """The name of the engine under test."""
    return str(request.param)


@pytest.fixture
def storage(
    request: pytest.FixtureRequest, storage_engine: str, tmp_path: Path
) -> Iterator[Storage]:
    """A freshly migrated storage of the engine under test, closed after the test."""
    engine = _open_engine(request, storage_engine, tmp_path)
    engine.migrate()
    try:
        yield engine
    finally:
        engine.close()
