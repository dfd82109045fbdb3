"""The PostgreSQL engine: several stateless registry replicas sharing one database.

Connections
    Each instance keeps a small thread-safe pool (:class:`_Pool`, at most ``pool_size``
    connections, opened on demand, autocommit with explicit transactions). A pooled connection
    is checked before reuse without a round trip: an idle connection whose socket is readable
    was closed by the server (restart, ``pg_terminate_backend``) and is dropped. Failures to
    reach the server raise :class:`StorageUnavailable`; once the server is back the next call
    works again.

Change feed: gap-free and in commit order across replicas
    ``changes.seq`` must appear to readers in commit order with no gap that is filled later:
    a reader that has seen seq N+1 must never afterwards find a new N. Plain sequences break
    this (transaction A takes 5, B takes 6, B commits first: a reader sees 6 and later 5).
    So every transaction that appends changes does all its other work first, then takes
    ``pg_advisory_xact_lock(CHANGE_LOCK)`` right before inserting its change rows, advances
    the one-row ``change_counter`` and inserts, and commits. The lock is held until the commit
    has become visible (PostgreSQL releases transaction locks after the commit record is
    flushed and the transaction left the proc array), so the next appender reads the counter
    only after the previous one's rows are visible: seqs are assigned and made visible in one
    order, with no gaps at all (the counter, unlike ``max(seq)``, survives pruning). The cost
    is that change-appending commits serialize (one WAL flush each, ~0.1-1 ms on an SSD); the
    lock is held only for the tail (two round trips in a pipeline and the commit), and
    ingest batches many values per transaction. Nothing that waits for another row lock runs
    while the lock is held, so it cannot deadlock.

Notifications
    The appending transaction also runs ``pg_notify('registry_changes', <instance token>)``,
    which PostgreSQL delivers only if and after it commits. After its own commit an instance
    calls its listeners directly; a LISTEN thread per instance (its own connection, started
    with the first listener) calls them for notifications of other instances, and once after
    every (re)connection in case some were missed.

History partitions
    ``history`` is range-partitioned on ``ts_ms`` by calendar month (UTC), one partition
    ``history_pYYYYMM`` each. ``migrate`` creates the current and the next two months;
    ``ingest`` creates any month it meets that is missing (in a short transaction of its own
    under an advisory lock, before the ingest transaction, so two replicas never race).
    Retention is :meth:`PostgresStorage.prune_history`: whole partitions are dropped, which is
    instant and leaves no bloat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb

from cloud_registry.storage import migrations_postgres
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
    ReportedValue,
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
    event_from_row,
    event_payload,
    model_from_row,
    numeric_value,
    property_payload,
)
from cloud_registry.storage.security_store import SecurityStore, SqlTx

__all__ = ["CHANGE_LOCK", "NOTIFY_CHANNEL", "PARTITION_LOCK", "PostgresStorage"]

log = logging.getLogger(__name__)

R = TypeVar("R")

#: Advisory lock keys (``pg_advisory_xact_lock``).
CHANGE_LOCK = 0x5245_4749_0002
PARTITION_LOCK = 0x5245_4749_0003
NOTIFY_CHANNEL = "registry_changes"

_DEVICE_COLUMNS = (
    "id, model, edge_id, site, building, labels, latitude, longitude, floor, room, online, "
    "revision, created_ms, updated_ms, last_seen_ms"
)
_EVENT_COLUMNS = (
    "id, device_id, name, level, ts_ms, params, acknowledged, acknowledged_by, "
    "acknowledged_ms, comment"
)
_COMMAND_COLUMNS = (
    "id, device_id, edge_id, kind, service, params, status, created_ms, expires_ms, "
    "updated_ms, result, error, sequence"
)
_MODEL_COLUMNS = (
    "name, version, document, published_ms, title, vendor, description, property_count, "
    "event_count, service_count"
)
_DEVICE_FIELDS = frozenset({"model", "edge_id", "site", "building", "labels", "location"})
_NO_UPPER = 2**62  # history: to_ms <= 0 means no upper bound
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)


# --------------------------------------------------------------------------- helpers


def _month(ts_ms: int) -> int:
    """The month index ``year * 12 + month - 1`` (UTC) of ``ts_ms``."""
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.year * 12 + moment.month - 1


def _month_start_ms(month: int) -> int:
    year, index = divmod(month, 12)
    return int(datetime(year, index + 1, 1, tzinfo=UTC).timestamp()) * 1000


def _partition_name(month: int) -> str:
    year, index = divmod(month, 12)
    return f"history_p{year:04d}{index + 1:02d}"


def _valid_ts(ts_ms: int) -> bool:
    try:
        year = datetime.fromtimestamp(ts_ms / 1000, UTC).year
    except (OverflowError, OSError, ValueError):
        return False
    return 1 <= year < 9999


@dataclass(slots=True)
class _Change:
    kind: ChangeKind
    ts_ms: int
    device_id: str = ""
    site: str = ""
    model: str = ""
    edge_id: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Tx:
    conn: psycopg.Connection[Any]
    cur: psycopg.Cursor[Any]
    changes: list[_Change] = field(default_factory=list)


class _PgSecurityTx:
    """:class:`~cloud_registry.storage.security_store.SqlTx` over a write transaction."""

    __slots__ = ("_tx",)

    def __init__(self, tx: _Tx) -> None:
        self._tx = tx

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self._tx.cur
        cur.execute(sql.replace("?", "%s"), tuple(params))
        return list(cur.fetchall()) if cur.description is not None else []

    def change(
        self, kind: ChangeKind, ts_ms: int, edge_id: str, payload: Mapping[str, Any]
    ) -> None:
        self._tx.changes.append(_Change(kind, ts_ms, edge_id=edge_id, payload=payload))


class _PgSecurityRunner:
    """:class:`~cloud_registry.storage.security_store.SqlRunner` of a :class:`PostgresStorage`."""

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        text = sql.replace("?", "%s")

        def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            return list(conn.execute(text, tuple(params)).fetchall())

        return self._storage._read(work)

    def write(self, work: Callable[[SqlTx], R]) -> R:
        return self._storage._write(lambda tx: work(_PgSecurityTx(tx)))


# --------------------------------------------------------------------------- the pool


class _Pool:
    """At most ``size`` connections, opened on demand and reused; thread-safe."""

    def __init__(self, conninfo: str, size: int, connect_timeout: int) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    def connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._conninfo, autocommit=True, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as exc:
            raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc

    @staticmethod
    def _usable(conn: psycopg.Connection[Any]) -> bool:
        if conn.closed or conn.broken:
            return False
        # An idle connection has nothing to read unless the server closed it (restart,
        # terminate): then the socket is readable (a FATAL message or EOF).
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise StorageUnavailable("the storage is closed")
        if not self._slots.acquire(timeout=30):
            raise StorageUnavailable("no database connection free within 30 s")
        conn: psycopg.Connection[Any] | None = None
        try:
            while conn is None:
                with self._lock:
                    candidate = self._idle.pop() if self._idle else None
                if candidate is None:
                    conn = self.connect()
                elif self._usable(candidate):
                    conn = candidate
                else:
                    candidate.close()
            yield conn
        finally:
            if conn is not None:
                self._give_back(conn)
            self._slots.release()

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        healthy = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._lock:
            if healthy and not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


# --------------------------------------------------------------------------- the engine


class PostgresStorage:
    """:class:`~cloud_registry.storage.base.Storage` on PostgreSQL (see the module docstring).

    ``dsn`` is a libpq connection string or URI; ``replica_id`` names this replica (logs);
    ``pool_size`` bounds the connections this instance opens (plus one for LISTEN)."""

    def __init__(
        self,
        dsn: str,
        *,
        replica_id: str = "",
        pool_size: int = 8,
        connect_timeout: int = 5,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._dsn = dsn
        self.replica_id = replica_id or uuid.uuid4().hex[:12]
        self._token = uuid.uuid4().hex
        self._pool = _Pool(dsn, pool_size, connect_timeout)
        self._connect_timeout = connect_timeout
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()
        self._stop = threading.Event()
        self._listen_thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while the LISTEN connection is up
        self._security = SecurityStore(_PgSecurityRunner(self))
        self._months: set[int] = set()
        self._months_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing

    @property
    def security(self) -> SecurityStore:
        return self._security

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except psycopg.OperationalError as exc:
            raise StorageUnavailable(f"PostgreSQL unavailable: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageError(f"PostgreSQL error: {exc}") from exc

    def _read(self, work: Callable[[psycopg.Connection[Any]], R]) -> R:
        with self._errors(), self._pool.connection() as conn:
            return work(conn)

    def _write(self, work: Callable[[_Tx], R], *, attempts: int = 4) -> R:
        """Run ``work`` in a transaction; append its changes at the end (under the change
        lock), commit, then call the local listeners. Deadlocks and serialization failures
        are retried."""
        for attempt in range(attempts):
            try:
                with self._errors(), self._pool.connection() as conn:
                    with conn.transaction(), conn.cursor() as cur:
                        tx = _Tx(conn, cur)
                        result = work(tx)
                        if tx.changes:
                            self._append_changes(tx)
                    if tx.changes:
                        self._fire_listeners()
                    return result
            except StorageError as exc:
                cause = exc.__cause__
                if isinstance(cause, _RETRYABLE) and attempt + 1 < attempts:
                    time.sleep(0.005 * (attempt + 1))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _append_changes(self, tx: _Tx) -> None:
        changes = tx.changes
        n = len(changes)
        with tx.conn.pipeline():
            # Taken last, held to the commit: see the module docstring.
            tx.cur.execute("SELECT pg_advisory_xact_lock(%s)", (CHANGE_LOCK,))
            tx.cur.execute(
                """WITH c AS (
                       UPDATE change_counter SET last_seq = last_seq + %(n)s RETURNING last_seq
                   )
                   INSERT INTO changes (seq, kind, ts_ms, device_id, site, model, edge_id,
                                        payload)
                   SELECT c.last_seq - %(n)s + u.ord, u.kind, u.ts_ms, u.device_id, u.site,
                          u.model, u.edge_id, u.payload
                   FROM c, unnest(%(kind)s::text[], %(ts)s::bigint[], %(dev)s::text[],
                                  %(site)s::text[], %(model)s::text[], %(edge)s::text[],
                                  %(payload)s::text[])
                        WITH ORDINALITY
                        AS u(kind, ts_ms, device_id, site, model, edge_id, payload, ord)""",
                {
                    "n": n,
                    "kind": [str(c.kind) for c in changes],
                    "ts": [c.ts_ms for c in changes],
                    "dev": [c.device_id for c in changes],
                    "site": [c.site for c in changes],
                    "model": [c.model for c in changes],
                    "edge": [c.edge_id for c in changes],
                    "payload": [dump_json(c.payload) for c in changes],
                },
            )
            tx.cur.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self._token))

    def _fire_listeners(self) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("change listener failed")

    # ------------------------------------------------------------------ lifecycle

    def migrate(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            return migrations_postgres.migrate(conn)

        version = self._read(work)
        now = _month(int(time.time() * 1000))
        self.ensure_history_partitions(range(now, now + 3))
        return version

    def schema_version(self) -> int:
        return self._read(migrations_postgres.current_version)

    def close(self) -> None:
        self._stop.set()
        thread = self._listen_thread
        if thread is not None:
            thread.join(timeout=5)
        self._pool.close()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)
            if self._listen_thread is None and not self._stop.is_set():
                self._listen_thread = threading.Thread(
                    target=self._listen_loop, name=f"pg-listen-{self.replica_id}", daemon=True
                )
                self._listen_thread.start()

    def _listen_loop(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=self._connect_timeout
                )
            except psycopg.Error:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            try:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                backoff = 0.05
                self._fire_listeners()  # whatever was committed while we were not listening
                self.listening.set()
                while not self._stop.is_set():
                    foreign = False
                    for notify in conn.notifies(timeout=0.25, stop_after=64):
                        if notify.payload != self._token:
                            foreign = True
                    if foreign:
                        self._fire_listeners()
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
            finally:
                self.listening.clear()
                conn.close()

    # ------------------------------------------------------------------ history partitions

    def _known_months(self, conn: psycopg.Connection[Any]) -> set[int]:
        rows = conn.execute(
            """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'history'::regclass"""
        ).fetchall()
        months = set()
        for (name,) in rows:
            if name.startswith("history_p") and len(name) == 15 and name[9:].isdigit():
                months.add(int(name[9:13]) * 12 + int(name[13:15]) - 1)
        return months

    def history_partitions(self) -> list[str]:
        """The names of the history partitions, oldest first."""
        return [_partition_name(m) for m in sorted(self._read(self._known_months))]

    def ensure_history_partitions(self, months: Iterable[int]) -> None:
        """Create the monthly history partitions (month index ``year * 12 + month - 1``) that
        are missing. Safe to call from several replicas at once."""
        wanted = set(months)
        with self._months_lock:
            missing = wanted - self._months
        if not missing:
            return

        def work(conn: psycopg.Connection[Any]) -> set[int]:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                existing = self._known_months(conn)
                for month in sorted(missing - existing):
                    conn.execute(
                        f"CREATE TABLE {_partition_name(month)} PARTITION OF history "
                        f"FOR VALUES FROM ({_month_start_ms(month)}) "
                        f"TO ({_month_start_ms(month + 1)})"
                    )
                return existing | missing

        known = self._read(work)
        with self._months_lock:
            self._months |= known

    def prune_history(self, before_ms: int) -> int:
        """Drop the history partitions that hold only points older than ``before_ms``
        (retention); return how many were dropped."""

        def work(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (PARTITION_LOCK,))
                doomed = [
                    m for m in self._known_months(conn) if _month_start_ms(m + 1) <= before_ms
                ]
                for month in doomed:
                    conn.execute(f"DROP TABLE {_partition_name(month)}")
                return len(doomed)

        with self._months_lock:
            self._months.clear()
        return self._read(work)

    # ------------------------------------------------------------------ models

    def put_model(self, entry: ModelEntry) -> tuple[ModelEntry, bool]:
        document = dump_json(entry.document)
        key = canonical_json(entry.document)

        def work(tx: _Tx) -> tuple[ModelEntry, bool]:
            tx.cur.execute(
                """INSERT INTO models (name, version, version_key, document, document_key,
                       published_ms, title, vendor, description, property_count, event_count,
                       service_count)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (name, version) DO NOTHING RETURNING 1""",
                (
                    entry.name,
                    entry.version,
                    version_sort_key(entry.version),
                    document,
                    key,
                    entry.published_ms,
                    entry.title,
                    entry.vendor,
                    entry.description,
                    entry.property_count,
                    entry.event_count,
                    entry.service_count,
                ),
            )
            if tx.cur.fetchone() is None:
                tx.cur.execute(
                    f"SELECT {_MODEL_COLUMNS}, document_key FROM models "
                    "WHERE name = %s AND version = %s",
                    (entry.name, entry.version),
                )
                row = tx.cur.fetchone()
                assert row is not None
                if row[-1] != key:
                    raise AlreadyExists(
                        f"model {entry.name}@{entry.version} exists with another document"
                    )
                return model_from_row(row), True
            tx.changes.append(
                _Change(
                    ChangeKind.MODEL_PUBLISHED,
                    entry.published_ms,
                    model=f"{entry.name}@{entry.version}",
                    payload={
                        "name": entry.name,
                        "version": entry.version,
                        "title": entry.title,
                        "vendor": entry.vendor,
                    },
                )
            )
            return entry, False

        return self._write(work)

    def get_model(self, name: str, version: str = "") -> ModelEntry:
        def work(conn: psycopg.Connection[Any]) -> ModelEntry:
            if version:
                row = conn.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = %s AND version = %s",
                    (name, version),
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = %s "
                    "ORDER BY version_key DESC LIMIT 1",
                    (name,),
                ).fetchone()
            if row is None:
                ref = f"{name}@{version}" if version else name
                raise NotFound(f"model {ref} not found")
            return model_from_row(row)

        return self._read(work)

    def list_models(self, name_prefix: str, cursor: str, limit: int) -> Page[ModelEntry]:
        after = decode_cursor(cursor, MODELS, (str,))
        limit = max(1, limit)

        def work(conn: psycopg.Connection[Any]) -> Page[ModelEntry]:
            rows = conn.execute(
                f"""SELECT DISTINCT ON (name) {_MODEL_COLUMNS} FROM models
                    WHERE starts_with(name, %s) AND name > %s
                    ORDER BY name, version_key DESC LIMIT %s""",
                (name_prefix, after[0] if after else "", limit + 1),
            ).fetchall()
            items = tuple(model_from_row(r) for r in rows[:limit])
            more = len(rows) > limit
            return Page(items, encode_cursor(MODELS, [items[-1].name]) if more else "")

        return self._read(work)

    def list_model_versions(self, name: str) -> list[ModelEntry]:
        def work(conn: psycopg.Connection[Any]) -> list[ModelEntry]:
            rows = conn.execute(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = %s ORDER BY version_key DESC",
                (name,),
            ).fetchall()
            return [model_from_row(r) for r in rows]

        return self._read(work)

    # ------------------------------------------------------------------ devices

    def create_device(self, device: DeviceRecord, now_ms: int) -> DeviceRecord:
        stored = DeviceRecord(
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
            tx.cur.execute(
                f"""INSERT INTO devices ({_DEVICE_COLUMNS})
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (id) DO NOTHING RETURNING 1""",
                self._device_params(stored),
            )
            if tx.cur.fetchone() is None:
                raise AlreadyExists(f"device {device.id} exists already")
            tx.changes.append(self._device_change(ChangeKind.DEVICE_CREATED, stored, now_ms))
            return stored

        return self._write(work)

    @staticmethod
    def _device_params(d: DeviceRecord) -> tuple[Any, ...]:
        return (
            d.id,
            d.model,
            d.edge_id,
            d.site,
            d.building,
            Jsonb(dict(d.labels)),
            d.location.latitude,
            d.location.longitude,
            d.location.floor,
            d.location.room,
            d.online,
            d.revision,
            d.created_ms,
            d.updated_ms,
            d.last_seen_ms,
        )

    @staticmethod
    def _device_change(kind: ChangeKind, d: DeviceRecord, now_ms: int) -> _Change:
        return _Change(kind, now_ms, d.id, d.site, d.model, d.edge_id, device_payload(d))

    def get_device(self, device_id: str) -> DeviceRecord:
        def work(conn: psycopg.Connection[Any]) -> DeviceRecord:
            row = conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = %s", (device_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"device {device_id} not found")
            return device_from_row(row)

        return self._read(work)

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, DeviceRecord]:
        ids = list(dict.fromkeys(device_ids))
        if not ids:
            return {}

        def work(conn: psycopg.Connection[Any]) -> dict[str, DeviceRecord]:
            rows = conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ANY(%s)", (ids,)
            ).fetchall()
            return {r[0]: device_from_row(r) for r in rows}

        return self._read(work)

    @staticmethod
    def _label_clause(req: LabelRequirement, params: list[Any], *, indexed: bool) -> str:
        """SQL for one label requirement. ``indexed``: forms the GIN index serves (``@>``,
        ``?``); otherwise forms it cannot, so that a selective site/edge/building B-tree
        drives the scan in id order and labels only filter (measured at 1M devices: 8 ms
        p50 with a BitmapAnd of GIN and site for a label matching 1/30 of all devices,
        against well under a millisecond through the site index)."""
        if not indexed:
            params.append(req.key)
            if req.op in ("exists", "!exists"):
                null = "IS NOT NULL" if req.op == "exists" else "IS NULL"
                return f"(labels ->> %s) {null}"
            if req.op in ("=", "!="):
                params.append(req.values[0])
                test = "(labels ->> %s) = %s"
            else:
                params.append(list(req.values))
                test = "(labels ->> %s) = ANY(%s::text[])"
            return test if req.op in ("=", "in") else f"NOT coalesce({test}, false)"
        if req.op == "=":
            params.append(Jsonb({req.key: req.values[0]}))
            return "labels @> %s"
        if req.op == "!=":
            params.append(Jsonb({req.key: req.values[0]}))
            return "NOT labels @> %s"
        if req.op == "exists":
            params.append(req.key)
            return "labels ? %s"
        if req.op == "!exists":
            params.append(req.key)
            return "NOT labels ? %s"
        # in / notin: an OR of containments, which the GIN index serves as a bitmap OR
        terms = []
        for value in req.values:
            params.append(Jsonb({req.key: value}))
            terms.append("labels @> %s")
        any_of = "(" + " OR ".join(terms) + ")"
        return any_of if req.op == "in" else f"NOT {any_of}"

    def list_devices(self, flt: DeviceFilter, cursor: str, limit: int) -> Page[DeviceRecord]:
        after = decode_cursor(cursor, DEVICES, (str,))
        validate_requirements(flt.labels)
        limit = max(1, limit)
        where: list[str] = []
        params: list[Any] = []
        if flt.model:
            if "@" in flt.model:
                where.append("model = %s")
            else:
                where.append("model_name = %s")
            params.append(flt.model)
        for column, value in (
            ("site", flt.site),
            ("edge_id", flt.edge_id),
            ("building", flt.building),
        ):
            if value:
                where.append(f"{column} = %s")
                params.append(value)
        # a site, edge or building narrows to a few thousand devices at most: let its index
        # drive; otherwise the GIN index on labels may
        driven = bool(flt.site or flt.edge_id or flt.building)
        for req in flt.labels:
            where.append(self._label_clause(req, params, indexed=not driven))
        if flt.online is not None:
            where.append("online = %s")
            params.append(flt.online)
        if flt.sites is not None:
            where.append("site = ANY(%s::text[])")
            params.append(list(flt.sites))
        if after is not None:
            where.append("id > %s")
            params.append(after[0])
        sql = f"SELECT {_DEVICE_COLUMNS} FROM devices"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id LIMIT %s"
        params.append(limit + 1)

        def work(conn: psycopg.Connection[Any]) -> Page[DeviceRecord]:
            rows = conn.execute(sql, params).fetchall()
            items = tuple(device_from_row(r) for r in rows[:limit])
            more = len(rows) > limit
            return Page(items, encode_cursor(DEVICES, [items[-1].id]) if more else "")

        return self._read(work)

    def _locked_device(self, tx: _Tx, device_id: str, expected_revision: int) -> DeviceRecord:
        tx.cur.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = %s FOR UPDATE", (device_id,)
        )
        row = tx.cur.fetchone()
        if row is None:
            raise NotFound(f"device {device_id} not found")
        current = device_from_row(row)
        if expected_revision and expected_revision != current.revision:
            raise StaleRevision(
                f"device {device_id} is at revision {current.revision}, not {expected_revision}",
                current.revision,
            )
        return current

    def update_device(
        self, device_id: str, changes: Mapping[str, Any], expected_revision: int, now_ms: int
    ) -> DeviceRecord:
        unknown = set(changes) - _DEVICE_FIELDS
        if unknown:
            raise ValueError(f"fields that cannot be updated: {', '.join(sorted(unknown))}")

        def work(tx: _Tx) -> DeviceRecord:
            current = self._locked_device(tx, device_id, expected_revision)
            values: dict[str, Any] = {
                "model": current.model,
                "edge_id": current.edge_id,
                "site": current.site,
                "building": current.building,
                "labels": dict(current.labels),
                "location": current.location,
            }
            for name, value in changes.items():
                if name == "labels":
                    value = dict(value)
                elif name == "location" and isinstance(value, Mapping):
                    value = Location(**value)
                values[name] = value
            updated = DeviceRecord(
                id=current.id,
                online=current.online,
                revision=current.revision + 1,
                created_ms=current.created_ms,
                updated_ms=now_ms,
                last_seen_ms=current.last_seen_ms,
                **values,
            )
            loc = updated.location
            tx.cur.execute(
                """UPDATE devices SET model = %s, edge_id = %s, site = %s, building = %s,
                       labels = %s, latitude = %s, longitude = %s, floor = %s, room = %s,
                       revision = %s, updated_ms = %s
                   WHERE id = %s""",
                (
                    updated.model,
                    updated.edge_id,
                    updated.site,
                    updated.building,
                    Jsonb(dict(updated.labels)),
                    loc.latitude,
                    loc.longitude,
                    loc.floor,
                    loc.room,
                    updated.revision,
                    now_ms,
                    device_id,
                ),
            )
            if updated.site != current.site:
                tx.cur.execute(
                    "UPDATE events SET site = %s WHERE device_id = %s", (updated.site, device_id)
                )
            tx.changes.append(self._device_change(ChangeKind.DEVICE_UPDATED, updated, now_ms))
            return updated

        return self._write(work)

    def delete_device(self, device_id: str, expected_revision: int, now_ms: int) -> None:
        def work(tx: _Tx) -> None:
            current = self._locked_device(tx, device_id, expected_revision)
            for table in ("twin_reported", "twin_desired", "history", "events"):
                tx.cur.execute(f"DELETE FROM {table} WHERE device_id = %s", (device_id,))
            tx.cur.execute("DELETE FROM devices WHERE id = %s", (device_id,))
            tx.changes.append(self._device_change(ChangeKind.DEVICE_DELETED, current, now_ms))

        self._write(work)

    def set_devices_online(self, edge_id: str, states: Mapping[str, bool], now_ms: int) -> None:
        if not states:
            return
        ids = sorted(states)

        def work(tx: _Tx) -> None:
            # Online state is not an edit: revision and updated_ms stay; going online is
            # being seen.
            tx.cur.execute(
                f"""UPDATE devices AS d SET online = u.online,
                        last_seen_ms = CASE WHEN u.online THEN greatest(d.last_seen_ms, %s)
                                            ELSE d.last_seen_ms END
                    FROM unnest(%s::text[], %s::boolean[]) AS u(id, online)
                    WHERE d.id = u.id AND d.edge_id = %s AND d.online IS DISTINCT FROM u.online
                    RETURNING {", ".join("d." + c.strip() for c in _DEVICE_COLUMNS.split(","))}""",
                (now_ms, ids, [bool(states[i]) for i in ids], edge_id),
            )
            for row in sorted(tx.cur.fetchall()):
                device = device_from_row(row)
                tx.changes.append(self._device_change(ChangeKind.DEVICE_UPDATED, device, now_ms))

        self._write(work)

    def import_devices(self, devices: Sequence[DeviceRecord], now_ms: int) -> int:
        """Bulk-load devices with COPY (initial import from another system): revision 1,
        created/updated ``now_ms``, no change entries. AlreadyExists on any duplicate id."""

        def work(tx: _Tx) -> int:
            with tx.cur.copy(f"COPY devices ({_DEVICE_COLUMNS}) FROM STDIN") as copy:
                for d in devices:
                    loc = d.location
                    copy.write_row(
                        (
                            d.id,
                            d.model,
                            d.edge_id,
                            d.site,
                            d.building,
                            dump_json(dict(d.labels)),
                            loc.latitude,
                            loc.longitude,
                            loc.floor,
                            loc.room,
                            d.online,
                            1,
                            now_ms,
                            now_ms,
                            d.last_seen_ms,
                        )
                    )
            return len(devices)

        try:
            return self._write(work)
        except StorageError as exc:
            if isinstance(exc.__cause__, pg_errors.UniqueViolation):
                raise AlreadyExists(f"a device exists already: {exc.__cause__}") from exc
            raise

    # ------------------------------------------------------------------ twins

    def get_twin(self, device_id: str) -> TwinRecord:
        return self._read(lambda conn: self._twin(conn, device_id))

    @staticmethod
    def _twin(conn: psycopg.Connection[Any], device_id: str) -> TwinRecord:
        # One statement, one snapshot: the device, its reported and desired values.
        rows = conn.execute(
            """SELECT 'x', model, NULL, twin_revision, NULL FROM devices WHERE id = %(id)s
               UNION ALL
               SELECT 'r', property, value, ts_ms, quality FROM twin_reported
               WHERE device_id = %(id)s
               UNION ALL
               SELECT 'd', property, value, ts_ms, quality FROM twin_desired
               WHERE device_id = %(id)s
               ORDER BY 1, 2""",
            {"id": device_id},
        ).fetchall()
        head = [r for r in rows if r[0] == "x"]
        if not head:
            raise NotFound(f"device {device_id} not found")
        reported = {r[1]: PropertyValue(json.loads(r[2]), r[3], r[4]) for r in rows if r[0] == "r"}
        desired = {r[1]: PropertyValue(json.loads(r[2]), r[3], r[4]) for r in rows if r[0] == "d"}
        return TwinRecord(device_id, head[0][1], reported, desired, head[0][3])

    def set_desired(
        self,
        device_id: str,
        values: Mapping[str, Any],
        expected_revision: int,
        now_ms: int,
    ) -> TwinRecord:
        def work(tx: _Tx) -> TwinRecord:
            tx.cur.execute(
                "SELECT model, edge_id, site, twin_revision FROM devices WHERE id = %s "
                "FOR NO KEY UPDATE",
                (device_id,),
            )
            row = tx.cur.fetchone()
            if row is None:
                raise NotFound(f"device {device_id} not found")
            model, edge_id, site, revision = row
            if expected_revision and expected_revision != revision:
                raise StaleRevision(
                    f"twin {device_id} is at revision {revision}, not {expected_revision}",
                    revision,
                )
            names = list(values)
            cleared = [n for n in names if values[n] is None]
            kept = [n for n in names if values[n] is not None]
            if cleared:
                tx.cur.execute(
                    "DELETE FROM twin_desired WHERE device_id = %s AND property = ANY(%s)",
                    (device_id, cleared),
                )
            if kept:
                tx.cur.execute(
                    """INSERT INTO twin_desired (device_id, property, value, ts_ms, quality)
                       SELECT %s, p, v, %s, 'good' FROM unnest(%s::text[], %s::text[]) AS u(p, v)
                       ON CONFLICT (device_id, property) DO UPDATE
                       SET value = excluded.value, ts_ms = excluded.ts_ms,
                           quality = excluded.quality""",
                    (device_id, now_ms, kept, [dump_json(values[n]) for n in kept]),
                )
            tx.cur.execute(
                "UPDATE devices SET twin_revision = twin_revision + 1 WHERE id = %s",
                (device_id,),
            )
            twin = self._twin(tx.conn, device_id)
            properties = {
                n: {"value": values[n], "ts_ms": now_ms, "quality": "good"} for n in names
            }
            tx.changes.append(
                _Change(
                    ChangeKind.TWIN_DESIRED,
                    now_ms,
                    device_id,
                    site,
                    model,
                    edge_id,
                    {"properties": properties, "revision": revision + 1},
                )
            )
            return twin

        return self._write(work)

    # ------------------------------------------------------------------ history and events

    @staticmethod
    def _require_device(conn: psycopg.Connection[Any], device_id: str) -> None:
        if conn.execute("SELECT 1 FROM devices WHERE id = %s", (device_id,)).fetchone() is None:
            raise NotFound(f"device {device_id} not found")

    def history(
        self, device_id: str, prop: str, from_ms: int, to_ms: int, limit: int
    ) -> tuple[list[HistoryPoint], bool]:
        limit = max(1, limit)
        upper = to_ms if to_ms > 0 else _NO_UPPER

        def work(conn: psycopg.Connection[Any]) -> tuple[list[HistoryPoint], bool]:
            # equal timestamps come in insertion order: B-tree entries tie-break on the TID
            rows = conn.execute(
                """SELECT ts_ms, value, quality FROM history
                   WHERE device_id = %s AND property = %s AND ts_ms >= %s AND ts_ms < %s
                   ORDER BY ts_ms LIMIT %s""",
                (device_id, prop, from_ms, upper, limit + 1),
            ).fetchall()
            if not rows:
                self._require_device(conn, device_id)
            points = [HistoryPoint(r[0], json.loads(r[1]), r[2]) for r in rows[:limit]]
            return points, len(rows) > limit

        return self._read(work)

    def history_buckets(
        self, device_id: str, prop: str, from_ms: int, to_ms: int, bucket_ms: int
    ) -> list[HistoryBucket]:
        if bucket_ms <= 0:
            raise ValueError("bucket_ms must be positive")
        upper = to_ms if to_ms > 0 else _NO_UPPER

        def work(conn: psycopg.Connection[Any]) -> list[HistoryBucket]:
            rows = conn.execute(
                """SELECT ts_ms - ((ts_ms %% %(b)s) + %(b)s) %% %(b)s AS start,
                          min(num), max(num), avg(num), count(num)
                   FROM history
                   WHERE device_id = %(d)s AND property = %(p)s AND ts_ms >= %(f)s
                         AND ts_ms < %(t)s AND num IS NOT NULL
                   GROUP BY start ORDER BY start""",
                {"b": bucket_ms, "d": device_id, "p": prop, "f": from_ms, "t": upper},
            ).fetchall()
            if not rows:
                self._require_device(conn, device_id)
            return [
                HistoryBucket(int(r[0]), float(r[1]), float(r[2]), float(r[3]), int(r[4]))
                for r in rows
            ]

        return self._read(work)

    def list_events(self, flt: EventFilter, cursor: str, limit: int) -> Page[EventEntry]:
        after = decode_cursor(cursor, EVENTS, (int, str))
        limit = max(1, limit)
        where: list[str] = []
        params: list[Any] = []
        if flt.device_id:
            where.append("device_id = %s")
            params.append(flt.device_id)
        if flt.site:
            where.append("site = %s")
            params.append(flt.site)
        if flt.levels:
            where.append("level = ANY(%s::text[])")
            params.append(list(flt.levels))
        if flt.from_ms:
            where.append("ts_ms >= %s")
            params.append(flt.from_ms)
        if flt.to_ms:
            where.append("ts_ms < %s")
            params.append(flt.to_ms)
        if flt.unacknowledged_only:
            where.append("NOT acknowledged")
        if flt.sites is not None:
            where.append("site = ANY(%s::text[])")
            params.append(list(flt.sites))
        if after is not None:
            where.append("(ts_ms, id) < (%s, %s)")
            params.extend(after)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts_ms DESC, id DESC LIMIT %s"
        params.append(limit + 1)

        def work(conn: psycopg.Connection[Any]) -> Page[EventEntry]:
            rows = conn.execute(sql, params).fetchall()
            items = tuple(event_from_row(r) for r in rows[:limit])
            more = len(rows) > limit
            last = items[-1] if items else None
            token = encode_cursor(EVENTS, [last.ts_ms, last.id]) if more and last else ""
            return Page(items, token)

        return self._read(work)

    def acknowledge_event(self, event_id: str, by: str, comment: str, now_ms: int) -> EventEntry:
        def work(tx: _Tx) -> EventEntry:
            tx.cur.execute(
                f"SELECT {_EVENT_COLUMNS}, site FROM events WHERE id = %s FOR UPDATE", (event_id,)
            )
            row = tx.cur.fetchone()
            if row is None:
                raise NotFound(f"event {event_id} not found")
            event = event_from_row(row)
            if event.acknowledged:
                return event
            tx.cur.execute(
                """UPDATE events SET acknowledged = true, acknowledged_by = %s,
                       acknowledged_ms = %s, comment = %s WHERE id = %s""",
                (by, now_ms, comment, event_id),
            )
            acked = EventEntry(
                event.id,
                event.device_id,
                event.name,
                event.level,
                event.ts_ms,
                event.params,
                True,
                by,
                now_ms,
                comment,
            )
            _site, model, edge = self._device_context(tx, event.device_id)
            site = row[10]
            tx.changes.append(
                _Change(
                    ChangeKind.ALARM_ACKNOWLEDGED,
                    now_ms,
                    event.device_id,
                    site,
                    model,
                    edge,
                    event_payload(acked),
                )
            )
            return acked

        return self._write(work)

    @staticmethod
    def _device_context(tx: _Tx, device_id: str) -> tuple[str, str, str]:
        tx.cur.execute("SELECT site, model, edge_id FROM devices WHERE id = %s", (device_id,))
        row = tx.cur.fetchone()
        return (row[0], row[1], row[2]) if row else ("", "", "")

    # ------------------------------------------------------------------ ingest

    def ingest(self, batch: IngestBatch, now_ms: int) -> IngestResult:
        months = {_month(v.ts_ms) for v in batch.values if _valid_ts(v.ts_ms)}
        self.ensure_history_partitions(months)
        try:
            return self._write(lambda tx: self._ingest(tx, batch, now_ms))
        except StorageError as exc:
            if not isinstance(exc.__cause__, pg_errors.CheckViolation):
                raise
            # Another replica dropped a partition this instance believed in: look again.
            with self._months_lock:
                self._months.clear()
            self.ensure_history_partitions(months)
            return self._write(lambda tx: self._ingest(tx, batch, now_ms))

    def _ingest(self, tx: _Tx, batch: IngestBatch, now_ms: int) -> IngestResult:
        cur = tx.cur
        # The edge's row serializes its batches (two replicas may hold streams of one edge
        # for a moment); the (edge, sequence) pair marks the batch stored.
        cur.execute(
            """INSERT INTO edge_batches AS b (edge_id, last_sequence, floor, updated_ms)
               VALUES (%s, 0, 0, %s)
               ON CONFLICT (edge_id) DO UPDATE SET updated_ms = excluded.updated_ms
               RETURNING last_sequence, floor""",
            (batch.edge_id, now_ms),
        )
        row = cur.fetchone()
        assert row is not None
        last, floor = row
        if batch.sequence <= floor:
            return IngestResult(duplicate=True)
        cur.execute(
            """INSERT INTO ingest_batches (edge_id, sequence, stored_ms) VALUES (%s, %s, %s)
               ON CONFLICT DO NOTHING RETURNING 1""",
            (batch.edge_id, batch.sequence, now_ms),
        )
        if cur.fetchone() is None:
            return IngestResult(duplicate=True)
        if batch.sequence > last:
            cur.execute(
                "UPDATE edge_batches SET last_sequence = %s WHERE edge_id = %s",
                (batch.sequence, batch.edge_id),
            )

        ids = sorted({v.device_id for v in batch.values} | {e.device_id for e in batch.events})
        known: dict[str, tuple[str, str, str]] = {}
        if ids:
            # Locks the rows in id order (no deadlock with other ingests) and keeps a
            # concurrent delete_device from leaving orphans.
            cur.execute(
                """SELECT id, model, edge_id, site FROM devices WHERE id = ANY(%s)
                   ORDER BY id FOR NO KEY UPDATE""",
                (ids,),
            )
            known = {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}
        rejected: list[str] = []
        for device_id in dict.fromkeys(
            [v.device_id for v in batch.values] + [e.device_id for e in batch.events]
        ):
            if device_id not in known:
                rejected.append(f"{device_id}: unknown device")

        values: list[ReportedValue] = []
        for v in batch.values:
            if v.device_id not in known:
                continue
            if not _valid_ts(v.ts_ms):
                rejected.append(f"{v.device_id}: {v.property}: timestamp {v.ts_ms} out of range")
                continue
            values.append(v)
        if values:
            with cur.copy(
                "COPY history (device_id, property, ts_ms, value, num, quality) FROM STDIN"
            ) as copy:
                for v in values:
                    copy.write_row(
                        (
                            v.device_id,
                            v.property,
                            v.ts_ms,
                            dump_json(v.value),
                            numeric_value(v.value),
                            v.quality,
                        )
                    )

        # The newest value per (device, property) in the batch; later ones win ties.
        newest: dict[tuple[str, str], ReportedValue] = {}
        for v in values:
            key = (v.device_id, v.property)
            have = newest.get(key)
            if have is None or v.ts_ms >= have.ts_ms:
                newest[key] = v
        changed: dict[str, dict[str, Any]] = {}
        if newest:
            keys = sorted(newest)
            cur.execute(
                """INSERT INTO twin_reported AS t (device_id, property, value, ts_ms, quality)
                   SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[],
                                        %s::text[])
                   ON CONFLICT (device_id, property) DO UPDATE
                   SET value = excluded.value, ts_ms = excluded.ts_ms, quality = excluded.quality
                   WHERE excluded.ts_ms >= t.ts_ms
                   RETURNING device_id, property, value, ts_ms, quality""",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [dump_json(newest[k].value) for k in keys],
                    [newest[k].ts_ms for k in keys],
                    [newest[k].quality for k in keys],
                ),
            )
            for dev, prop, value, ts, quality in cur.fetchall():
                changed.setdefault(dev, {})[prop] = property_payload(value, ts, quality)

        stored_events: list[EventEntry] = []
        events = [e for e in batch.events if e.device_id in known]
        if events:
            unique: dict[str, EventEntry] = {}
            for e in events:
                event_id = e.id or uuid.uuid4().hex
                unique.setdefault(event_id, replace(e, id=event_id, params=dict(e.params)))
            events = list(unique.values())
            cur.execute(
                """INSERT INTO events (id, device_id, site, name, level, ts_ms, params,
                       acknowledged, acknowledged_by, acknowledged_ms, comment)
                   SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                        %s::text[], %s::bigint[], %s::text[], %s::boolean[],
                                        %s::text[], %s::bigint[], %s::text[])
                   ON CONFLICT (id) DO NOTHING RETURNING id""",
                (
                    [e.id for e in events],
                    [e.device_id for e in events],
                    [known[e.device_id][2] for e in events],
                    [e.name for e in events],
                    [e.level for e in events],
                    [e.ts_ms for e in events],
                    [dump_json(e.params) for e in events],
                    [e.acknowledged for e in events],
                    [e.acknowledged_by for e in events],
                    [e.acknowledged_ms for e in events],
                    [e.comment for e in events],
                ),
            )
            inserted = {r[0] for r in cur.fetchall()}
            stored_events = [e for e in events if e.id in inserted]

        seen = sorted({v.device_id for v in values} | {e.device_id for e in events})
        revisions: dict[str, int] = {}
        if seen:
            cur.execute(
                """UPDATE devices SET last_seen_ms = greatest(last_seen_ms, %s),
                       twin_revision = twin_revision + (id = ANY(%s::text[]))::int
                   WHERE id = ANY(%s::text[]) RETURNING id, twin_revision""",
                (now_ms, sorted(changed), seen),
            )
            revisions = {r[0]: r[1] for r in cur.fetchall()}

        order = list(dict.fromkeys(v.device_id for v in values))
        for device_id in order:
            properties = changed.get(device_id)
            if not properties:
                continue
            model, edge, site = known[device_id]
            tx.changes.append(
                _Change(
                    ChangeKind.TWIN_REPORTED,
                    now_ms,
                    device_id,
                    site,
                    model,
                    edge,
                    {"properties": properties, "revision": revisions[device_id]},
                )
            )
        for event in stored_events:
            model, edge, site = known[event.device_id]
            tx.changes.append(
                _Change(
                    ChangeKind.EVENT,
                    now_ms,
                    event.device_id,
                    site,
                    model,
                    edge,
                    event_payload(event),
                )
            )
        return IngestResult(
            duplicate=False,
            stored_values=len(values),
            stored_events=len(stored_events),
            rejected=tuple(rejected),
        )

    def last_sequence(self, edge_id: str) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                "SELECT greatest(last_sequence, floor) FROM edge_batches WHERE edge_id = %s",
                (edge_id,),
            ).fetchone()
            return int(row[0]) if row else 0

        return self._read(work)

    # ------------------------------------------------------------------ commands

    def create_command(self, command: CommandEntry) -> CommandEntry:
        def work(tx: _Tx) -> CommandEntry:
            tx.cur.execute(
                """INSERT INTO edge_command_seq AS s (edge_id, last_sequence) VALUES (%s, 1)
                   ON CONFLICT (edge_id) DO UPDATE SET last_sequence = s.last_sequence + 1
                   RETURNING last_sequence""",
                (command.edge_id,),
            )
            row = tx.cur.fetchone()
            assert row is not None
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
                sequence=int(row[0]),
            )
            tx.cur.execute(
                f"""INSERT INTO commands ({_COMMAND_COLUMNS})
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (id) DO NOTHING RETURNING 1""",
                self._command_params(stored),
            )
            if tx.cur.fetchone() is None:
                raise AlreadyExists(f"command {command.id} exists already")
            tx.changes.append(self._command_change(tx, stored, stored.created_ms))
            return stored

        return self._write(work)

    @staticmethod
    def _command_params(c: CommandEntry) -> tuple[Any, ...]:
        return (
            c.id,
            c.device_id,
            c.edge_id,
            c.kind,
            c.service,
            dump_json(dict(c.params)),
            str(c.status),
            c.created_ms,
            c.expires_ms,
            c.updated_ms,
            dump_json(dict(c.result)),
            c.error,
            c.sequence,
        )

    def _command_change(self, tx: _Tx, c: CommandEntry, now_ms: int) -> _Change:
        site, model, _edge = self._device_context(tx, c.device_id)
        return _Change(
            ChangeKind.COMMAND_UPDATED,
            now_ms,
            c.device_id,
            site,
            model,
            c.edge_id,
            command_payload(c),
        )

    def get_command(self, command_id: str) -> CommandEntry:
        def work(conn: psycopg.Connection[Any]) -> CommandEntry:
            row = conn.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE id = %s", (command_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"command {command_id} not found")
            return command_from_row(row)

        return self._read(work)

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
            tx.cur.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE id = %s FOR UPDATE",
                (command_id,),
            )
            row = tx.cur.fetchone()
            if row is None:
                raise NotFound(f"command {command_id} not found")
            current = command_from_row(row)
            if current.status.final:
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
                result=dict(result) if result is not None else current.result,
                error=error or current.error,
                sequence=current.sequence,
            )
            if (
                status == current.status
                and canonical_json(dict(updated.result)) == canonical_json(dict(current.result))
                and updated.error == current.error
            ):
                return current
            tx.cur.execute(
                """UPDATE commands SET status = %s, updated_ms = %s, result = %s, error = %s
                   WHERE id = %s""",
                (str(status), now_ms, dump_json(dict(updated.result)), updated.error, command_id),
            )
            tx.changes.append(self._command_change(tx, updated, now_ms))
            return updated

        return self._write(work)

    def pending_commands(self, edge_id: str, now_ms: int) -> list[CommandEntry]:
        def work(conn: psycopg.Connection[Any]) -> list[CommandEntry]:
            rows = conn.execute(
                f"""SELECT {_COMMAND_COLUMNS} FROM commands
                    WHERE edge_id = %s AND status = 'queued' AND (expires_ms = 0 OR expires_ms > %s)
                    ORDER BY sequence""",
                (edge_id, now_ms),
            ).fetchall()
            return [command_from_row(r) for r in rows]

        return self._read(work)

    def expire_commands(self, now_ms: int) -> int:
        def work(tx: _Tx) -> int:
            tx.cur.execute(
                f"""UPDATE commands SET status = 'expired', updated_ms = %s
                    WHERE status IN ('queued', 'sent') AND expires_ms > 0 AND expires_ms <= %s
                    RETURNING {_COMMAND_COLUMNS}""",
                (now_ms, now_ms),
            )
            expired = sorted((command_from_row(r) for r in tx.cur.fetchall()), key=lambda c: c.id)
            for command in expired:
                tx.changes.append(self._command_change(tx, command, now_ms))
            return len(expired)

        return self._write(work)

    # ------------------------------------------------------------------ edges

    def edge_connected(self, edge_id: str, replica_id: str, now_ms: int) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                """INSERT INTO edge_connections (edge_id, replica_id, updated_ms)
                   VALUES (%s, %s, %s)
                   ON CONFLICT (edge_id) DO UPDATE
                   SET replica_id = excluded.replica_id, updated_ms = excluded.updated_ms""",
                (edge_id, replica_id, now_ms),
            )

        self._read(work)

    def edge_disconnected(self, edge_id: str, replica_id: str, now_ms: int) -> None:
        def work(conn: psycopg.Connection[Any]) -> None:
            conn.execute(
                "DELETE FROM edge_connections WHERE edge_id = %s AND replica_id = %s",
                (edge_id, replica_id),
            )

        self._read(work)

    def edge_connection(self, edge_id: str, now_ms: int, lease_ms: int) -> str | None:
        def work(conn: psycopg.Connection[Any]) -> str | None:
            row = conn.execute(
                "SELECT replica_id, updated_ms FROM edge_connections WHERE edge_id = %s",
                (edge_id,),
            ).fetchone()
            if row is None or now_ms - row[1] >= lease_ms:
                return None
            return str(row[0])

        return self._read(work)

    # ------------------------------------------------------------------ change feed

    def changes_after(self, seq: int, limit: int) -> list[ChangeEntry]:
        def work(conn: psycopg.Connection[Any]) -> list[ChangeEntry]:
            rows = conn.execute(
                """SELECT seq, kind, ts_ms, device_id, site, model, edge_id, payload
                   FROM changes WHERE seq > %s ORDER BY seq LIMIT %s""",
                (seq, max(1, limit)),
            ).fetchall()
            return [
                ChangeEntry(r[0], ChangeKind(r[1]), r[2], r[3], r[4], r[5], r[6], json.loads(r[7]))
                for r in rows
            ]

        return self._read(work)

    def latest_change_seq(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT last_seq FROM change_counter").fetchone()
            return int(row[0]) if row else 0

        return self._read(work)

    def oldest_change_seq(self) -> int:
        def work(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT min(seq) FROM changes").fetchone()
            return int(row[0]) if row and row[0] is not None else 0

        return self._read(work)

    def prune_changes(self, before_ms: int) -> int:
        """Delete the oldest changes up to the first one at or after ``before_ms`` (the kept
        feed stays contiguous). Also forgets the ingest sequences stored before ``before_ms``,
        raising each edge's floor (a sequence at or below it still counts as a duplicate)."""

        def work(tx: _Tx) -> int:
            cur = tx.cur
            cur.execute("SELECT min(seq) FROM changes WHERE ts_ms >= %s", (before_ms,))
            row = cur.fetchone()
            first_kept = row[0] if row else None
            if first_kept is None:
                cur.execute("DELETE FROM changes")
            else:
                cur.execute("DELETE FROM changes WHERE seq < %s", (first_kept,))
            deleted = cur.rowcount
            cur.execute(
                """WITH gone AS (
                       DELETE FROM ingest_batches WHERE stored_ms < %s
                       RETURNING edge_id, sequence
                   )
                   UPDATE edge_batches AS b SET floor = greatest(b.floor, g.top)
                   FROM (SELECT edge_id, max(sequence) AS top FROM gone GROUP BY edge_id) AS g
                   WHERE b.edge_id = g.edge_id""",
                (before_ms,),
            )
            return int(deleted)

        return self._write(work)
