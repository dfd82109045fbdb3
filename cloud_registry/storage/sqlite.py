"""The SQLite storage engine: the registry's default, one database file on one machine.

Connections and transactions:

* One writer connection, guarded by a lock, runs every mutation inside ``BEGIN IMMEDIATE``
  (the file's write lock is taken up front, so two processes on one file serialize their writes
  and the change feed's ``seq``, assigned inside the transaction, is commit order with no gap a
  reader could see filled later).
* Each thread reads through its own connection; WAL lets reads run beside the writer.
* ``journal_mode=WAL``, ``synchronous=FULL``: a method returns only after its commit is durable
  (edges delete their outbox after ``ingest`` returns). ``busy_timeout`` waits for another
  process's write lock; when it runs out the call raises StorageUnavailable.
* Listeners registered with ``add_change_listener`` run after every commit that appended
  changes, in the committing thread, after the write lock is released. Other processes on the
  same file are not signalled: the change hub's poll picks their changes up.

Hot paths use the raw ``sqlite3`` connection with ``executemany`` (ingest writes a batch of 10,000
values in a few statements); schema steps and cold single-row CRUD go through sqlite-utils.
Values are stored as their exact JSON text (``1``, ``1.0`` and ``true`` stay distinct); history
keeps one row per report (device, timestamp) with its values as a JSON object, read per
property with SQLite's ``->`` (bucket aggregates take numbers and booleans as 0/1).

Engine-specific choices the contract leaves open (the PostgreSQL engine does the same):

* ``ingest`` sets the devices' ``last_seen_ms`` to ``now_ms`` (never backwards).
  ``set_devices_online`` changes neither ``revision`` nor ``updated_ms`` (they track edits);
  going online sets ``last_seen_ms`` to ``now_ms``.
* A command with ``expires_ms == 0`` never expires; a command expires when ``now_ms >=
  expires_ms``; an edge lease is fresh while ``now_ms - refreshed_ms < lease_ms``.
* ``prune_changes`` deletes the oldest changes up to the first one at or after ``before_ms`` (the
  retained feed stays contiguous). It also forgets ingest sequences stored before ``before_ms``,
  raising that edge's floor: a sequence at or below the floor still counts as a duplicate.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from cloud_registry.storage import migrations_sqlite
from cloud_registry.storage.base import (
    AlreadyExists,
    ChangeEntry,
    ChangeKind,
    CommandEntry,
    CommandStatus,
    DeviceFilter,
    DeviceRecord,
    EventEntry,
    EventFilter,
    HistoryBucket,
    HistoryPoint,
    IngestBatch,
    IngestResult,
    LabelRequirement,
    Location,
    ModelEntry,
    NotFound,
    Page,
    PropertyValue,
    StaleRevision,
    StorageError,
    StorageUnavailable,
    TwinRecord,
)
from cloud_registry.storage.cursors import (
    DEVICES,
    EVENTS,
    MODELS,
    decode_cursor,
    encode_cursor,
    version_sort_key,
)
from cloud_registry.storage.label_selector import validate_requirements
from cloud_registry.storage.records import (
    canonical_json,
    command_from_row,
    command_payload,
    device_from_row,
    device_payload,
    dump_json,
    encode_json_string,
    event_from_row,
    event_payload,
    model_from_row,
)
from cloud_registry.storage.security_store import SecurityStore, SqlTx

__all__ = ["SqliteStorage"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Largest number of bound parameters put in one ``IN (...)`` list.
_CHUNK = 500
_DEVICE_FIELDS = frozenset({"model", "edge_id", "site", "building", "labels", "location"})
_DEVICE_COLS = (
    "d.id, d.model, d.edge_id, d.site, d.building, d.labels, d.latitude, d.longitude, d.floor, "
    "d.room, d.online, d.revision, d.created_ms, d.updated_ms, d.last_seen_ms"
)
_EVENT_COLS = (
    "id, device_id, name, level, ts_ms, params, acknowledged, acknowledged_by, "
    "acknowledged_ms, comment"
)
_COMMAND_COLS = (
    "id, device_id, edge_id, kind, service, params, status, created_ms, expires_ms, "
    "updated_ms, result, error, sequence"
)
_MODEL_COLS = (
    "name, version, document, published_ms, title, vendor, description, property_count, "
    "event_count, service_count"
)
_ACTIVE = (CommandStatus.QUEUED.value, CommandStatus.SENT.value)
#: A bucket's number: JSON numbers and booleans (as 0/1) of a report's value, else NULL.
_BUCKET_NUMBER = (
    "CASE json_type(vals, ?3) WHEN 'integer' THEN vals ->> ?3 WHEN 'real' THEN vals ->> ?3 "
    "WHEN 'true' THEN 1 WHEN 'false' THEN 0 END"
)


def _json_path(prop: str) -> str:
    """The JSON path of a report's property (quoted: component ids hold ``:``)."""
    return "$." + encode_json_string(prop)


def _json_object(props: dict[str, str]) -> str:
    """A JSON object from property names and their values' JSON text."""
    return "{" + ",".join(f"{encode_json_string(k)}:{text}" for k, text in props.items()) + "}"


def _quality_object(qualities: dict[str, str] | None) -> str | None:
    """The JSON object of a report's non-good qualities, or None when all are good."""
    if not qualities:
        return None
    return (
        "{"
        + ",".join(f"{encode_json_string(k)}:{encode_json_string(q)}" for k, q in qualities.items())
        + "}"
    )


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _translate(exc: sqlite3.Error) -> StorageError:
    message = str(exc)
    lowered = message.lower()
    if isinstance(exc, sqlite3.OperationalError) and (
        "locked" in lowered or "busy" in lowered or "unable to open" in lowered
    ):
        return StorageUnavailable(f"sqlite: {message}")
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in lowered:
        return StorageUnavailable("the storage is closed")
    return StorageError(f"sqlite: {message}")


# --------------------------------------------------------------------------- transactions


class _Tx:
    """A write transaction in progress: the connection and the changes to append."""

    __slots__ = ("changes", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.changes: list[tuple[str, int, str, str, str, str, str]] = []

    def change(
        self,
        kind: ChangeKind,
        ts_ms: int,
        payload: Mapping[str, Any] | str,
        *,
        device_id: str = "",
        site: str = "",
        model: str = "",
        edge_id: str = "",
    ) -> None:
        text = payload if isinstance(payload, str) else dump_json(payload)
        self.changes.append((kind.value, ts_ms, device_id, site, model, edge_id, text))

    def device_change(self, kind: ChangeKind, device: DeviceRecord, ts_ms: int) -> None:
        self.change(
            kind,
            ts_ms,
            device_payload(device),
            device_id=device.id,
            site=device.site,
            model=device.model,
            edge_id=device.edge_id,
        )

    def flush(self) -> None:
        if self.changes:
            self.conn.executemany(
                "INSERT INTO changes (kind, ts_ms, device_id, site, model, edge_id, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                self.changes,
            )


class _SqliteSecurityTx:
    """:class:`~cloud_registry.storage.security_store.SqlTx` over a write transaction."""

    __slots__ = ("_tx",)

    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._tx.conn.execute(sql, params).fetchall()

    def change(
        self, kind: ChangeKind, ts_ms: int, edge_id: str, payload: Mapping[str, Any]
    ) -> None:
        self._tx.change(kind, ts_ms, payload, edge_id=edge_id)


class _SqliteSecurityRunner:
    """:class:`~cloud_registry.storage.security_store.SqlRunner` of a :class:`SqliteStorage`."""

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._storage._query(sql, params)

    def write(self, work: Callable[[SqlTx], T]) -> T:
        return self._storage._write(lambda tx: work(_SqliteSecurityTx(tx)))


# --------------------------------------------------------------------------- the engine


class SqliteStorage:
    """:class:`~cloud_registry.storage.base.Storage` on one SQLite database file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self._path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._lock = threading.Lock()
        self._closed = False
        self._listeners: list[Callable[[], None]] = []
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            raise ValueError(
                f"SqliteStorage needs a database file path, not {self._path!r} "
                "(each thread opens its own connection to it)"
            )
        try:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect(cache_kib=65_536)
            mode = self._writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            # after a checkpoint, truncate a WAL grown past 64 MiB (large batches)
            self._writer.execute("PRAGMA journal_size_limit=67108864")
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"cannot open SQLite database {self._path}: {exc}") from exc
        if str(mode).lower() != "wal":
            raise StorageUnavailable(f"{self._path}: cannot switch to WAL (journal mode {mode})")
        self._security = SecurityStore(_SqliteSecurityRunner(self))

    @property
    def security(self) -> SecurityStore:
        return self._security

    def __repr__(self) -> str:
        return f"SqliteStorage({self._path!r})"

    @property
    def path(self) -> str:
        return self._path

    def _connect(self, *, cache_kib: int = 16_384) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        conn.execute("PRAGMA temp_store=MEMORY")
        # No memory-mapped I/O: each connection's map counted the same file pages again, which
        # took a replica at 1M devices to ~1.1 GB resident; the page cache above bounds memory.
        conn.execute("PRAGMA mmap_size=0")
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StorageUnavailable("the storage is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise StorageUnavailable("the storage is closed")
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read snapshot (one read transaction) on this thread's connection."""
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One read statement (its own snapshot)."""
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _write(self, work: Callable[[_Tx], T]) -> T:
        """Run ``work`` in a ``BEGIN IMMEDIATE`` transaction, append its changes, commit, and
        tell the listeners when changes were committed."""
        with self._lock:
            if self._closed:
                raise StorageUnavailable("the storage is closed")
            conn = self._writer
            tx = _Tx(conn)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(tx)
                    tx.flush()
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
        if tx.changes:
            self._notify()
        return result

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("storage change listener failed")

    # ---- lifecycle

    def migrate(self) -> int:
        with self._lock:
            if self._closed:
                raise StorageUnavailable("the storage is closed")
            try:
                return migrations_sqlite.migrate(self._writer)
            except sqlite3.Error as exc:
                raise _translate(exc) from exc

    def schema_version(self) -> int:
        try:
            return migrations_sqlite.current_version(self._reader())
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for conn in [*readers, self._writer]:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover - closing is best effort
                    log.debug("closing a connection failed", exc_info=True)

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    # ---- models

    def put_model(self, entry: ModelEntry) -> tuple[ModelEntry, bool]:
        document = canonical_json(dict(entry.document))

        def work(tx: _Tx) -> tuple[ModelEntry, bool]:
            row = tx.conn.execute(
                f"SELECT {_MODEL_COLS} FROM models WHERE name = ? AND version = ?",
                (entry.name, entry.version),
            ).fetchone()
            if row is not None:
                if row[2] == document:
                    return model_from_row(row), True
                raise AlreadyExists(
                    f"model {entry.name}@{entry.version} exists with another document"
                )
            db = sqlite_utils.Database(tx.conn, recursive_triggers=False, execute_plugins=False)
            db.table("models").insert(
                {
                    "name": entry.name,
                    "version": entry.version,
                    "version_key": version_sort_key(entry.version),
                    "document": document,
                    "published_ms": entry.published_ms,
                    "title": entry.title,
                    "vendor": entry.vendor,
                    "description": entry.description,
                    "property_count": entry.property_count,
                    "event_count": entry.event_count,
                    "service_count": entry.service_count,
                }
            )
            tx.change(
                ChangeKind.MODEL_PUBLISHED,
                entry.published_ms,
                {
                    "name": entry.name,
                    "version": entry.version,
                    "title": entry.title,
                    "vendor": entry.vendor,
                },
                model=f"{entry.name}@{entry.version}",
            )
            return (
                ModelEntry(
                    name=entry.name,
                    version=entry.version,
                    document=json.loads(document),
                    published_ms=entry.published_ms,
                    title=entry.title,
                    vendor=entry.vendor,
                    description=entry.description,
                    property_count=entry.property_count,
                    event_count=entry.event_count,
                    service_count=entry.service_count,
                ),
                False,
            )

        return self._write(work)

    def get_model(self, name: str, version: str = "") -> ModelEntry:
        if version:
            rows = self._query(
                f"SELECT {_MODEL_COLS} FROM models WHERE name = ? AND version = ?",
                (name, version),
            )
        else:
            rows = self._query(
                f"SELECT {_MODEL_COLS} FROM models WHERE name = ? "
                "ORDER BY version_key DESC LIMIT 1",
                (name,),
            )
        if not rows:
            ref = f"{name}@{version}" if version else name
            raise NotFound(f"model {ref} not found")
        return model_from_row(rows[0])

    def list_models(self, name_prefix: str, cursor: str, limit: int) -> Page[ModelEntry]:
        key = decode_cursor(cursor, MODELS, (str,))
        limit = max(1, limit)
        sql = (
            f"SELECT {_MODEL_COLS} FROM models AS m WHERE m.name > ? AND m.name >= ? "
            "AND m.version_key = (SELECT max(x.version_key) FROM models AS x "
            "WHERE x.name = m.name)"
        )
        params: list[Any] = ["" if key is None else key[0], name_prefix]
        if name_prefix:
            sql += " AND m.name < ?"
            params.append(name_prefix + "\U0010ffff")
        sql += " ORDER BY m.name LIMIT ?"
        params.append(limit + 1)
        rows = self._query(sql, params)
        items = tuple(model_from_row(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, encode_cursor(MODELS, [items[-1].name]) if more else "")

    def list_model_versions(self, name: str) -> list[ModelEntry]:
        rows = self._query(
            f"SELECT {_MODEL_COLS} FROM models WHERE name = ? ORDER BY version_key DESC",
            (name,),
        )
        return [model_from_row(r) for r in rows]

    # ---- devices

    @staticmethod
    def _device_row(conn: sqlite3.Connection, device_id: str) -> DeviceRecord:
        row = conn.execute(
            f"SELECT {_DEVICE_COLS} FROM devices AS d WHERE d.id = ?", (device_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"device {device_id} not found")
        return device_from_row(row)

    @staticmethod
    def _write_labels(conn: sqlite3.Connection, device_id: str, labels: Mapping[str, str]) -> None:
        conn.execute("DELETE FROM device_labels WHERE device_id = ?", (device_id,))
        if labels:
            conn.executemany(
                "INSERT INTO device_labels (key, value, device_id) VALUES (?, ?, ?)",
                [(k, v, device_id) for k, v in labels.items()],
            )

    def create_device(self, device: DeviceRecord, now_ms: int) -> DeviceRecord:
        record = DeviceRecord(
            id=device.id,
            model=device.model,
            edge_id=device.edge_id,
            site=device.site,
            building=device.building,
            labels=dict(device.labels),
            location=device.location,
            online=device.online,
            revision=1,
            created_ms=now_ms,
            updated_ms=now_ms,
            last_seen_ms=device.last_seen_ms,
        )

        def work(tx: _Tx) -> DeviceRecord:
            exists = tx.conn.execute("SELECT 1 FROM devices WHERE id = ?", (record.id,))
            if exists.fetchone() is not None:
                raise AlreadyExists(f"device {record.id} exists already")
            loc = record.location
            tx.conn.execute(
                "INSERT INTO devices (id, model, model_name, edge_id, site, building, labels, "
                "latitude, longitude, floor, room, online, revision, created_ms, updated_ms, "
                "last_seen_ms, twin_revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                "?, ?, 0)",
                (
                    record.id,
                    record.model,
                    record.model_name,
                    record.edge_id,
                    record.site,
                    record.building,
                    canonical_json(dict(record.labels)),
                    loc.latitude,
                    loc.longitude,
                    loc.floor,
                    loc.room,
                    int(record.online),
                    record.revision,
                    record.created_ms,
                    record.updated_ms,
                    record.last_seen_ms,
                ),
            )
            self._write_labels(tx.conn, record.id, record.labels)
            tx.device_change(ChangeKind.DEVICE_CREATED, record, now_ms)
            return record

        return self._write(work)

    def get_device(self, device_id: str) -> DeviceRecord:
        rows = self._query(f"SELECT {_DEVICE_COLS} FROM devices AS d WHERE d.id = ?", (device_id,))
        if not rows:
            raise NotFound(f"device {device_id} not found")
        return device_from_row(rows[0])

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, DeviceRecord]:
        ids = list(dict.fromkeys(device_ids))
        result: dict[str, DeviceRecord] = {}
        with self._read() as conn:
            for chunk in _chunks(ids):
                rows = conn.execute(
                    f"SELECT {_DEVICE_COLS} FROM devices AS d WHERE d.id IN ({_marks(len(chunk))})",
                    list(chunk),
                )
                for row in rows:
                    result[row[0]] = device_from_row(row)
        return result

    def list_devices(self, flt: DeviceFilter, cursor: str, limit: int) -> Page[DeviceRecord]:
        key = decode_cursor(cursor, DEVICES, (str,))
        validate_requirements(flt.labels)
        limit = max(1, limit)
        small_label = None
        if not (flt.edge_id or flt.building or flt.site or flt.model) and not any(
            r.op == "=" for r in flt.labels
        ):
            # a rare in/exists label drives the scan; probing costs at most _SMALL_LABEL_SET rows
            for req in flt.labels:
                if req.op in ("in", "exists"):
                    subquery, sub_params = _label_set_sql(req)
                    count = self._query(
                        f"SELECT count(*) FROM ({subquery} LIMIT {_SMALL_LABEL_SET + 1})",
                        sub_params,
                    )[0][0]
                    if count <= _SMALL_LABEL_SET:
                        small_label = req
                        break
        built = _device_query(flt, "" if key is None else str(key[0]), limit + 1, small_label)
        if built is None:
            return Page(())
        sql, params = built
        rows = self._query(sql, params)
        items = tuple(device_from_row(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(items, encode_cursor(DEVICES, [items[-1].id]) if more else "")

    def update_device(
        self, device_id: str, changes: Mapping[str, Any], expected_revision: int, now_ms: int
    ) -> DeviceRecord:
        unknown = set(changes) - _DEVICE_FIELDS
        if unknown:
            raise ValueError(f"update_device: fields {sorted(unknown)} cannot be changed")

        def work(tx: _Tx) -> DeviceRecord:
            current = self._device_row(tx.conn, device_id)
            if expected_revision and expected_revision != current.revision:
                raise StaleRevision(
                    f"device {device_id} is at revision {current.revision}, "
                    f"not {expected_revision}",
                    current.revision,
                )
            location = changes.get("location", current.location)
            if isinstance(location, Mapping):
                location = Location(**location)
            labels = dict(changes.get("labels", current.labels))
            record = DeviceRecord(
                id=current.id,
                model=changes.get("model", current.model),
                edge_id=changes.get("edge_id", current.edge_id),
                site=changes.get("site", current.site),
                building=changes.get("building", current.building),
                labels=labels,
                location=location,
                online=current.online,
                revision=current.revision + 1,
                created_ms=current.created_ms,
                updated_ms=now_ms,
                last_seen_ms=current.last_seen_ms,
            )
            tx.conn.execute(
                "UPDATE devices SET model = ?, model_name = ?, edge_id = ?, site = ?, "
                "building = ?, labels = ?, latitude = ?, longitude = ?, floor = ?, room = ?, "
                "revision = ?, updated_ms = ? WHERE id = ?",
                (
                    record.model,
                    record.model_name,
                    record.edge_id,
                    record.site,
                    record.building,
                    canonical_json(labels),
                    location.latitude,
                    location.longitude,
                    location.floor,
                    location.room,
                    record.revision,
                    now_ms,
                    device_id,
                ),
            )
            if "labels" in changes:
                self._write_labels(tx.conn, device_id, labels)
            tx.device_change(ChangeKind.DEVICE_UPDATED, record, now_ms)
            return record

        return self._write(work)

    def delete_device(self, device_id: str, expected_revision: int, now_ms: int) -> None:
        def work(tx: _Tx) -> None:
            current = self._device_row(tx.conn, device_id)
            if expected_revision and expected_revision != current.revision:
                raise StaleRevision(
                    f"device {device_id} is at revision {current.revision}, "
                    f"not {expected_revision}",
                    current.revision,
                )
            for table, column in (
                ("devices", "id"),
                ("device_labels", "device_id"),
                ("twin_reported", "device_id"),
                ("twin_desired", "device_id"),
                ("history_reports", "device_id"),
                ("events", "device_id"),
            ):
                tx.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (device_id,))
            tx.device_change(ChangeKind.DEVICE_DELETED, current, now_ms)

        self._write(work)

    def set_devices_online(self, edge_id: str, states: Mapping[str, bool], now_ms: int) -> None:
        if not states:
            return
        ids = list(states)

        def work(tx: _Tx) -> None:
            updates: list[tuple[int, int, str]] = []
            for chunk in _chunks(ids):
                rows = tx.conn.execute(
                    f"SELECT {_DEVICE_COLS} FROM devices AS d WHERE d.edge_id = ? "
                    f"AND d.id IN ({_marks(len(chunk))})",
                    [edge_id, *chunk],
                ).fetchall()
                for row in rows:
                    device = device_from_row(row)
                    online = bool(states[device.id])
                    if device.online == online:
                        continue
                    last_seen = max(device.last_seen_ms, now_ms) if online else device.last_seen_ms
                    updates.append((int(online), last_seen, device.id))
                    changed = DeviceRecord(
                        id=device.id,
                        model=device.model,
                        edge_id=device.edge_id,
                        site=device.site,
                        building=device.building,
                        labels=device.labels,
                        location=device.location,
                        online=online,
                        revision=device.revision,
                        created_ms=device.created_ms,
                        updated_ms=device.updated_ms,
                        last_seen_ms=last_seen,
                    )
                    tx.device_change(ChangeKind.DEVICE_UPDATED, changed, now_ms)
            if updates:
                tx.conn.executemany(
                    "UPDATE devices SET online = ?, last_seen_ms = ? WHERE id = ?", updates
                )

        self._write(work)

    # ---- twins, history, events

    @staticmethod
    def _twin(conn: sqlite3.Connection, device_id: str) -> TwinRecord:
        row = conn.execute(
            "SELECT model, twin_revision FROM devices WHERE id = ?", (device_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"device {device_id} not found")
        sides: list[dict[str, PropertyValue]] = []
        for table in ("twin_reported", "twin_desired"):
            values = conn.execute(
                f"SELECT property, value, ts_ms, quality FROM {table} WHERE device_id = ? "
                "ORDER BY property",
                (device_id,),
            )
            sides.append({p: PropertyValue(json.loads(v), ts, q) for p, v, ts, q in values})
        return TwinRecord(device_id, row[0], sides[0], sides[1], row[1])

    def get_twin(self, device_id: str) -> TwinRecord:
        with self._read() as conn:
            return self._twin(conn, device_id)

    def set_desired(
        self,
        device_id: str,
        values: Mapping[str, Any],
        expected_revision: int,
        now_ms: int,
    ) -> TwinRecord:
        def work(tx: _Tx) -> TwinRecord:
            conn = tx.conn
            row = conn.execute(
                "SELECT twin_revision, site, model, edge_id FROM devices WHERE id = ?",
                (device_id,),
            ).fetchone()
            if row is None:
                raise NotFound(f"device {device_id} not found")
            revision, site, model, edge_id = row
            if expected_revision and expected_revision != revision:
                raise StaleRevision(
                    f"twin of {device_id} is at revision {revision}, not {expected_revision}",
                    revision,
                )
            upserts = [
                (device_id, name, dump_json(value), now_ms, "good")
                for name, value in values.items()
                if value is not None
            ]
            cleared = [(device_id, name) for name, value in values.items() if value is None]
            if upserts:
                conn.executemany(
                    "INSERT OR REPLACE INTO twin_desired (device_id, property, value, ts_ms, "
                    "quality) VALUES (?, ?, ?, ?, ?)",
                    upserts,
                )
            if cleared:
                conn.executemany(
                    "DELETE FROM twin_desired WHERE device_id = ? AND property = ?", cleared
                )
            revision += 1
            conn.execute("UPDATE devices SET twin_revision = ? WHERE id = ?", (revision, device_id))
            payload = {
                "properties": {
                    name: {"value": value, "ts_ms": now_ms, "quality": "good"}
                    for name, value in values.items()
                },
                "revision": revision,
            }
            tx.change(
                ChangeKind.TWIN_DESIRED,
                now_ms,
                payload,
                device_id=device_id,
                site=site,
                model=model,
                edge_id=edge_id,
            )
            return self._twin(conn, device_id)

        return self._write(work)

    def _require_device(self, conn: sqlite3.Connection, device_id: str) -> None:
        if conn.execute("SELECT 1 FROM devices WHERE id = ?", (device_id,)).fetchone() is None:
            raise NotFound(f"device {device_id} not found")

    def history(
        self, device_id: str, prop: str, from_ms: int, to_ms: int, limit: int
    ) -> tuple[list[HistoryPoint], bool]:
        limit = max(1, limit)
        upper = to_ms if to_ms > 0 else 2**62
        with self._read() as conn:
            self._require_device(conn, device_id)
            rows = conn.execute(
                "SELECT ts_ms, vals -> ?3, coalesce(quals ->> ?3, 'good') FROM history_reports "
                "WHERE device_id = ?1 AND ts_ms >= ?4 AND ts_ms < ?5 AND vals -> ?3 IS NOT NULL "
                "ORDER BY ts_ms, rowid LIMIT ?6",
                (device_id, prop, _json_path(prop), from_ms, upper, limit + 1),
            ).fetchall()
        points = [HistoryPoint(row[0], json.loads(row[1]), row[2]) for row in rows[:limit]]
        return points, len(rows) > limit

    def history_buckets(
        self, device_id: str, prop: str, from_ms: int, to_ms: int, bucket_ms: int
    ) -> list[HistoryBucket]:
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        upper = to_ms if to_ms > 0 else 2**62
        with self._read() as conn:
            self._require_device(conn, device_id)
            rows = conn.execute(
                "SELECT ts_ms - (((ts_ms % ?6) + ?6) % ?6) AS start, min(n), max(n), avg(n), "
                f"count(n) FROM (SELECT ts_ms, {_BUCKET_NUMBER} AS n FROM history_reports "
                "WHERE device_id = ?1 AND ts_ms >= ?4 AND ts_ms < ?5) "
                "WHERE n IS NOT NULL GROUP BY start ORDER BY start",
                (device_id, prop, _json_path(prop), from_ms, upper, bucket_ms),
            ).fetchall()
        return [
            HistoryBucket(int(start), float(lo), float(hi), float(avg), count)
            for start, lo, hi, avg, count in rows
        ]

    def list_events(self, flt: EventFilter, cursor: str, limit: int) -> Page[EventEntry]:
        key = decode_cursor(cursor, EVENTS, (int, str))
        limit = max(1, limit)
        if flt.sites is not None and (not flt.sites or (flt.site and flt.site not in flt.sites)):
            return Page(())
        where: list[str] = []
        params: list[Any] = []
        if flt.device_id:
            index = "idx_events_device"
            where.append("device_id = ?")
            params.append(flt.device_id)
            if flt.site:
                where.append("site = ?")
                params.append(flt.site)
        elif flt.site:
            index = "idx_events_site"
            where.append("site = ?")
            params.append(flt.site)
        else:
            index = "idx_events_ts"
        if flt.sites is not None:
            where.append(f"site IN ({_marks(len(flt.sites))})")
            params.extend(flt.sites)
        if flt.levels:
            where.append(f"level IN ({_marks(len(flt.levels))})")
            params.extend(flt.levels)
        if flt.from_ms:
            where.append("ts_ms >= ?")
            params.append(flt.from_ms)
        if flt.to_ms:
            where.append("ts_ms < ?")
            params.append(flt.to_ms)
        if flt.unacknowledged_only:
            where.append("acknowledged = 0")
        if key is not None:
            where.append("(ts_ms, id) < (?, ?)")
            params.extend(key)
        sql = f"SELECT {_EVENT_COLS} FROM events INDEXED BY {index}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_ms DESC, id DESC LIMIT ?"
        params.append(limit + 1)
        rows = self._query(sql, params)
        items = tuple(event_from_row(r) for r in rows[:limit])
        more = len(rows) > limit
        cursor_out = encode_cursor(EVENTS, [items[-1].ts_ms, items[-1].id]) if more else ""
        return Page(items, cursor_out)

    def acknowledge_event(self, event_id: str, by: str, comment: str, now_ms: int) -> EventEntry:
        def work(tx: _Tx) -> EventEntry:
            row = tx.conn.execute(
                f"SELECT {_EVENT_COLS}, site FROM events WHERE id = ?", (event_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"event {event_id} not found")
            event = event_from_row(row)
            if event.acknowledged:
                return event
            tx.conn.execute(
                "UPDATE events SET acknowledged = 1, acknowledged_by = ?, acknowledged_ms = ?, "
                "comment = ? WHERE id = ?",
                (by, now_ms, comment, event_id),
            )
            acked = EventEntry(
                id=event.id,
                device_id=event.device_id,
                name=event.name,
                level=event.level,
                ts_ms=event.ts_ms,
                params=event.params,
                acknowledged=True,
                acknowledged_by=by,
                acknowledged_ms=now_ms,
                comment=comment,
            )
            device = tx.conn.execute(
                "SELECT model, edge_id FROM devices WHERE id = ?", (event.device_id,)
            ).fetchone()
            tx.change(
                ChangeKind.ALARM_ACKNOWLEDGED,
                now_ms,
                event_payload(acked),
                device_id=event.device_id,
                site=row[10],
                model=device[0] if device else "",
                edge_id=device[1] if device else "",
            )
            return acked

        return self._write(work)

    # ---- ingest

    def ingest(self, batch: IngestBatch, now_ms: int) -> IngestResult:
        values = batch.values
        events = batch.events
        ids = list(dict.fromkeys([v.device_id for v in values] + [e.device_id for e in events]))
        return self._write(lambda tx: _ingest(tx, batch, ids, values, events, now_ms))

    def last_sequence(self, edge_id: str) -> int:
        rows = self._query(
            "SELECT max(coalesce((SELECT max(sequence) FROM ingest_batches WHERE edge_id = ?1), "
            "0), coalesce((SELECT batch_floor FROM edges WHERE edge_id = ?1), 0))",
            (edge_id,),
        )
        return int(rows[0][0])

    # ---- commands

    @staticmethod
    def _device_context(conn: sqlite3.Connection, device_id: str) -> tuple[str, str]:
        row = conn.execute("SELECT site, model FROM devices WHERE id = ?", (device_id,)).fetchone()
        return (row[0], row[1]) if row else ("", "")

    def _command_change(self, tx: _Tx, command: CommandEntry, ts_ms: int) -> None:
        site, model = self._device_context(tx.conn, command.device_id)
        tx.change(
            ChangeKind.COMMAND_UPDATED,
            ts_ms,
            command_payload(command),
            device_id=command.device_id,
            site=site,
            model=model,
            edge_id=command.edge_id,
        )

    def create_command(self, command: CommandEntry) -> CommandEntry:
        def work(tx: _Tx) -> CommandEntry:
            conn = tx.conn
            if conn.execute("SELECT 1 FROM commands WHERE id = ?", (command.id,)).fetchone():
                raise AlreadyExists(f"command {command.id} exists already")
            sequence = conn.execute(
                "INSERT INTO edges (edge_id, command_seq) VALUES (?, 1) ON CONFLICT (edge_id) "
                "DO UPDATE SET command_seq = command_seq + 1 RETURNING command_seq",
                (command.edge_id,),
            ).fetchone()[0]
            stored = CommandEntry(
                id=command.id,
                device_id=command.device_id,
                edge_id=command.edge_id,
                kind=command.kind,
                service=command.service,
                params=dict(command.params),
                status=CommandStatus(command.status),
                created_ms=command.created_ms,
                expires_ms=command.expires_ms,
                updated_ms=command.updated_ms or command.created_ms,
                result=dict(command.result),
                error=command.error,
                sequence=sequence,
            )
            conn.execute(
                f"INSERT INTO commands ({_COMMAND_COLS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.id,
                    stored.device_id,
                    stored.edge_id,
                    stored.kind,
                    stored.service,
                    dump_json(dict(stored.params)),
                    stored.status.value,
                    stored.created_ms,
                    stored.expires_ms,
                    stored.updated_ms,
                    dump_json(dict(stored.result)),
                    stored.error,
                    stored.sequence,
                ),
            )
            self._command_change(tx, stored, stored.created_ms)
            return stored

        return self._write(work)

    def get_command(self, command_id: str) -> CommandEntry:
        rows = self._query(f"SELECT {_COMMAND_COLS} FROM commands WHERE id = ?", (command_id,))
        if not rows:
            raise NotFound(f"command {command_id} not found")
        return command_from_row(rows[0])

    def update_command(
        self,
        command_id: str,
        status: CommandStatus,
        now_ms: int,
        result: Mapping[str, Any] | None = None,
        error: str = "",
    ) -> CommandEntry:
        status = CommandStatus(status)

        def work(tx: _Tx) -> CommandEntry:
            row = tx.conn.execute(
                f"SELECT {_COMMAND_COLS} FROM commands WHERE id = ?", (command_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"command {command_id} not found")
            current = command_from_row(row)
            if current.status.final:
                return current
            new_result = dict(result) if result is not None else dict(current.result)
            new_error = error or current.error
            if (
                status == current.status
                and canonical_json(new_result) == canonical_json(dict(current.result))
                and new_error == current.error
            ):
                return current
            updated = CommandEntry(
                id=current.id,
                device_id=current.device_id,
                edge_id=current.edge_id,
                kind=current.kind,
                service=current.service,
                params=current.params,
                status=status,
                created_ms=current.created_ms,
                expires_ms=current.expires_ms,
                updated_ms=now_ms,
                result=new_result,
                error=new_error,
                sequence=current.sequence,
            )
            tx.conn.execute(
                "UPDATE commands SET status = ?, updated_ms = ?, result = ?, error = ? "
                "WHERE id = ?",
                (status.value, now_ms, dump_json(new_result), new_error, command_id),
            )
            self._command_change(tx, updated, now_ms)
            return updated

        return self._write(work)

    def pending_commands(self, edge_id: str, now_ms: int) -> list[CommandEntry]:
        rows = self._query(
            f"SELECT {_COMMAND_COLS} FROM commands WHERE edge_id = ? AND status = ? "
            "AND (expires_ms = 0 OR expires_ms > ?) ORDER BY sequence",
            (edge_id, CommandStatus.QUEUED.value, now_ms),
        )
        return [command_from_row(r) for r in rows]

    def expire_commands(self, now_ms: int) -> int:
        def work(tx: _Tx) -> int:
            rows = tx.conn.execute(
                f"SELECT {_COMMAND_COLS} FROM commands WHERE status IN (?, ?) "
                "AND expires_ms > 0 AND expires_ms <= ? ORDER BY edge_id, sequence",
                (*_ACTIVE, now_ms),
            ).fetchall()
            for row in rows:
                current = command_from_row(row)
                expired = CommandEntry(
                    id=current.id,
                    device_id=current.device_id,
                    edge_id=current.edge_id,
                    kind=current.kind,
                    service=current.service,
                    params=current.params,
                    status=CommandStatus.EXPIRED,
                    created_ms=current.created_ms,
                    expires_ms=current.expires_ms,
                    updated_ms=now_ms,
                    result=current.result,
                    error=current.error,
                    sequence=current.sequence,
                )
                self._command_change(tx, expired, now_ms)
            if rows:
                tx.conn.executemany(
                    "UPDATE commands SET status = ?, updated_ms = ? WHERE id = ?",
                    [(CommandStatus.EXPIRED.value, now_ms, r[0]) for r in rows],
                )
            return len(rows)

        return self._write(work)

    # ---- edges

    def edge_connected(self, edge_id: str, replica_id: str, now_ms: int) -> None:
        def work(tx: _Tx) -> None:
            tx.conn.execute(
                "INSERT INTO edges (edge_id, replica_id, lease_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (edge_id) DO UPDATE SET replica_id = excluded.replica_id, "
                "lease_ms = excluded.lease_ms",
                (edge_id, replica_id, now_ms),
            )

        self._write(work)

    def edge_disconnected(self, edge_id: str, replica_id: str, now_ms: int) -> None:
        def work(tx: _Tx) -> None:
            tx.conn.execute(
                "UPDATE edges SET replica_id = '', lease_ms = 0 "
                "WHERE edge_id = ? AND replica_id = ?",
                (edge_id, replica_id),
            )

        self._write(work)

    def edge_connection(self, edge_id: str, now_ms: int, lease_ms: int) -> str | None:
        rows = self._query("SELECT replica_id, lease_ms FROM edges WHERE edge_id = ?", (edge_id,))
        if not rows or not rows[0][0]:
            return None
        replica, refreshed = rows[0]
        return str(replica) if now_ms - refreshed < lease_ms else None

    # ---- change feed

    def changes_after(self, seq: int, limit: int) -> list[ChangeEntry]:
        rows = self._query(
            "SELECT seq, kind, ts_ms, device_id, site, model, edge_id, payload FROM changes "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, max(1, limit)),
        )
        return [
            ChangeEntry(s, ChangeKind(k), ts, dev, site, model, edge, json.loads(payload))
            for s, k, ts, dev, site, model, edge, payload in rows
        ]

    def latest_change_seq(self) -> int:
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return int(rows[0][0]) if rows else 0

    def oldest_change_seq(self) -> int:
        rows = self._query("SELECT min(seq) FROM changes")
        return int(rows[0][0] or 0)

    def prune_changes(self, before_ms: int) -> int:
        def work(tx: _Tx) -> int:
            conn = tx.conn
            first_kept = conn.execute(
                "SELECT min(seq) FROM changes WHERE ts_ms >= ?", (before_ms,)
            ).fetchone()[0]
            if first_kept is None:
                deleted = conn.execute("DELETE FROM changes").rowcount
            else:
                deleted = conn.execute("DELETE FROM changes WHERE seq < ?", (first_kept,)).rowcount
            old = conn.execute(
                "SELECT edge_id, max(sequence) FROM ingest_batches WHERE stored_ms < ? "
                "GROUP BY edge_id",
                (before_ms,),
            ).fetchall()
            if old:
                conn.executemany(
                    "INSERT INTO edges (edge_id, batch_floor) VALUES (?1, ?2) "
                    "ON CONFLICT (edge_id) DO UPDATE SET batch_floor = max(batch_floor, ?2)",
                    old,
                )
                conn.execute("DELETE FROM ingest_batches WHERE stored_ms < ?", (before_ms,))
            return int(deleted)

        return self._write(work)


# --------------------------------------------------------------------------- list_devices SQL


def _label_condition(req: LabelRequirement) -> tuple[str, list[Any]]:
    """A filter on the device row's own labels JSON (cheaper than a lookup per row in
    ``device_labels``, whose rows lie elsewhere in the file). Keys are validated, so the JSON
    path needs no escaping."""
    path = f'$."{req.key}"'
    values = list(req.values)
    if req.op == "=":
        return "json_extract(d.labels, ?) = ?", [path, *values]
    if req.op == "!=":
        return "json_extract(d.labels, ?) IS NOT ?", [path, *values]
    if req.op == "exists":
        return "json_type(d.labels, ?) IS NOT NULL", [path]
    if req.op == "!exists":
        return "json_type(d.labels, ?) IS NULL", [path]
    marks = _marks(len(values))
    if req.op == "in":
        return f"json_extract(d.labels, ?) IN ({marks})", [path, *values]
    return f"coalesce(json_extract(d.labels, ?) NOT IN ({marks}), 1)", [path, *values]


#: A positive ``in``/``exists`` label with at most this many matching devices drives the scan
#: (its matches are read and sorted); above it, the id-ordered scan filters by it.
_SMALL_LABEL_SET = 5000


def _label_set_sql(req: LabelRequirement) -> tuple[str, list[Any]]:
    """The device ids a positive ``in``/``exists`` requirement selects."""
    if req.op == "in":
        return (
            "SELECT x.device_id FROM device_labels AS x "
            f"WHERE x.key = ? AND x.value IN ({_marks(len(req.values))})",
            [req.key, *req.values],
        )
    return "SELECT x.device_id FROM device_labels AS x WHERE x.key = ?", [req.key]


def _device_query(
    flt: DeviceFilter,
    after_id: str,
    fetch: int,
    small_label: LabelRequirement | None = None,
) -> tuple[str, list[Any]] | None:
    """The SQL of one keyset page of ``list_devices`` (None: nothing can match).

    The most selective criterion we can guess drives the scan through an index in id order, so
    the scan stops after ``fetch`` rows; the other criteria filter. Preference: edge, building,
    site (``(column, id)`` indexes), a ``key=value`` label (``device_labels``' primary key), the
    model; otherwise ``small_label`` (a positive ``in``/``exists`` label known to match few
    devices: its matches are sorted), otherwise the id order itself (or SQLite's choice, e.g.
    the ``(online, id)`` index)."""
    sites = flt.sites
    site = flt.site
    if sites is not None:
        if not sites or (site and site not in sites):
            return None
        if len(sites) == 1:
            site = site or sites[0]
    columns: list[tuple[str, str, str]] = []  # (index, column, value) in driving preference
    if flt.edge_id:
        columns.append(("idx_devices_edge", "edge_id", flt.edge_id))
    if flt.building:
        columns.append(("idx_devices_building", "building", flt.building))
    if site:
        columns.append(("idx_devices_site", "site", site))
    label_eq = next((r for r in flt.labels if r.op == "="), None)
    if flt.model:
        if "@" in flt.model:
            columns.append(("idx_devices_model", "model", flt.model))
        else:
            columns.append(("idx_devices_model_name", "model_name", flt.model))
    where: list[str] = []
    params: list[Any] = []
    label_driver: LabelRequirement | None = None
    order = "d.id"
    if columns and (label_eq is None or columns[0][1] in ("edge_id", "building", "site")):
        source = f"devices AS d INDEXED BY {columns[0][0]}"
    elif label_eq is not None:
        label_driver = label_eq
        source = "device_labels AS l CROSS JOIN devices AS d"
        where.append("l.key = ? AND l.value = ? AND d.id = l.device_id")
        params.extend([label_eq.key, label_eq.values[0]])
        order = "l.device_id"
    elif small_label is not None:
        label_driver = small_label
        source = "devices AS d"
        subquery, sub_params = _label_set_sql(small_label)
        where.append(f"d.id IN ({subquery})")
        params.extend(sub_params)
    else:
        source = "devices AS d"
    for _index, column, value in columns:
        where.append(f"d.{column} = ?")
        params.append(value)
    if sites is not None and len(sites) > 1:
        where.append(f"d.site IN ({_marks(len(sites))})")
        params.extend(sites)
    if flt.online is not None:
        where.append("d.online = ?")
        params.append(int(flt.online))
    for req in flt.labels:
        if req is label_driver:
            continue
        cond, cond_params = _label_condition(req)
        where.append(cond)
        params.extend(cond_params)
    if after_id:
        where.append(f"{order} > ?")
        params.append(after_id)
    sql = f"SELECT {_DEVICE_COLS} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} LIMIT ?"
    params.append(fetch)
    return sql, params


# --------------------------------------------------------------------------- ingest


def _ingest(
    tx: _Tx,
    batch: IngestBatch,
    ids: list[str],
    values: Sequence[Any],
    events: Sequence[EventEntry],
    now_ms: int,
) -> IngestResult:
    conn = tx.conn
    edge_id = batch.edge_id
    seen = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM ingest_batches WHERE edge_id = ?1 AND sequence = ?2) "
        "OR coalesce((SELECT batch_floor FROM edges WHERE edge_id = ?1), 0) >= ?2",
        (edge_id, batch.sequence),
    ).fetchone()[0]
    if seen:
        return IngestResult(duplicate=True)

    # devices: id -> [site, model, edge_id, twin_revision, last_seen_ms]
    devices: dict[str, list[Any]] = {}
    newest_stored: dict[str, int] = {}  # device -> newest reported ts in its twin
    for chunk in _chunks(ids):
        marks = _marks(len(chunk))
        for row in conn.execute(
            "SELECT id, site, model, edge_id, twin_revision, last_seen_ms FROM devices "
            f"WHERE id IN ({marks})",
            list(chunk),
        ):
            devices[row[0]] = list(row[1:])
        if values:
            newest_stored.update(
                conn.execute(
                    "SELECT device_id, max(ts_ms) FROM twin_reported "
                    f"WHERE device_id IN ({marks}) GROUP BY device_id",
                    list(chunk),
                ).fetchall()
            )

    # Which values reach the twin: a value wins when its ts is not older than the property's
    # current one (stored, or set by an earlier value of this batch) -- the rule the upsert
    # below applies row by row in batch order. A device whose values are all at least as new
    # as everything in its twin needs no stored timestamps; the others ("slow") are redone
    # with their per-property timestamps.
    rejected: dict[str, None] = {}
    stored_values = 0
    # one history row per report: (device, ts) -> property -> JSON text (and non-good quality)
    reports: dict[tuple[str, int], dict[str, str]] = {}
    report_quality: dict[tuple[str, int], dict[str, str]] = {}
    winners: dict[str, dict[str, tuple[str, int, str]]] = {}  # device -> property -> value
    slow: set[str] = set()
    for v in values:
        device_id = v.device_id
        if device_id not in devices:
            rejected[device_id] = None
            continue
        ts = v.ts_ms
        value = v.value
        prop = v.property
        text = dump_json(value)
        quality = v.quality
        stored_values += 1
        key = (device_id, ts)
        report = reports.get(key)
        if report is None:
            report = reports[key] = {}
        report[prop] = text
        if quality != "good":
            report_quality.setdefault(key, {})[prop] = quality
        elif key in report_quality:
            report_quality[key].pop(prop, None)
        if device_id in slow:
            continue
        floor = newest_stored.get(device_id)
        if floor is not None and ts < floor:
            slow.add(device_id)
            continue
        props = winners.get(device_id)
        if props is None:
            props = winners[device_id] = {}
        current = props.get(prop)
        if current is None or ts >= current[1]:
            props[prop] = (text, ts, quality)
    if slow:
        twin_ts: dict[tuple[str, str], int] = {}
        for chunk in _chunks(sorted(slow)):
            for dev, prop, ts in conn.execute(
                "SELECT device_id, property, ts_ms FROM twin_reported "
                f"WHERE device_id IN ({_marks(len(chunk))})",
                list(chunk),
            ):
                twin_ts[(dev, prop)] = ts
        for device_id in slow:
            winners.pop(device_id, None)
        for v in values:  # the slow devices' values again, in batch order
            if v.device_id not in slow:
                continue
            key = (v.device_id, v.property)
            stored_ts = twin_ts.get(key)
            if stored_ts is None or v.ts_ms >= stored_ts:
                twin_ts[key] = v.ts_ms
                winners.setdefault(v.device_id, {})[v.property] = (
                    dump_json(v.value),
                    v.ts_ms,
                    v.quality,
                )

    stored_events: list[EventEntry] = []
    for event in events:
        if event.device_id not in devices:
            rejected[event.device_id] = None
            continue
        stored = EventEntry(
            id=event.id or uuid.uuid4().hex,
            device_id=event.device_id,
            name=event.name,
            level=event.level,
            ts_ms=event.ts_ms,
            params=dict(event.params),
            acknowledged=event.acknowledged,
            acknowledged_by=event.acknowledged_by,
            acknowledged_ms=event.acknowledged_ms,
            comment=event.comment,
        )
        inserted = conn.execute(
            "INSERT OR IGNORE INTO events (id, device_id, site, name, level, ts_ms, params, "
            "acknowledged, acknowledged_by, acknowledged_ms, comment) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                stored.id,
                stored.device_id,
                devices[stored.device_id][0],
                stored.name,
                stored.level,
                stored.ts_ms,
                dump_json(stored.params),
                int(stored.acknowledged),
                stored.acknowledged_by,
                stored.acknowledged_ms,
                stored.comment,
            ),
        ).rowcount
        if inserted:
            stored_events.append(stored)

    if reports:
        conn.executemany(
            "INSERT INTO history_reports (device_id, ts_ms, vals, quals) VALUES (?, ?, ?, ?)",
            [
                (device_id, ts, _json_object(props), _quality_object(report_quality.get(key)))
                for key, props in reports.items()
                for device_id, ts in (key,)
            ],
        )
        # the twin: the winning value of each property (see winners above)
        conn.executemany(
            "INSERT INTO twin_reported (device_id, property, value, ts_ms, quality) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, property) DO UPDATE SET "
            "value = excluded.value, ts_ms = excluded.ts_ms, quality = excluded.quality "
            "WHERE excluded.ts_ms >= twin_reported.ts_ms",
            [
                (device_id, prop, text, ts, quality)
                for device_id, props in winners.items()
                for prop, (text, ts, quality) in props.items()
            ],
        )

    # one TWIN_REPORTED change per device, in the order the devices first appear
    by_device: dict[str, list[str]] = {
        device_id: [
            f'{encode_json_string(prop)}:{{"value":{text},"ts_ms":{ts},"quality":{encode_json_string(q)}}}'
            for prop, (text, ts, q) in props.items()
        ]
        for device_id, props in winners.items()
    }
    device_updates: list[tuple[int, int, str]] = []
    for device_id in ids:
        info = devices.get(device_id)
        if info is None:
            continue
        site, model, device_edge, revision, last_seen = info
        parts = by_device.get(device_id)
        if parts:
            revision += 1
            tx.change(
                ChangeKind.TWIN_REPORTED,
                now_ms,
                '{"properties":{' + ",".join(parts) + '},"revision":' + str(revision) + "}",
                device_id=device_id,
                site=site,
                model=model,
                edge_id=device_edge,
            )
        seen_ms = max(last_seen, now_ms)
        if parts or seen_ms != last_seen:
            device_updates.append((revision, seen_ms, device_id))
    for stored in stored_events:
        site, model, device_edge = devices[stored.device_id][:3]
        tx.change(
            ChangeKind.EVENT,
            now_ms,
            event_payload(stored),
            device_id=stored.device_id,
            site=site,
            model=model,
            edge_id=device_edge,
        )
    if device_updates:
        conn.executemany(
            "UPDATE devices SET twin_revision = ?, last_seen_ms = ? WHERE id = ?", device_updates
        )
    conn.execute(
        "INSERT INTO ingest_batches (edge_id, sequence, stored_ms) VALUES (?, ?, ?)",
        (edge_id, batch.sequence, now_ms),
    )
    return IngestResult(
        duplicate=False,
        stored_values=stored_values,
        stored_events=len(stored_events),
        rejected=tuple(f"{device_id}: unknown device" for device_id in rejected),
    )
