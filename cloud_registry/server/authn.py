"""Who is calling, in secure mode: client certificates and API keys, checked on every call.

:class:`Authenticator` turns a call's TLS peer certificate (``context.auth_context()``,
``x509_pem_cert``) or API key (metadata ``x-api-key``, or ``authorization: Bearer KEY``) into a
:class:`~cloud_registry.server.principal.Principal`, or refuses it (:class:`Refused`, already
audited):

* certificates are verified with :func:`security.verify.verify_chain` against the CA (path,
  key usage) once per distinct certificate (cached); validity with the replica's clock and
  skew, revocation (serial or edge) and the method's authorization are checked on every call.
* revocations are kept in memory (:class:`~cloud_registry.storage.security_store.RevocationState`)
  and reloaded when the change feed carries an ``edge_revoked`` change (committed by any
  process or replica: LISTEN/NOTIFY on PostgreSQL, polling on SQLite) and every
  ``refresh_s`` as a fallback. The callbacks in ``on_edge_revoked`` (the edge-sync service)
  then close the edge's open streams.

:class:`AuditLog` stores security events (and logs them) before the refusal is returned, so
a test, or an operator, sees the event as soon as the caller sees the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from cloud_registry.ca_admin import api_key_matches, parse_api_key
from cloud_registry.server.authz import (
    EDGE_METHODS,
    PUBLIC_METHODS,
    integrator_allowed,
    required_scope,
)
from cloud_registry.server.change_hub import Subscription
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.errors import PermissionDenied
from cloud_registry.server.principal import Principal, current_principal
from cloud_registry.server.tls import ServerSecurity
from cloud_registry.storage.base import ChangeEntry, ChangeKind, NotFound, StorageError
from cloud_registry.storage.security_store import (
    AuditRecord,
    EdgeStatus,
    RevocationState,
)
from security.audit import AuditKind
from security.errors import (
    CertificateError,
    ExpiredCertificate,
    NotYetValid,
    RevokedCertificate,
    SecurityError,
)
from security.identity import Identity, load_certificate
from security.verify import verify_chain

__all__ = ["ANONYMOUS_PUBLIC", "AuditLog", "Authenticator", "Refused", "site_denied"]

log = logging.getLogger(__name__)
ANONYMOUS_PUBLIC = Principal("anonymous", "anonymous", frozenset(), frozenset())


class Refused(Exception):
    """A call refused by the authenticator (the audit event is stored already)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AuditLog:
    """Stores security events (from the event loop, through the storage worker pool)."""

    def __init__(self, ctx: ServiceContext, clock: Callable[[], datetime]) -> None:
        self._ctx = ctx
        self._clock = clock

    async def record(self, kind: AuditKind, subject: str, detail: str, peer: str = "") -> None:
        """Store one event; a storage failure is logged, never raised to the caller."""
        level = logging.INFO if kind in (AuditKind.ENROLLED, AuditKind.RENEWED) else logging.WARNING
        log.log(level, "audit %s %s: %s (peer %s)", kind.value, subject, detail, peer or "-")
        event = AuditRecord(
            int(self._clock().timestamp() * 1000), kind.value, subject, detail, peer
        )
        try:
            await self._ctx.run(self._ctx.storage.security.append_audit, [event])
        except StorageError:
            log.exception("storing audit event %s of %s failed", kind.value, subject)

    def record_blocking(self, kind: AuditKind, subject: str, detail: str, peer: str = "") -> None:
        """:meth:`record` from a storage worker thread."""
        log.warning("audit %s %s: %s (peer %s)", kind.value, subject, detail, peer or "-")
        event = AuditRecord(
            int(self._clock().timestamp() * 1000), kind.value, subject, detail, peer
        )
        try:
            self._ctx.storage.security.append_audit([event])
        except StorageError:
            log.exception("storing audit event %s of %s failed", kind.value, subject)


def site_denied(ctx: ServiceContext, what: str, site: str) -> PermissionDenied:
    """The error for the current caller reaching ``what`` of another ``site``, audited (call it
    from a storage worker thread: :meth:`ServiceContext.run` carries the principal there)."""
    principal = current_principal()
    detail = f"{principal} may not access {what} of site {site!r}"
    if ctx.audit is not None:
        ctx.audit.record_blocking(AuditKind.ACCESS_REFUSED, str(principal), detail)
    return PermissionDenied(detail, reason="OTHER_SITE")


@dataclass(frozen=True, slots=True)
class _Verified:
    identity: Identity
    serial: str
    not_before: datetime
    not_after: datetime
    site: str


@dataclass
class Authenticator:
    """Authentication and authorization of every call of a secure replica."""

    security: ServerSecurity
    ctx: ServiceContext
    audit: AuditLog
    refresh_s: float = 5.0
    on_edge_revoked: list[Callable[[str], None]] = field(default_factory=list)
    revocations: RevocationState = field(
        default_factory=lambda: RevocationState(frozenset(), frozenset())
    )
    _verified: dict[bytes, _Verified] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _subscription: Subscription | None = None

    async def start(self) -> None:
        await self.refresh()
        self._subscription = await self.ctx.hub.subscribe(
            matches=lambda change: change.kind is ChangeKind.EDGE_REVOKED
        )
        self._tasks.append(asyncio.create_task(self._watch(self._subscription), name="revocations"))
        self._tasks.append(asyncio.create_task(self._poll(), name="revocations-poll"))

    async def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def refresh(self) -> RevocationState:
        state = await self.ctx.run(self.ctx.storage.security.revocations)
        newly = state.edges - self.revocations.edges
        self.revocations = state
        for edge_id in newly:
            self._revoked(edge_id)
        return state

    def _revoked(self, edge_id: str) -> None:
        for callback in list(self.on_edge_revoked):
            try:
                callback(edge_id)
            except Exception:
                log.exception("closing the streams of revoked edge %s failed", edge_id)

    async def _watch(self, subscription: Subscription) -> None:
        async for change in subscription:
            await self._on_revoked(change)

    async def _on_revoked(self, change: ChangeEntry) -> None:
        try:
            await self.refresh()
        except StorageError:
            log.exception("reloading revocations failed")
        if change.edge_id:  # close its streams even if this replica saw it revoked already
            self._revoked(change.edge_id)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except StorageError:
                log.warning("reloading revocations failed; keeping the last list", exc_info=True)

    # ----------------------------------------------------------------- per call

    async def principal_for(
        self,
        method: str,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        context: grpc.aio.ServicerContext[object, object],
    ) -> Principal:
        """The caller of ``method``, or :class:`Refused` (audited)."""
        peer = context.peer() or ""
        auth = context.auth_context()
        certs = list(auth.get("x509_pem_cert") or ())
        if certs:
            principal = await self._from_certificate(certs[0], method, peer)
        else:
            principal = await self._from_api_key(metadata, method, peer)
        return principal

    async def _refuse(
        self, kind: AuditKind, subject: str, code: grpc.StatusCode, message: str, peer: str
    ) -> Refused:
        await self.audit.record(kind, subject, message, peer)
        return Refused(code, message)

    async def _from_certificate(self, pem: bytes, method: str, peer: str) -> Principal:
        now = self.security.clock()
        try:
            verified = self._verified.get(pem)
            if verified is None:
                verified = await self._verify(pem, now)
            self._check_current(verified, now)
        except CertificateError as exc:
            subject = _subject_of(pem)
            raise await self._refuse(
                AuditKind.CERTIFICATE_REFUSED,
                subject,
                grpc.StatusCode.UNAUTHENTICATED,
                f"client certificate refused: {exc}",
                peer,
            ) from exc
        identity = verified.identity
        subject = f"{identity.role}:{identity.id}"
        if identity.role == "edge":
            if method not in EDGE_METHODS:
                raise await self._refuse(
                    AuditKind.ACCESS_REFUSED,
                    subject,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"edge {identity.id} may not call {method}",
                    peer,
                )
            return Principal("edge", identity.id, frozenset(), frozenset({verified.site}))
        if identity.role == "integrator":
            needed = required_scope(method)
            if needed is not None and not integrator_allowed(frozenset({"*"}), needed):
                raise await self._refuse(
                    AuditKind.ACCESS_REFUSED,
                    subject,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"integrator {identity.id} may not call {method} (edges only)",
                    peer,
                )
            return Principal("integrator", identity.id)
        raise await self._refuse(
            AuditKind.ACCESS_REFUSED,
            subject,
            grpc.StatusCode.PERMISSION_DENIED,
            f"a {identity.role} certificate may not call {method}",
            peer,
        )

    async def _verify(self, pem: bytes, now: datetime) -> _Verified:
        identity = verify_chain(
            pem,
            self.security.intermediates,
            self.security.trust_roots,
            now,
            skew=self.security.skew,
            purpose="client",
        )
        cert = load_certificate(pem, "client certificate")
        site = ""
        if identity.role == "edge":
            try:
                edge = await self.ctx.run(self.ctx.storage.security.get_edge, identity.id)
            except NotFound as exc:
                raise CertificateError(f"edge {identity.id} is not known to this registry") from exc
            site = edge.site
            if edge.status is EdgeStatus.REVOKED:
                raise RevokedCertificate(f"edge {identity.id} is revoked")
        verified = _Verified(
            identity,
            f"{cert.serial_number:x}",
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            site,
        )
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[pem] = verified
        return verified

    def _check_current(self, verified: _Verified, now: datetime) -> None:
        skew = self.security.skew
        who = f"{verified.identity} (serial {verified.serial})"
        if now < verified.not_before - skew:
            raise NotYetValid(
                f"{who} is not valid before {verified.not_before.isoformat()} "
                f"(now {now.isoformat()}, skew allowed {skew})"
            )
        if now > verified.not_after + skew:
            raise ExpiredCertificate(
                f"{who} expired at {verified.not_after.isoformat()} "
                f"(now {now.isoformat()}, skew allowed {skew})"
            )
        state = self.revocations
        if verified.serial in state.serials:
            raise RevokedCertificate(f"{who} is revoked")
        if verified.identity.role == "edge" and verified.identity.id in state.edges:
            raise RevokedCertificate(f"{who}: edge {verified.identity.id} is revoked")

    async def _from_api_key(
        self,
        metadata: tuple[tuple[str, str | bytes], ...] | None,
        method: str,
        peer: str,
    ) -> Principal:
        text = _api_key_text(metadata)
        if not text:
            if method in PUBLIC_METHODS:
                return ANONYMOUS_PUBLIC
            raise await self._refuse(
                AuditKind.ACCESS_REFUSED,
                "anonymous",
                grpc.StatusCode.UNAUTHENTICATED,
                f"{method} needs a client certificate or an API key",
                peer,
            )
        parsed = parse_api_key(text)
        record = None
        if parsed is not None:
            record = await self.ctx.run(self.ctx.storage.security.get_api_key, parsed[0])
        if (
            parsed is None
            or record is None
            or record.revoked_ms
            or not api_key_matches(parsed[1], record.secret_sha256)
        ):
            key_id = parsed[0] if parsed else "malformed"
            raise await self._refuse(
                AuditKind.ACCESS_REFUSED,
                f"apikey:{key_id}",
                grpc.StatusCode.UNAUTHENTICATED,
                f"API key {key_id} refused: unknown, revoked or wrong secret",
                peer,
            )
        name: str = record.name
        scopes: frozenset[str] = record.scopes
        needed = required_scope(method)
        if needed is not None and not integrator_allowed(scopes, needed):
            raise await self._refuse(
                AuditKind.ACCESS_REFUSED,
                f"integrator:{name}",
                grpc.StatusCode.PERMISSION_DENIED,
                f"API key {name} lacks scope {needed} for {method} "
                f"(it has {', '.join(sorted(scopes)) or 'none'})",
                peer,
            )
        return Principal("integrator", name, scopes, frozenset({record.site}))


def _api_key_text(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == "x-api-key":
            return value
        if key == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
    return ""


def _subject_of(pem: bytes) -> str:
    try:
        return f"certificate:{load_certificate(pem).subject.rfc4514_string()}"
    except SecurityError:
        return "certificate:unreadable"
