"""PostgreSQL schema steps and their runner (see :mod:`cloud_registry.storage.migrations`).

The layout (docs/postgres-layout.md explains the sizes and the reasons):

* ``devices``: one row per device, ``labels`` as ``jsonb`` with a GIN index; the hot,
  frequently rewritten columns (``online``, ``last_seen_ms``, ``twin_revision``) are unindexed
  so their updates are HOT (heap-only, no index writes) in pages kept 15 % free
  (``fillfactor``). B-tree indexes ``(site, id)``, ``(edge_id, id)``, ``(model_name, id)`` and
  ``(building, id)`` serve the filtered, keyset-paged ``list_devices`` (``id > cursor ORDER BY
  id``) as index range scans.
* ``twin_reported`` / ``twin_desired``: one row per device and property, upserted with
  ``ON CONFLICT ... WHERE excluded.ts_ms >= ts_ms``.
* ``history``: declaratively range-partitioned on ``ts_ms`` by calendar month (UTC); the engine
  creates partitions ahead and on demand (``history_pYYYYMM``) and retention drops whole
  partitions.
* ``changes`` + ``change_counter``: the change feed, appended under an advisory lock (see
  :mod:`cloud_registry.storage.postgres`).
* ``ingest_batches``: the stored ``(edge_id, sequence)`` pairs (batch de-duplication);
  ``prune_changes`` forgets old pairs and raises the edge's ``floor`` in ``edge_batches``
  (every sequence at or below it counts as stored), as the SQLite engine does.
* ``events``, ``commands``, ``edge_command_seq``, ``edge_connections``.

Every text key is ``COLLATE "C"`` so ``ORDER BY id`` is code-point order (as in SQLite and
Python) whatever the database's default collation, and B-tree comparisons stay cheap.
Values (twin, history, params, payloads) are stored as JSON *text*, not ``jsonb``: ``jsonb``
turns ``1e300`` into a 301-digit integer and cannot keep ``2`` and ``2.0`` apart reliably.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from cloud_registry.storage.migrations import (
    SCHEMA_MIGRATIONS_TABLE,
    Migration,
    MigrationError,
    check_steps,
    pending_steps,
    security_tables,
)

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "current_version", "migrate"]

#: ``pg_advisory_xact_lock`` key that serializes migration runs of all replicas.
MIGRATION_LOCK = 0x5245_4749_0001  # "REGI" 1

_INITIAL = (
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA_MIGRATIONS_TABLE} (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_ms bigint NOT NULL
    )""",
    """CREATE TABLE models (
        name text COLLATE "C" NOT NULL,
        version text COLLATE "C" NOT NULL,
        version_key text COLLATE "C" NOT NULL,
        document text NOT NULL,
        document_key text NOT NULL,
        published_ms bigint NOT NULL,
        title text NOT NULL,
        vendor text NOT NULL,
        description text NOT NULL,
        property_count integer NOT NULL,
        event_count integer NOT NULL,
        service_count integer NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    "CREATE INDEX models_newest ON models (name, version_key DESC)",
    """CREATE TABLE devices (
        id text COLLATE "C" PRIMARY KEY,
        model text COLLATE "C" NOT NULL,
        model_name text COLLATE "C" GENERATED ALWAYS AS (split_part(model, '@', 1)) STORED,
        edge_id text COLLATE "C" NOT NULL,
        site text COLLATE "C" NOT NULL,
        building text COLLATE "C" NOT NULL DEFAULT '',
        labels jsonb NOT NULL DEFAULT '{}'::jsonb,
        latitude double precision,
        longitude double precision,
        floor text NOT NULL DEFAULT '',
        room text NOT NULL DEFAULT '',
        online boolean NOT NULL DEFAULT false,
        revision bigint NOT NULL,
        created_ms bigint NOT NULL,
        updated_ms bigint NOT NULL,
        last_seen_ms bigint NOT NULL DEFAULT 0,
        twin_revision bigint NOT NULL DEFAULT 0
    ) WITH (fillfactor = 85)""",
    "CREATE INDEX devices_site ON devices (site, id)",
    "CREATE INDEX devices_edge ON devices (edge_id, id)",
    "CREATE INDEX devices_model ON devices (model_name, id)",
    "CREATE INDEX devices_building ON devices (building, id)",
    "CREATE INDEX devices_labels ON devices USING gin (labels)",
    """CREATE TABLE twin_reported (
        device_id text COLLATE "C" NOT NULL,
        property text COLLATE "C" NOT NULL,
        value text NOT NULL,
        ts_ms bigint NOT NULL,
        quality text NOT NULL,
        PRIMARY KEY (device_id, property)
    ) WITH (fillfactor = 80)""",
    """CREATE TABLE twin_desired (
        device_id text COLLATE "C" NOT NULL,
        property text COLLATE "C" NOT NULL,
        value text NOT NULL,
        ts_ms bigint NOT NULL,
        quality text NOT NULL,
        PRIMARY KEY (device_id, property)
    )""",
    """CREATE TABLE history (
        device_id text COLLATE "C" NOT NULL,
        property text COLLATE "C" NOT NULL,
        ts_ms bigint NOT NULL,
        value text NOT NULL,
        num double precision,
        quality text NOT NULL
    ) PARTITION BY RANGE (ts_ms)""",
    "CREATE INDEX history_key ON history (device_id, property, ts_ms)",
    """CREATE TABLE events (
        id text COLLATE "C" PRIMARY KEY,
        device_id text COLLATE "C" NOT NULL,
        site text COLLATE "C" NOT NULL,
        name text NOT NULL,
        level text NOT NULL,
        ts_ms bigint NOT NULL,
        params text NOT NULL,
        acknowledged boolean NOT NULL DEFAULT false,
        acknowledged_by text NOT NULL DEFAULT '',
        acknowledged_ms bigint NOT NULL DEFAULT 0,
        comment text NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX events_ts ON events (ts_ms, id)",
    "CREATE INDEX events_device ON events (device_id, ts_ms, id)",
    "CREATE INDEX events_site ON events (site, ts_ms, id)",
    "CREATE INDEX events_unacknowledged ON events (ts_ms, id) WHERE NOT acknowledged",
    """CREATE TABLE commands (
        id text COLLATE "C" PRIMARY KEY,
        device_id text COLLATE "C" NOT NULL,
        edge_id text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        service text NOT NULL,
        params text NOT NULL,
        status text NOT NULL,
        created_ms bigint NOT NULL,
        expires_ms bigint NOT NULL,
        updated_ms bigint NOT NULL,
        result text NOT NULL,
        error text NOT NULL,
        sequence bigint NOT NULL
    )""",
    "CREATE INDEX commands_edge ON commands (edge_id, sequence) WHERE status = 'queued'",
    "CREATE INDEX commands_open ON commands (expires_ms) WHERE status IN ('queued', 'sent')",
    """CREATE TABLE edge_command_seq (
        edge_id text COLLATE "C" PRIMARY KEY,
        last_sequence bigint NOT NULL
    )""",
    """CREATE TABLE edge_batches (
        edge_id text COLLATE "C" PRIMARY KEY,
        last_sequence bigint NOT NULL,
        floor bigint NOT NULL,
        updated_ms bigint NOT NULL
    )""",
    """CREATE TABLE ingest_batches (
        edge_id text COLLATE "C" NOT NULL,
        sequence bigint NOT NULL,
        stored_ms bigint NOT NULL,
        PRIMARY KEY (edge_id, sequence)
    )""",
    """CREATE TABLE edge_connections (
        edge_id text COLLATE "C" PRIMARY KEY,
        replica_id text NOT NULL,
        updated_ms bigint NOT NULL
    )""",
    """CREATE TABLE change_counter (
        only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
        last_seq bigint NOT NULL
    )""",
    "INSERT INTO change_counter (only_row, last_seq) VALUES (true, 0)",
    """CREATE TABLE changes (
        seq bigint PRIMARY KEY,
        kind text NOT NULL,
        ts_ms bigint NOT NULL,
        device_id text NOT NULL,
        site text NOT NULL,
        model text NOT NULL,
        edge_id text NOT NULL,
        payload text NOT NULL
    )""",
    "CREATE INDEX changes_ts ON changes (ts_ms)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial layout", _INITIAL),
    # Version 2: security (edges' identities and certificates, enrollment tokens, revoked
    # serials, API keys, the audit log).
    Migration(
        2, "security", security_tables("bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "bigint")
    ),
)


def current_version(conn: Any) -> int:
    """The schema version recorded in the database (0 when never migrated)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (SCHEMA_MIGRATIONS_TABLE,)).fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute(
        f"SELECT coalesce(max(version), 0) FROM {SCHEMA_MIGRATIONS_TABLE}"
    ).fetchone()
    return int(row[0]) if row else 0


def migrate(conn: Any) -> int:
    """Apply the pending steps on ``conn`` (a psycopg connection in autocommit mode) in one
    transaction holding :data:`MIGRATION_LOCK`; return the version now in force."""
    check_steps(MIGRATIONS)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        current = current_version(conn)
        steps = pending_steps(MIGRATIONS, current)
        for step in steps:
            try:
                for statement in step.statements:
                    conn.execute(statement)
                if step.apply is not None:
                    step.apply(conn)
            except psycopg.OperationalError:
                raise  # the connection failed: the caller reports StorageUnavailable
            except Exception as exc:
                raise MigrationError(
                    f"migration {step.version} ({step.name}) failed: {exc}"
                ) from exc
            conn.execute(
                f"INSERT INTO {SCHEMA_MIGRATIONS_TABLE} (version, name, applied_ms) "
                "VALUES (%s, %s, %s)",
                (step.version, step.name, int(time.time() * 1000)),
            )
        return steps[-1].version if steps else current
