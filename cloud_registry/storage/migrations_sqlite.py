"""The SQLite engine's schema steps and their runner (see :mod:`.migrations` for the layout).

Schema at a glance (version 3):

* ``devices`` WITHOUT ROWID, keyed by ``id``; one ``(column, id)`` index per list filter (site,
  edge, model name, exact model, building, online) so a filtered, id-ordered keyset page is a
  range scan that stops after ``limit`` rows. ``twin_revision`` lives on the device row.
* ``device_labels(key, value, device_id)`` WITHOUT ROWID (its primary key drives ``key=value``
  selectors in id order) plus ``(device_id, key)`` for the per-device EXISTS checks.
* ``twin_reported`` / ``twin_desired`` WITHOUT ROWID keyed by ``(device_id, property)``.
* ``history_reports`` (version 3): one row per report, ``(device_id, ts_ms)`` indexed, its
  values a JSON object of exact JSON texts (``1``, ``1.0`` and ``true`` stay apart) and a
  second object with the qualities that are not ``good``. Versions 1-2 kept one row per value,
  which made every batch dirty one index page per property series.
* ``events`` indexed for the newest-first listings: ``(ts_ms, id)``, ``(device_id, ts_ms,
  id)``, ``(site, ts_ms, id)``.
* ``commands`` with a unique ``(edge_id, sequence)``; ``edges`` holds the per-edge command
  counter, the ingest de-duplication floor and the stream lease; ``ingest_batches`` the stored
  ``(edge_id, sequence)`` pairs.
* ``changes``: ``seq INTEGER PRIMARY KEY AUTOINCREMENT`` so a pruned-empty feed never reuses a
  number; written only inside ``BEGIN IMMEDIATE`` transactions, so seq order is commit order.
* ``models`` keyed by ``(name, version)`` with ``version_key`` (:func:`version_sort_key`).
"""

from __future__ import annotations

import sqlite3
import time

import sqlite_utils

from cloud_registry.storage.migrations import (
    SCHEMA_MIGRATIONS_TABLE,
    Migration,
    check_steps,
    pending_steps,
    security_tables,
)

__all__ = ["MIGRATIONS", "current_version", "migrate"]

_V1 = (
    """CREATE TABLE models (
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        version_key TEXT NOT NULL,
        document TEXT NOT NULL,
        published_ms INTEGER NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        vendor TEXT NOT NULL DEFAULT '',
        description TEXT NOT NULL DEFAULT '',
        property_count INTEGER NOT NULL DEFAULT 0,
        event_count INTEGER NOT NULL DEFAULT 0,
        service_count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, version)
    ) WITHOUT ROWID""",
    "CREATE INDEX idx_models_order ON models (name, version_key)",
    """CREATE TABLE devices (
        id TEXT NOT NULL PRIMARY KEY,
        model TEXT NOT NULL,
        model_name TEXT NOT NULL,
        edge_id TEXT NOT NULL,
        site TEXT NOT NULL,
        building TEXT NOT NULL DEFAULT '',
        labels TEXT NOT NULL DEFAULT '{}',
        latitude REAL,
        longitude REAL,
        floor TEXT NOT NULL DEFAULT '',
        room TEXT NOT NULL DEFAULT '',
        online INTEGER NOT NULL DEFAULT 0,
        revision INTEGER NOT NULL DEFAULT 1,
        created_ms INTEGER NOT NULL DEFAULT 0,
        updated_ms INTEGER NOT NULL DEFAULT 0,
        last_seen_ms INTEGER NOT NULL DEFAULT 0,
        twin_revision INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    "CREATE INDEX idx_devices_site ON devices (site, id)",
    "CREATE INDEX idx_devices_edge ON devices (edge_id, id)",
    "CREATE INDEX idx_devices_model_name ON devices (model_name, id)",
    "CREATE INDEX idx_devices_model ON devices (model, id)",
    "CREATE INDEX idx_devices_building ON devices (building, id)",
    "CREATE INDEX idx_devices_online ON devices (online, id)",
    """CREATE TABLE device_labels (
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        device_id TEXT NOT NULL,
        PRIMARY KEY (key, value, device_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX idx_device_labels_device ON device_labels (device_id, key)",
    """CREATE TABLE twin_reported (
        device_id TEXT NOT NULL,
        property TEXT NOT NULL,
        value TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        quality TEXT NOT NULL,
        PRIMARY KEY (device_id, property)
    ) WITHOUT ROWID""",
    """CREATE TABLE twin_desired (
        device_id TEXT NOT NULL,
        property TEXT NOT NULL,
        value TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        quality TEXT NOT NULL,
        PRIMARY KEY (device_id, property)
    ) WITHOUT ROWID""",
    """CREATE TABLE history (
        device_id TEXT NOT NULL,
        property TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        num REAL,
        value TEXT NOT NULL,
        quality TEXT NOT NULL
    )""",
    "CREATE INDEX idx_history_series ON history (device_id, property, ts_ms)",
    """CREATE TABLE history_recent (
        device_id TEXT NOT NULL,
        property TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        num REAL,
        value TEXT NOT NULL,
        quality TEXT NOT NULL
    )""",
    "CREATE INDEX idx_history_recent_series ON history_recent (device_id, property, ts_ms)",
    """CREATE TABLE events (
        id TEXT NOT NULL PRIMARY KEY,
        device_id TEXT NOT NULL,
        site TEXT NOT NULL,
        name TEXT NOT NULL,
        level TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        params TEXT NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0,
        acknowledged_by TEXT NOT NULL DEFAULT '',
        acknowledged_ms INTEGER NOT NULL DEFAULT 0,
        comment TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX idx_events_ts ON events (ts_ms, id)",
    "CREATE INDEX idx_events_device ON events (device_id, ts_ms, id)",
    "CREATE INDEX idx_events_site ON events (site, ts_ms, id)",
    """CREATE TABLE commands (
        id TEXT NOT NULL PRIMARY KEY,
        device_id TEXT NOT NULL,
        edge_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        service TEXT NOT NULL,
        params TEXT NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        result TEXT NOT NULL,
        error TEXT NOT NULL,
        sequence INTEGER NOT NULL
    )""",
    "CREATE UNIQUE INDEX idx_commands_edge_seq ON commands (edge_id, sequence)",
    "CREATE INDEX idx_commands_status ON commands (status, expires_ms)",
    """CREATE TABLE edges (
        edge_id TEXT NOT NULL PRIMARY KEY,
        command_seq INTEGER NOT NULL DEFAULT 0,
        batch_floor INTEGER NOT NULL DEFAULT 0,
        replica_id TEXT NOT NULL DEFAULT '',
        lease_ms INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE ingest_batches (
        edge_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        stored_ms INTEGER NOT NULL,
        PRIMARY KEY (edge_id, sequence)
    ) WITHOUT ROWID""",
    """CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        device_id TEXT NOT NULL DEFAULT '',
        site TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        edge_id TEXT NOT NULL DEFAULT '',
        payload TEXT NOT NULL
    )""",
)

#: The SQLite schema steps, version 1..n. Never edit a released step: append a new one.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    # Version 2: history_recent becomes a plain append-only heap. Its series index cost ~25% of
    # ingest (every batch dirtied one index page per series); reads scan the small buffer
    # (at most history_buffer_rows rows) instead.
    Migration(2, "append-only history buffer", ("DROP INDEX idx_history_recent_series",)),
    # Version 3: one history row per report (device, timestamp) holding its values as a JSON
    # object, instead of one row per value: a batch of 500 reports of 20 values writes 500 rows
    # and 500 index entries, not 10,000 (ingest ~2x). Reads pick one property with ``->``.
    Migration(
        3,
        "history rows per report",
        (
            """CREATE TABLE history_reports (
                device_id TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                vals TEXT NOT NULL,
                quals TEXT
            )""",
            "CREATE INDEX idx_history_reports ON history_reports (device_id, ts_ms)",
            """INSERT INTO history_reports (device_id, ts_ms, vals, quals)
            SELECT device_id, ts_ms, json_group_object(property, json(value)),
                CASE WHEN sum(quality <> 'good') > 0
                THEN json_group_object(property, quality) END
            FROM (
                SELECT 0 AS src, rowid AS r, device_id, property, ts_ms, value, quality
                FROM history
                UNION ALL
                SELECT 1, rowid, device_id, property, ts_ms, value, quality FROM history_recent
                ORDER BY src, r
            )
            GROUP BY device_id, ts_ms""",
            "DROP TABLE history",
            "DROP TABLE history_recent",
        ),
    ),
    # Version 4: security (edges' identities and certificates, enrollment tokens, revoked
    # serials, API keys, the audit log).
    Migration(4, "security", security_tables("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER")),
)


def _database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in ``conn``'s database (0: never migrated)."""
    db = _database(conn)
    if not db[SCHEMA_MIGRATIONS_TABLE].exists():
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {SCHEMA_MIGRATIONS_TABLE}")
    return int(row.fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the pending steps in one ``BEGIN IMMEDIATE`` transaction; return the version.

    ``conn`` must be in autocommit mode (``isolation_level=None``) with no transaction open."""
    check_steps(MIGRATIONS)
    conn.execute("BEGIN IMMEDIATE")
    try:
        db = _database(conn)
        db.table(SCHEMA_MIGRATIONS_TABLE).create(
            {"version": int, "name": str, "applied_ms": int},
            pk="version",
            not_null=["name", "applied_ms"],
            if_not_exists=True,
        )
        version = current_version(conn)
        for step in pending_steps(MIGRATIONS, version):
            for statement in step.statements:
                conn.execute(statement)
            if step.apply is not None:
                step.apply(db)
            db.table(SCHEMA_MIGRATIONS_TABLE).insert(
                {"version": step.version, "name": step.name, "applied_ms": int(time.time() * 1000)}
            )
            version = step.version
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version
