"""Security records of the registry (edges' identities, certificates, enrollment tokens,
revocations, API keys, the audit log) and their storage, written once for both engines.

Each engine hands :class:`SecurityStore` a small :class:`SqlRunner` (its own read and write
transactions; SQL is written with ``?`` placeholders, the PostgreSQL runner turns them into
``%s``). The tables come from each engine's migrations (SQLite step 4, PostgreSQL step 2).

Rules:

* Token secrets and API key secrets are never stored, only their SHA-256 (hex).
* :meth:`SecurityStore.mark_token_used` is one conditional ``UPDATE ... WHERE used_ms IS
  NULL``: two concurrent enrollments with one token cannot both win.
* :meth:`SecurityStore.revoke_edge` marks the edge and every serial issued to it revoked and
  appends a :attr:`~cloud_registry.storage.base.ChangeKind.EDGE_REVOKED` change in the same
  transaction, so every replica learns it from the change feed (LISTEN/NOTIFY on PostgreSQL).
* Serial numbers are stored as lower-case hex text (they exceed 64 bits).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from cloud_registry.storage.base import AlreadyExists, ChangeKind, NotFound, Page
from security.tokens import TokenRecord

__all__ = [
    "ApiKeyRecord",
    "AuditRecord",
    "EdgeIdentity",
    "EdgeStatus",
    "IssuedCertificate",
    "RevocationState",
    "SecurityStore",
    "SqlRunner",
    "SqlTx",
]

T = TypeVar("T")
_MAX_AUDIT_PAGE = 1000


class EdgeStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class EdgeIdentity:
    """An edge allowed to enroll (``edges add``), and whether it is revoked."""

    edge_id: str
    site: str
    status: EdgeStatus
    created_ms: int
    revoked_ms: int = 0
    certificates: tuple[IssuedCertificate, ...] = ()


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    serial: str  # lower-case hex
    edge_id: str
    issued_ms: int
    not_after_ms: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An integrator's API key: only the SHA-256 of its secret is kept."""

    key_id: str
    name: str
    site: str
    scopes: frozenset[str]
    secret_sha256: str
    created_ms: int
    revoked_ms: int = 0


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored security event (``id`` 0 before it is stored)."""

    time_ms: int
    kind: str
    subject: str
    detail: str = ""
    peer: str = ""
    id: int = 0


@dataclass(frozen=True, slots=True)
class RevocationState:
    """What a replica checks every call against: revoked serials (hex) and edges."""

    serials: frozenset[str]
    edges: frozenset[str]


class SqlTx(Protocol):
    """A write transaction of an engine."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def change(
        self, kind: ChangeKind, ts_ms: int, edge_id: str, payload: Mapping[str, Any]
    ) -> None:
        """Append a change entry, committed with the transaction."""
        ...


class SqlRunner(Protocol):
    """An engine's read statements and write transactions."""

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def write(self, work: Callable[[SqlTx], T]) -> T: ...


def _token(row: Sequence[Any]) -> TokenRecord:
    token_id, digest, edge_id, site, expires_ms, used_ms = row
    return TokenRecord(
        token_id=token_id,
        secret_sha256=digest,
        edge_id=edge_id,
        site=site,
        expires_at=datetime.fromtimestamp(expires_ms / 1000, UTC),
        used_at=None if used_ms is None else datetime.fromtimestamp(used_ms / 1000, UTC),
    )


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class SecurityStore:
    """The security tables of one engine (thread-safe as the engine is)."""

    def __init__(self, runner: SqlRunner) -> None:
        self._db = runner

    # ---- edges and enrollment tokens

    def add_edge(self, edge_id: str, site: str, token: TokenRecord, now_ms: int) -> EdgeIdentity:
        """Allow ``edge_id`` (of ``site``) to enroll with ``token``. Adding a known edge again
        issues a new token (and re-activates a revoked edge); its site must not change."""

        def work(tx: SqlTx) -> EdgeIdentity:
            rows = tx.execute("SELECT site FROM edge_identities WHERE edge_id = ?", (edge_id,))
            if rows and rows[0][0] != site:
                raise AlreadyExists(
                    f"edge {edge_id} exists already in site {rows[0][0]!r}, not {site!r}"
                )
            if rows:
                tx.execute(
                    "UPDATE edge_identities SET status = ?, revoked_ms = 0 WHERE edge_id = ?",
                    (EdgeStatus.ACTIVE.value, edge_id),
                )
            else:
                tx.execute(
                    "INSERT INTO edge_identities (edge_id, site, status, created_ms, revoked_ms)"
                    " VALUES (?, ?, ?, ?, 0)",
                    (edge_id, site, EdgeStatus.ACTIVE.value, now_ms),
                )
            tx.execute(
                "INSERT INTO enrollment_tokens (token_id, secret_sha256, edge_id, site,"
                " created_ms, expires_ms, used_ms) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (token.token_id, token.secret_sha256, edge_id, site, now_ms, _ms(token.expires_at)),
            )
            return EdgeIdentity(edge_id, site, EdgeStatus.ACTIVE, now_ms)

        return self._db.write(work)

    def get_edge(self, edge_id: str) -> EdgeIdentity:
        """The edge with its certificates; :class:`NotFound` when never added."""
        rows = self._db.read(
            "SELECT edge_id, site, status, created_ms, revoked_ms FROM edge_identities"
            " WHERE edge_id = ?",
            (edge_id,),
        )
        if not rows:
            raise NotFound(f"edge {edge_id} was never added (cloud-registry edges add)")
        return self._with_certificates(rows[0])

    def list_edges(self) -> list[EdgeIdentity]:
        rows = self._db.read(
            "SELECT edge_id, site, status, created_ms, revoked_ms FROM edge_identities"
            " ORDER BY edge_id"
        )
        return [self._with_certificates(row) for row in rows]

    def _with_certificates(self, row: Sequence[Any]) -> EdgeIdentity:
        edge_id, site, status, created_ms, revoked_ms = row
        certs = self._db.read(
            "SELECT c.serial, c.edge_id, c.issued_ms, c.not_after_ms, r.serial IS NOT NULL"
            " FROM edge_certificates c LEFT JOIN revoked_serials r ON r.serial = c.serial"
            " WHERE c.edge_id = ? ORDER BY c.issued_ms, c.serial",
            (edge_id,),
        )
        return EdgeIdentity(
            edge_id,
            site,
            EdgeStatus(status),
            int(created_ms),
            int(revoked_ms),
            tuple(IssuedCertificate(s, e, int(i), int(n), bool(r)) for s, e, i, n, r in certs),
        )

    def get_token(self, token_id: str) -> TokenRecord | None:
        rows = self._db.read(
            "SELECT token_id, secret_sha256, edge_id, site, expires_ms, used_ms"
            " FROM enrollment_tokens WHERE token_id = ?",
            (token_id,),
        )
        return _token(rows[0]) if rows else None

    def mark_token_used(self, token_id: str, when_ms: int) -> bool:
        """Set the token's ``used_ms`` if unset (one conditional UPDATE); False otherwise."""

        def work(tx: SqlTx) -> bool:
            rows = tx.execute(
                "UPDATE enrollment_tokens SET used_ms = ? WHERE token_id = ? AND used_ms IS NULL"
                " RETURNING token_id",
                (when_ms, token_id),
            )
            return bool(rows)

        return self._db.write(work)

    def record_certificate(self, cert: IssuedCertificate) -> None:
        """Remember a certificate issued to an edge (so that revoking the edge revokes it)."""
        self._db.write(
            lambda tx: tx.execute(
                "INSERT INTO edge_certificates (serial, edge_id, issued_ms, not_after_ms)"
                " VALUES (?, ?, ?, ?)",
                (cert.serial, cert.edge_id, cert.issued_ms, cert.not_after_ms),
            )
        )

    def revoke_edge(self, edge_id: str, now_ms: int) -> list[str]:
        """Revoke the edge and every certificate issued to it; returns their serials."""

        def work(tx: SqlTx) -> list[str]:
            if not tx.execute("SELECT 1 FROM edge_identities WHERE edge_id = ?", (edge_id,)):
                raise NotFound(f"edge {edge_id} was never added")
            tx.execute(
                "UPDATE edge_identities SET status = ?, revoked_ms = ? WHERE edge_id = ?",
                (EdgeStatus.REVOKED.value, now_ms, edge_id),
            )
            serials = [
                str(r[0])
                for r in tx.execute(
                    "SELECT serial FROM edge_certificates WHERE edge_id = ? AND serial NOT IN"
                    " (SELECT serial FROM revoked_serials)",
                    (edge_id,),
                )
            ]
            for serial in serials:
                tx.execute(
                    "INSERT INTO revoked_serials (serial, edge_id, revoked_ms) VALUES (?, ?, ?)",
                    (serial, edge_id, now_ms),
                )
            tx.execute(
                "UPDATE enrollment_tokens SET used_ms = ? WHERE edge_id = ? AND used_ms IS NULL",
                (now_ms, edge_id),
            )
            tx.change(ChangeKind.EDGE_REVOKED, now_ms, edge_id, {"edge_id": edge_id})
            return serials

        return self._db.write(work)

    def revocations(self) -> RevocationState:
        serials = self._db.read("SELECT serial FROM revoked_serials")
        edges = self._db.read(
            "SELECT edge_id FROM edge_identities WHERE status = ?", (EdgeStatus.REVOKED.value,)
        )
        return RevocationState(
            frozenset(str(r[0]) for r in serials), frozenset(str(r[0]) for r in edges)
        )

    # ---- API keys

    def add_api_key(self, record: ApiKeyRecord) -> None:
        def work(tx: SqlTx) -> None:
            if tx.execute("SELECT 1 FROM api_keys WHERE name = ?", (record.name,)):
                raise AlreadyExists(f"API key {record.name!r} exists already")
            tx.execute(
                "INSERT INTO api_keys (key_id, name, site, scopes, secret_sha256, created_ms,"
                " revoked_ms) VALUES (?, ?, ?, ?, ?, ?, 0)",
                (
                    record.key_id,
                    record.name,
                    record.site,
                    ",".join(sorted(record.scopes)),
                    record.secret_sha256,
                    record.created_ms,
                ),
            )

        self._db.write(work)

    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        rows = self._db.read(
            "SELECT key_id, name, site, scopes, secret_sha256, created_ms, revoked_ms"
            " FROM api_keys WHERE key_id = ?",
            (key_id,),
        )
        if not rows:
            return None
        kid, name, site, scopes, digest, created, revoked = rows[0]
        return ApiKeyRecord(
            kid, name, site, frozenset(s for s in scopes.split(",") if s), digest, created, revoked
        )

    # ---- audit

    def append_audit(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return

        def work(tx: SqlTx) -> None:
            for r in records:
                tx.execute(
                    "INSERT INTO audit_events (time_ms, kind, subject, detail, peer)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (r.time_ms, r.kind, r.subject, r.detail[:2000], r.peer[:200]),
                )

        self._db.write(work)

    def list_audit(
        self,
        *,
        kind: str = "",
        subject: str = "",
        since_ms: int = 0,
        after_id: int = 0,
        limit: int = 100,
    ) -> Page[AuditRecord]:
        """Events oldest first; ``next_cursor`` is the last id (empty at the end)."""
        limit = max(1, min(limit, _MAX_AUDIT_PAGE))
        rows = self._db.read(
            "SELECT id, time_ms, kind, subject, detail, peer FROM audit_events"
            " WHERE (? = '' OR kind = ?) AND (? = '' OR subject = ?) AND time_ms >= ?"
            " AND id > ? ORDER BY id LIMIT ?",
            (kind, kind, subject, subject, since_ms, after_id, limit + 1),
        )
        items = [AuditRecord(int(t), k, s, d, p, int(i)) for i, t, k, s, d, p in rows[:limit]]
        cursor = str(items[-1].id) if len(rows) > limit else ""
        return Page(tuple(items), cursor)
