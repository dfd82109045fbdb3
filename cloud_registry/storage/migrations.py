"""Versioned schema migrations, engine-neutral part.

Each engine keeps its own numbered steps in its own module, as a tuple named ``MIGRATIONS`` of
:class:`Migration` (version 1, 2, 3... with no gaps, never edited once released: a change is a
new step):

* SQLite: :mod:`cloud_registry.storage.migrations_sqlite` (steps and its runner
  ``migrate(conn)``).
* PostgreSQL: ``cloud_registry.storage.migrations_postgres``, the same way.

Both record what they applied in a table ``schema_migrations(version INTEGER PRIMARY KEY, name
TEXT NOT NULL, applied_ms INTEGER NOT NULL)``; the schema version is its largest ``version``
(0 for a fresh database). A runner applies every pending step in one transaction that holds the
engine's write lock for the whole time (SQLite ``BEGIN IMMEDIATE``; PostgreSQL an advisory
lock), re-reading the version under the lock, so replicas starting together apply each step
once; ``migrate()`` is idempotent and returns the version in force. A database whose version is
newer than the newest step this build knows raises :class:`SchemaTooNew`.

A step is a sequence of SQL statements and/or a function given the engine's connection (for
data migrations that need code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloud_registry.storage.base import StorageError

__all__ = [
    "SCHEMA_MIGRATIONS_TABLE",
    "Migration",
    "MigrationError",
    "SchemaTooNew",
    "check_steps",
    "pending_steps",
    "security_tables",
]

SCHEMA_MIGRATIONS_TABLE = "schema_migrations"


class MigrationError(StorageError):
    """The migration steps are malformed or one failed."""


class SchemaTooNew(MigrationError):
    """The database was migrated by a newer build than this one."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step: ``statements`` run in order, then ``apply(connection)``."""

    version: int
    name: str
    statements: tuple[str, ...] = ()
    apply: Callable[[Any], None] | None = None


def check_steps(steps: Sequence[Migration]) -> int:
    """Validate that ``steps`` are numbered 1..n in order; return n (the newest version)."""
    for index, step in enumerate(steps, start=1):
        if step.version != index:
            raise MigrationError(
                f"migration {step.name!r} has version {step.version}, expected {index}"
            )
        if not step.statements and step.apply is None:
            raise MigrationError(f"migration {step.version} ({step.name}) does nothing")
    return len(steps)


def pending_steps(steps: Sequence[Migration], current: int) -> list[Migration]:
    """The steps after ``current``; SchemaTooNew when ``current`` is beyond the newest."""
    newest = check_steps(steps)
    if current > newest:
        raise SchemaTooNew(
            f"the database schema is at version {current} but this build knows only up to "
            f"{newest}: upgrade the registry"
        )
    return list(steps[current:])


def security_tables(serial_id: str, int_type: str) -> tuple[str, ...]:
    """The security tables (see :mod:`cloud_registry.storage.security_store`)."""
    return (
        f"""CREATE TABLE edge_identities (
            edge_id TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            status TEXT NOT NULL,
            created_ms {int_type} NOT NULL,
            revoked_ms {int_type} NOT NULL DEFAULT 0
        )""",
        f"""CREATE TABLE edge_certificates (
            serial TEXT PRIMARY KEY,
            edge_id TEXT NOT NULL,
            issued_ms {int_type} NOT NULL,
            not_after_ms {int_type} NOT NULL
        )""",
        "CREATE INDEX idx_edge_certificates_edge ON edge_certificates (edge_id)",
        f"""CREATE TABLE enrollment_tokens (
            token_id TEXT PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            edge_id TEXT NOT NULL,
            site TEXT NOT NULL,
            created_ms {int_type} NOT NULL,
            expires_ms {int_type} NOT NULL,
            used_ms {int_type}
        )""",
        "CREATE INDEX idx_enrollment_tokens_edge ON enrollment_tokens (edge_id)",
        f"""CREATE TABLE revoked_serials (
            serial TEXT PRIMARY KEY,
            edge_id TEXT NOT NULL,
            revoked_ms {int_type} NOT NULL
        )""",
        f"""CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            site TEXT NOT NULL,
            scopes TEXT NOT NULL,
            secret_sha256 TEXT NOT NULL,
            created_ms {int_type} NOT NULL,
            revoked_ms {int_type} NOT NULL DEFAULT 0
        )""",
        f"""CREATE TABLE audit_events (
            id {serial_id},
            time_ms {int_type} NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL,
            peer TEXT NOT NULL
        )""",
        "CREATE INDEX idx_audit_kind ON audit_events (kind, id)",
        "CREATE INDEX idx_audit_subject ON audit_events (subject, id)",
        "CREATE INDEX idx_audit_time ON audit_events (time_ms)",
    )
