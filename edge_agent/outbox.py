"""The durable outbox between acquisition and the uplink (SQLite, WAL, ``synchronous=FULL``).

Acquisition calls :meth:`Outbox.append` with a batch of :class:`~thing_models.messages.Message`;
it returns only after the batch is committed in one transaction: *accepted* means committed,
and nothing accepted is lost to a crash (``kill -9``, power loss) except through the overflow
policy below, which counts every drop. Each row holds a global autoincrement id (ids are never
reused, so id order is arrival order and therefore per-device order), the device id, kind,
class (telemetry or kept, see :func:`~edge_agent.outbox_policy.is_kept`), message timestamp,
enqueue time (the outbox's clock), the stored size and the payload: the protobuf bytes of
:func:`~thing_models.messages.to_bytes` passed through a
:class:`~edge_agent.outbox_policy.PayloadCodec` (identity by default; encryption at rest plugs
in there).

Uplink protocol (``cloud_registry/api/v1/edge_sync.proto``)
---------------------------------------------------------
1. After a (re)start, :meth:`Outbox.pending_batches` returns the batches that were given a
   sequence number but not acknowledged, with the SAME sequence numbers and the same messages
   (rows of a batch are never dropped, see below): resend them first. The registry stores
   each ``(edge, sequence)`` once and acknowledges a repeat as a duplicate, so every message
   is stored exactly once. :meth:`Outbox.raise_sequence_floor` takes ``Welcome.last_sequence``
   so a recreated outbox never reuses a sequence the registry has seen.
2. :meth:`Outbox.next_batch` (the oldest rows) or :meth:`Outbox.live_batch` (the newest rows)
   read rows not yet in a batch, without deleting them; :meth:`Outbox.assign_sequence` records
   ``sequence -> id range`` durably, before the batch is sent.
3. On ``BatchAck``, :meth:`Outbox.ack_sequence` deletes the batch's rows in one transaction
   (acks may come in any order; a repeated ack is a no-op). Without sequence numbers,
   :meth:`Outbox.ack` deletes every row up to an id.

Replay and live data
--------------------
After an outage the backlog is replayed oldest first, paced, while new data goes out at once.
Each turn the uplink (a) sends :meth:`~Outbox.live_batch`: rows enqueued in the last
``window_s`` seconds (default 10) that come after every assigned batch, unpaced (acquisition
bounds their rate), and (b) sends :meth:`~Outbox.next_batch` limited to
:meth:`ReplayPacer.available() <edge_agent.outbox_policy.ReplayPacer.available>` messages and
consumes what it sent. Rows older than the window are the backlog: when the uplink falls behind
(an outage, or a link slower than acquisition) they are replayed oldest first at the paced rate.
Each row is read by one of the two (assigned rows are skipped), and when there is no backlog
both read the same tail. The pacer's rate must exceed the live rate. Order is kept per
device inside each batch and inside each stream (the backlog stream replays in id order), but a
device's live rows can reach the cloud before its older backlog rows: the registry orders
history by ``ts_ms``. An uplink that needs strict FIFO uses only ``next_batch``.

Overflow policy
---------------
Checked on every append (in the same transaction) and by :meth:`Outbox.expire`. Sizes are the
stored payload bytes. Age is measured from the enqueue time. Drops are range deletes (one
``DELETE`` per contiguous run, never row by row), counted per device, reason and class in a
persistent table that :meth:`Outbox.stats` returns (the agent reports them as metrics/events).

=================================  ============================  ==============================
Condition                          Dropped                       Counted as (reason, class)
=================================  ============================  ==============================
telemetry enqueued > max_age_s ago  those rows, oldest first     ``age``, ``telemetry``
stored bytes > ``max_bytes``       oldest telemetry rows until   ``size``, ``telemetry``
                                   bytes <= ``max_bytes``
still > ``hard_max_bytes`` (only   oldest kept rows (events,     ``size``, ``kept``
kept rows left to drop; default    alarms, replies) until bytes
2 x ``max_bytes``)                 <= ``hard_max_bytes``
kept row older than                those rows, oldest first      ``age``, ``kept``
``kept_max_age_s`` (default: off)
any row in an assigned batch       never dropped (a batch's      --
(sequence given, not acked)        content must not change
                                   under its sequence number)
one message > ``max_bytes``        refused: ``append`` raises    --
                                   ValueError, stores nothing
=================================  ============================  ==============================

Rows in assigned batches are bounded by the uplink's window (``max_in_flight`` batches), so
the hard limit can be exceeded by at most that much. A batch read but not yet assigned is not
protected: if the policy drops one of its rows in between, :meth:`Outbox.assign_sequence`
raises :class:`StaleBatchError` and the uplink reads again.

Bad data: a stored payload that cannot be decoded (codec or protobuf error) is moved to a
quarantine table, logged and skipped; readers never raise for it (:meth:`Outbox.quarantined`,
``stats().quarantined``). A file that is not an outbox raises :class:`OutboxError`.

Concurrency: one process owns an outbox file (SQLite exclusive locking mode; a second opener
gets :class:`OutboxError`). The object is thread-safe (one lock); calls block on ``fsync``, so
call them from a worker thread in asyncio code.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from edge_agent.outbox_policy import KEPT, TELEMETRY, IdentityCodec, PayloadCodec, is_kept
from thing_models.errors import MessageError
from thing_models.messages import Message, from_bytes, to_bytes
from thing_models.proto import thing_message_pb2 as pb

__all__ = [
    "DropCount",
    "Outbox",
    "OutboxBatch",
    "OutboxError",
    "OutboxStats",
    "QuarantinedRow",
    "StaleBatchError",
]

_log = logging.getLogger(__name__)

FORMAT: Final = "community-iot-edge/outbox"
SCHEMA_VERSION: Final = "1"
_MAX_ID: Final = 2**63 - 1

_SCHEMA: Final = (
    "CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        kept INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        size INTEGER NOT NULL,
        payload BLOB NOT NULL)""",
    # Covering index for the policy: oldest rows of a class, their age, size and device.
    "CREATE INDEX outbox_class ON outbox (kept, id, enqueued_ms, size, device_id)",
    """CREATE TABLE outbox_batches (
        sequence INTEGER PRIMARY KEY,
        first_id INTEGER NOT NULL,
        last_id INTEGER NOT NULL,
        assigned_ms INTEGER NOT NULL)""",
    """CREATE TABLE outbox_drops (
        device_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        class TEXT NOT NULL,
        rows INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (device_id, reason, class)) WITHOUT ROWID""",
    """CREATE TABLE outbox_quarantine (
        id INTEGER PRIMARY KEY,
        device_id TEXT,
        kind TEXT,
        ts_ms INTEGER,
        enqueued_ms INTEGER,
        payload BLOB,
        error TEXT NOT NULL,
        quarantined_ms INTEGER NOT NULL)""",
)


class OutboxError(Exception):
    """The outbox file cannot be used (not an outbox, in use, wrong codec, I/O error)."""


class StaleBatchError(OutboxError):
    """Rows of a batch changed (dropped or acknowledged) between reading and assigning it."""


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """Rows ``first_id..last_id`` (every row of the outbox in that range), oldest first.

    ``sequence`` is None until :meth:`Outbox.assign_sequence`; batches from
    :meth:`Outbox.pending_batches` carry theirs. ``messages`` may be empty only for a pending
    batch whose rows were all quarantined.
    """

    first_id: int
    last_id: int
    messages: tuple[Message, ...]
    sequence: int | None = None
    #: the rows as protobuf messages instead of ``messages`` when read with ``protobuf=True``
    #: (the uplink's path: parsed by protobuf only, no per-value work in Python)
    protos: tuple[pb.ThingMessage, ...] = ()

    @property
    def count(self) -> int:
        """Rows read (messages or protos)."""
        return len(self.messages) or len(self.protos)


@dataclass(frozen=True, slots=True)
class DropCount:
    device_id: str
    reason: str  # "size" or "age"
    klass: str  # "telemetry" or "kept"
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    rows: int
    bytes: int
    oldest_age_s: float | None  # by enqueue time; None when empty
    in_flight_batches: int
    last_sequence: int
    dropped_telemetry_rows: int
    dropped_kept_rows: int
    dropped: tuple[DropCount, ...]  # cumulative, persistent
    quarantined: int


@dataclass(frozen=True, slots=True)
class QuarantinedRow:
    id: int
    device_id: str | None
    error: str
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    size: int
    payload: object


class Outbox:
    """A durable, bounded, ordered outbox in one SQLite file (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int,
        max_age_s: float,
        hard_max_bytes: int | None = None,
        kept_max_age_s: float | None = None,
        codec: PayloadCodec | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if not max_age_s > 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        hard = 2 * max_bytes if hard_max_bytes is None else hard_max_bytes
        if hard < max_bytes:
            raise ValueError(f"hard_max_bytes ({hard}) must be at least max_bytes ({max_bytes})")
        if kept_max_age_s is not None and not kept_max_age_s > 0:
            raise ValueError(f"kept_max_age_s must be positive, got {kept_max_age_s}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.hard_max_bytes = hard
        self.max_age_s = max_age_s
        self.kept_max_age_s = kept_max_age_s
        self._codec: PayloadCodec = IdentityCodec() if codec is None else codec
        self._clock = clock
        self._lock = threading.RLock()
        self._rows = 0
        self._bytes = 0
        self._last_sequence = 0
        self._batches: dict[int, tuple[int, int]] = {}
        self._conn = self._open()
        try:
            self._load_state()
            with self._write():
                self._enforce()
        except BaseException:
            self._conn.close()
            raise

    # ------------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection:
        where = str(self.path)
        try:
            conn = sqlite3.connect(
                where, isolation_level=None, check_same_thread=False, timeout=0.25
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"{where}: cannot open the outbox ({exc})") from exc
        try:
            # Exclusive locking before WAL: one owner process, no shared-memory index.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"{where}: cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_or_create(conn, where)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise OutboxError(f"{where}: the outbox is in use by another process") from exc
            raise OutboxError(f"{where}: cannot open the outbox ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise OutboxError(f"{where}: not an outbox database ({exc})") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_or_create(self, conn: sqlite3.Connection, where: str) -> None:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if not tables:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO outbox_meta (key, value) VALUES (?, ?)",
                [
                    ("format", FORMAT),
                    ("schema_version", SCHEMA_VERSION),
                    ("codec", self._codec.name),
                    ("last_sequence", "0"),
                ],
            )
            return
        if "outbox_meta" not in tables:
            raise OutboxError(
                f"{where}: an SQLite database but not an outbox (tables: {sorted(tables)[:5]})"
            )
        meta = dict(conn.execute("SELECT key, value FROM outbox_meta").fetchall())
        if meta.get("format") != FORMAT:
            raise OutboxError(f"{where}: not an outbox database (format {meta.get('format')!r})")
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise OutboxError(
                f"{where}: outbox schema version {meta.get('schema_version')!r} is not supported "
                f"(this agent reads version {SCHEMA_VERSION})"
            )
        if meta.get("codec") != self._codec.name:
            raise OutboxError(
                f"{where}: the outbox was written with payload codec {meta.get('codec')!r}, "
                f"not {self._codec.name!r}: open it with that codec (drain it before switching)"
            )

    def _load_state(self) -> None:
        conn = self._conn
        rows, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox").fetchone()
        self._rows, self._bytes = int(rows), int(size)
        self._batches = {
            int(seq): (int(first), int(last))
            for seq, first, last in conn.execute(
                "SELECT sequence, first_id, last_id FROM outbox_batches"
            )
        }
        value = conn.execute("SELECT value FROM outbox_meta WHERE key = 'last_sequence'")
        self._last_sequence = int(value.fetchone()[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; on any error it rolls back and reloads the cached state."""
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise OutboxError(f"{self.path}: cannot start a transaction ({exc})") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._load_state()
                except sqlite3.Error:  # pragma: no cover - the original error matters more
                    _log.exception("outbox %s: rollback failed", self.path)
                if isinstance(exc, sqlite3.Error):
                    raise OutboxError(f"{self.path}: write failed ({exc})") from exc
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def append(self, messages: Sequence[Message]) -> int:
        """Store ``messages`` durably in one transaction; returns the id of the last row (the
        rows have ids ``last - len(messages) + 1 .. last``), or 0 for an empty sequence.

        Raises TypeError for anything that is not a Message and ValueError for a message whose
        stored size exceeds ``max_bytes``; then nothing is stored. Applies the overflow policy
        in the same transaction, which may drop older rows (counted).
        """
        if isinstance(messages, Message) or not isinstance(messages, Sequence):
            raise TypeError(
                f"append takes a sequence of Messages, got {type(messages).__name__}"
                + (" (wrap it in a list)" if isinstance(messages, Message) else "")
            )
        now = self._now_ms()
        rows: list[tuple[str, str, int, int, int, int, bytes]] = []
        total = 0
        for index, msg in enumerate(messages):
            if not isinstance(msg, Message):
                raise TypeError(f"messages[{index}]: expected a Message, got {type(msg).__name__}")
            payload = self._codec.encode(to_bytes(msg))
            size = len(payload)
            if size > self.max_bytes:
                raise ValueError(
                    f"messages[{index}] (id {msg.id}, device {msg.device_id}): {size} bytes is "
                    f"more than the outbox's max_bytes of {self.max_bytes}"
                )
            total += size
            kept = 1 if is_kept(msg) else 0
            rows.append((msg.device_id, msg.kind.value, kept, msg.ts_ms, now, size, payload))
        if not rows:
            return 0
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO outbox (device_id, kind, kept, ts_ms, enqueued_ms, size, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            self._rows += len(rows)
            self._bytes += total
            self._enforce(now)
        return last

    def expire(self) -> int:
        """Apply the overflow policy now (e.g. from a timer when nothing is appended); returns
        the rows dropped."""
        with self._write():
            return self._enforce()

    # ------------------------------------------------------------------ policy

    def _gaps(self) -> list[tuple[int, int]]:
        """Id ranges ``(lo, hi)`` (both exclusive) outside every assigned batch, in order."""
        gaps: list[tuple[int, int]] = []
        lo = 0
        for first, last in sorted(self._batches.values()):
            if first > lo + 1:
                gaps.append((lo, first))
            lo = max(lo, last)
        gaps.append((lo, _MAX_ID))
        return gaps

    def _enforce(self, now_ms: int | None = None) -> int:
        now = self._now_ms() if now_ms is None else now_ms
        dropped = 0
        if math.isfinite(self.max_age_s):  # math.inf: no age limit
            dropped += self._expire_class(0, now - int(self.max_age_s * 1000))
        if self.kept_max_age_s is not None and math.isfinite(self.kept_max_age_s):
            dropped += self._expire_class(1, now - int(self.kept_max_age_s * 1000))
        if self._bytes > self.max_bytes:
            dropped += self._shed(0, self.max_bytes)
        if self._bytes > self.hard_max_bytes:
            dropped += self._shed(1, self.hard_max_bytes)
        return dropped

    def _expire_class(self, kept: int, cutoff_ms: int) -> int:
        dropped = 0
        for lo, hi in self._gaps():
            fresh = self._conn.execute(
                "SELECT id FROM outbox WHERE kept = ? AND id > ? AND id < ? AND enqueued_ms >= ? "
                "ORDER BY id LIMIT 1",
                (kept, lo, hi, cutoff_ms),
            ).fetchone()
            end = hi - 1 if fresh is None else int(fresh[0]) - 1
            dropped += self._drop_range(kept, lo, end, "age")
            if fresh is not None:
                break
        return dropped

    def _shed(self, kept: int, target: int) -> int:
        dropped = 0
        for lo, hi in self._gaps():
            excess = self._bytes - target
            if excess <= 0:
                break
            cur = self._conn.execute(
                "SELECT id, size FROM outbox WHERE kept = ? AND id > ? AND id < ? ORDER BY id",
                (kept, lo, hi),
            )
            freed, cut = 0, None
            try:
                while freed < excess:
                    chunk = cur.fetchmany(1000)
                    if not chunk:
                        break
                    for row_id, size in chunk:
                        freed += size
                        cut = row_id
                        if freed >= excess:
                            break
            finally:
                cur.close()
            if cut is not None:
                dropped += self._drop_range(kept, lo, int(cut), "size")
        return dropped

    def _drop_range(self, kept: int, lo: int, hi: int, reason: str) -> int:
        """Delete the rows of class ``kept`` with ``lo < id <= hi`` and count them."""
        if hi <= lo:
            return 0
        where = "FROM outbox WHERE kept = ? AND id > ? AND id <= ?"
        args = (kept, lo, hi)
        groups = self._conn.execute(
            f"SELECT device_id, count(*), coalesce(sum(size), 0) {where} GROUP BY device_id", args
        ).fetchall()
        if not groups:
            return 0
        self._conn.execute(f"DELETE {where}", args)
        klass = KEPT if kept else TELEMETRY
        self._conn.executemany(
            "INSERT INTO outbox_drops (device_id, reason, class, rows, bytes) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (device_id, reason, class) "
            "DO UPDATE SET rows = rows + excluded.rows, bytes = bytes + excluded.bytes",
            [(device, reason, klass, count, size) for device, count, size in groups],
        )
        rows = sum(int(count) for _, count, _ in groups)
        self._rows -= rows
        self._bytes -= sum(int(size) for _, _, size in groups)
        _log.warning(
            "outbox %s: dropped %d %s rows (%s) from %d devices",
            self.path,
            rows,
            klass,
            reason,
            len(groups),
        )
        return rows

    # ------------------------------------------------------------------ reading

    def live_batch(
        self,
        max_messages: int = 500,
        max_bytes: int = 1 << 20,
        *,
        window_s: float = 10.0,
        protobuf: bool = False,
    ) -> OutboxBatch | None:
        """The oldest *live* rows, or None: rows after every assigned batch, from the first one
        enqueued less than ``window_s`` ago on, in id order. The uplink sends them unpaced
        while :meth:`next_batch` replays the older rows (the backlog) at a paced rate."""
        if window_s < 0:
            raise ValueError(f"window_s must not be negative, got {window_s}")
        with self._lock:
            lo, hi = self._gaps()[-1]
            span_ms = int(window_s * 1000) if math.isfinite(window_s) else _MAX_ID
            first = self._first_fresh_id(lo, self._now_ms() - span_ms)
            if first is None:
                return None
            return self._read_batch(max_messages, max_bytes, [(first - 1, hi)], protobuf)

    def _first_fresh_id(self, lo: int, cutoff_ms: int) -> int | None:
        """The first id after ``lo`` enqueued at or after ``cutoff_ms``, by bisection over ids
        (enqueue times grow with ids), so a large backlog costs O(log n) lookups, not a scan."""

        def first_at(row_id: int) -> tuple[int, int] | None:
            row = self._conn.execute(
                "SELECT id, enqueued_ms FROM outbox WHERE id >= ? ORDER BY id LIMIT 1", (row_id,)
            ).fetchone()
            return None if row is None else (int(row[0]), int(row[1]))

        head = first_at(lo + 1)
        if head is None:
            return None
        if head[1] >= cutoff_ms:
            return head[0]
        tail = self._conn.execute("SELECT max(id) FROM outbox").fetchone()[0]
        low, high = head[0] + 1, int(tail) + 1  # the answer's id bound lies in [low, high]
        while low < high:
            mid = (low + high) // 2
            found = first_at(mid)
            if found is not None and found[1] >= cutoff_ms:
                high = mid
            else:
                low = mid + 1
        found = first_at(low)
        return None if found is None else found[0]

    def next_batch(
        self, max_messages: int = 500, max_bytes: int = 1 << 20, *, protobuf: bool = False
    ) -> OutboxBatch | None:
        """The oldest rows not in an assigned batch (at most ``max_messages`` and ``max_bytes``
        stored bytes, but always at least one row), or None. Nothing is deleted. A batch never
        spans an assigned batch, so it can end early."""
        return self._read_batch(max_messages, max_bytes, None, protobuf)

    def _read_batch(
        self,
        max_messages: int,
        max_bytes: int,
        gaps: list[tuple[int, int]] | None = None,
        protobuf: bool = False,
    ) -> OutboxBatch | None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("max_messages and max_bytes must be positive")
        with self._lock:
            while True:
                rows: list[_Row] = []
                for lo, hi in self._gaps() if gaps is None else gaps:
                    rows = self._read_rows(lo, hi, max_messages, max_bytes)
                    if rows:
                        break
                if not rows:
                    return None
                if protobuf:
                    protos = self._decode_protobuf(rows)
                    if protos:
                        first, last = protos[0][0], protos[-1][0]
                        return OutboxBatch(first, last, (), None, tuple(m for _, m in protos))
                    continue
                messages = self._decode(rows)
                if messages:
                    ids = [row_id for row_id, _ in messages]
                    return OutboxBatch(ids[0], ids[-1], tuple(m for _, m in messages))

    def _read_rows(self, lo: int, hi: int, max_messages: int, max_bytes: int) -> list[_Row]:
        cur = self._conn.execute(
            "SELECT id, size, payload FROM outbox WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
            (lo, hi, max_messages),
        )
        rows: list[_Row] = []
        total = 0
        for row_id, size, payload in cur:
            if rows and total + size > max_bytes:
                break
            total += size
            rows.append(_Row(int(row_id), int(size), payload))
        cur.close()
        return rows

    def _decode(self, rows: Sequence[_Row]) -> list[tuple[int, Message]]:
        """Decode payloads; rows that fail are quarantined and left out."""
        out: list[tuple[int, Message]] = []
        bad: list[tuple[int, str]] = []
        for row in rows:
            try:
                data = self._codec.decode(row.payload)  # type: ignore[arg-type]
                out.append((row.id, from_bytes(data, max_bytes=max(len(data), 1))))
            except Exception as exc:
                bad.append((row.id, f"{type(exc).__name__}: {exc}"))
        if bad:
            self._quarantine(bad)
        return out

    def _decode_protobuf(self, rows: Sequence[_Row]) -> list[tuple[int, pb.ThingMessage]]:
        """Decode payloads as protobuf messages only (what was appended was validated); rows
        the codec or protobuf refuse are quarantined and left out."""
        out: list[tuple[int, pb.ThingMessage]] = []
        bad: list[tuple[int, str]] = []
        parse = pb.ThingMessage.FromString
        decode = self._codec.decode
        for row in rows:
            try:
                message = parse(decode(row.payload))  # type: ignore[arg-type]
                if not (message.id and message.device_id and message.model):
                    raise MessageError("message: no id, device_id or model")
                out.append((row.id, message))
            except Exception as exc:
                bad.append((row.id, f"{type(exc).__name__}: {exc}"))
        if bad:
            self._quarantine(bad)
        return out

    def _quarantine(self, bad: Sequence[tuple[int, str]]) -> None:
        now = self._now_ms()
        with self._write() as conn:
            for row_id, error in bad:
                _log.error("outbox %s: row %d quarantined: %s", self.path, row_id, error)
                found = conn.execute("SELECT size FROM outbox WHERE id = ?", (row_id,)).fetchone()
                if found is None:
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO outbox_quarantine (id, device_id, kind, ts_ms, "
                    "enqueued_ms, payload, error, quarantined_ms) SELECT id, device_id, kind, "
                    "ts_ms, enqueued_ms, payload, ?, ? FROM outbox WHERE id = ?",
                    (error, now, row_id),
                )
                conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self._rows -= 1
                self._bytes -= int(found[0]) if isinstance(found[0], int) else 0

    def quarantined(self, limit: int = 100) -> list[QuarantinedRow]:
        """The most recently quarantined rows (newest first)."""
        with self._lock:
            return [
                QuarantinedRow(
                    int(row_id),
                    device if isinstance(device, str) else None,
                    str(error),
                    payload if isinstance(payload, bytes) else None,
                )
                for row_id, device, error, payload in self._conn.execute(
                    "SELECT id, device_id, error, CAST(payload AS BLOB) FROM outbox_quarantine "
                    "ORDER BY quarantined_ms DESC, id DESC LIMIT ?",
                    (limit,),
                )
            ]

    # ------------------------------------------------------------------ sequences and acks

    def assign_sequence(self, batch: OutboxBatch) -> int:
        """Record the next batch sequence number for ``batch`` durably and return it (1, 2,
        ...; never reused, also across restarts). Idempotent for a pending batch."""
        with self._lock:
            if batch.sequence is not None:
                if self._batches.get(batch.sequence) != (batch.first_id, batch.last_id):
                    raise StaleBatchError(f"batch {batch.sequence} is no longer pending")
                return batch.sequence
            for seq, (first, last) in self._batches.items():
                if batch.first_id <= last and first <= batch.last_id:
                    raise StaleBatchError(
                        f"rows {batch.first_id}..{batch.last_id} overlap batch {seq} "
                        f"({first}..{last})"
                    )
            with self._write() as conn:
                count = conn.execute(
                    "SELECT count(*) FROM outbox WHERE id BETWEEN ? AND ?",
                    (batch.first_id, batch.last_id),
                ).fetchone()[0]
                if count != batch.count or not batch.count:
                    raise StaleBatchError(
                        f"rows {batch.first_id}..{batch.last_id} changed since they were read "
                        f"({count} rows now, {batch.count} read): read a new batch"
                    )
                seq = self._last_sequence + 1
                conn.execute(
                    "INSERT INTO outbox_batches (sequence, first_id, last_id, assigned_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (seq, batch.first_id, batch.last_id, self._now_ms()),
                )
                self._set_last_sequence(conn, seq)
                self._batches[seq] = (batch.first_id, batch.last_id)
            return seq

    def _set_last_sequence(self, conn: sqlite3.Connection, seq: int) -> None:
        conn.execute("UPDATE outbox_meta SET value = ? WHERE key = 'last_sequence'", (str(seq),))
        self._last_sequence = seq

    def raise_sequence_floor(self, last_sequence: int) -> None:
        """Make the next sequence number larger than ``last_sequence`` (``Welcome.
        last_sequence``); no-op when it already is."""
        with self._lock:
            if last_sequence > self._last_sequence:
                with self._write() as conn:
                    self._set_last_sequence(conn, last_sequence)

    def pending_batches(self, *, protobuf: bool = False) -> list[OutboxBatch]:
        """Assigned, unacknowledged batches by sequence, each with its sequence number and
        the messages to resend (undecodable rows quarantined)."""
        with self._lock:
            out: list[OutboxBatch] = []
            for seq, (first, last) in sorted(self._batches.items()):
                rows = [
                    _Row(int(row_id), int(size), payload)
                    for row_id, size, payload in self._conn.execute(
                        "SELECT id, size, payload FROM outbox WHERE id BETWEEN ? AND ? ORDER BY id",
                        (first, last),
                    )
                ]
                if protobuf:
                    protos = tuple(m for _, m in self._decode_protobuf(rows))
                    out.append(OutboxBatch(first, last, (), seq, protos))
                else:
                    messages = tuple(m for _, m in self._decode(rows))
                    out.append(OutboxBatch(first, last, messages, seq))
            return out

    def release_sequences(self, sequences: Iterable[int]) -> int:
        """Forget the assignment of pending batches the registry has never stored (their
        sequences are above ``Welcome.last_sequence``): their rows go back to be batched again,
        under new sequences (never these: sequences are not reused). For batches that no
        longer fit the registry's batch limit. Returns the batches released."""
        with self._lock:
            found = [seq for seq in sequences if seq in self._batches]
            if not found:
                return 0
            with self._write() as conn:
                for seq in found:
                    conn.execute("DELETE FROM outbox_batches WHERE sequence = ?", (seq,))
                    del self._batches[seq]
            return len(found)

    def ack_sequence(self, sequence: int) -> int:
        """Delete the rows of batch ``sequence`` (acknowledged by the registry); returns the
        rows deleted, 0 for an unknown or already acknowledged sequence."""
        with self._lock:
            span = self._batches.get(sequence)
            if span is None:
                return 0
            with self._write() as conn:
                deleted = self._delete_ids(conn, "id BETWEEN ? AND ?", span)
                conn.execute("DELETE FROM outbox_batches WHERE sequence = ?", (sequence,))
                del self._batches[sequence]
            return deleted

    def ack(self, up_to_id: int) -> int:
        """Delete every row with ``id <= up_to_id`` (and assigned batches wholly below it);
        returns the rows deleted. Refuses (ValueError) to split an assigned batch."""
        with self._lock:
            for seq, (first, last) in self._batches.items():
                if first <= up_to_id < last:
                    raise ValueError(
                        f"ack({up_to_id}) would split batch {seq} ({first}..{last}): "
                        "use ack_sequence"
                    )
            with self._write() as conn:
                deleted = self._delete_ids(conn, "id <= ?", (up_to_id,))
                done = [seq for seq, (_, last) in self._batches.items() if last <= up_to_id]
                conn.executemany(
                    "DELETE FROM outbox_batches WHERE sequence = ?", [(s,) for s in done]
                )
                for seq in done:
                    del self._batches[seq]
            return deleted

    def _delete_ids(self, conn: sqlite3.Connection, where: str, args: Sequence[int]) -> int:
        rows, size = conn.execute(
            f"SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE {where}", args
        ).fetchone()
        if rows:
            conn.execute(f"DELETE FROM outbox WHERE {where}", args)
            self._rows -= int(rows)
            self._bytes -= int(size)
        return int(rows)

    # ------------------------------------------------------------------ reporting

    def stats(self) -> OutboxStats:
        """Depth, oldest age, in-flight batches and the cumulative drop counters."""
        with self._lock:
            conn = self._conn
            # Ids follow enqueue order: the first row is the oldest (an index lookup, no scan).
            first = conn.execute("SELECT enqueued_ms FROM outbox ORDER BY id LIMIT 1").fetchone()
            oldest = None if first is None else int(first[0])
            drops = tuple(
                DropCount(str(d), str(r), str(c), int(n), int(b))
                for d, r, c, n, b in conn.execute(
                    "SELECT device_id, reason, class, rows, bytes FROM outbox_drops "
                    "ORDER BY device_id, reason, class"
                )
            )
            quarantined = conn.execute("SELECT count(*) FROM outbox_quarantine").fetchone()[0]
            return OutboxStats(
                rows=self._rows,
                bytes=self._bytes,
                oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest / 1000),
                in_flight_batches=len(self._batches),
                last_sequence=self._last_sequence,
                dropped_telemetry_rows=sum(d.rows for d in drops if d.klass == TELEMETRY),
                dropped_kept_rows=sum(d.rows for d in drops if d.klass == KEPT),
                dropped=drops,
                quarantined=int(quarantined),
            )
