"""EnrollmentService (secure mode): certificates for edges, and the CRL.

* ``Enroll(token, csr)``: the token is checked (known, secret, unused, unexpired), the CSR
  checked and a certificate issued for the token's edge (the CSR's names are ignored), then the
  token is marked used with one conditional UPDATE (two enrollments racing with one token:
  one wins, the other gets UNAUTHENTICATED). A refused token is UNAUTHENTICATED and audited
  (``token_refused``); a bad CSR is INVALID_ARGUMENT.
* ``Renew(csr)`` over mTLS: a new certificate for the calling edge (audited ``renewed``).
* ``GetCrl``: the intermediate-signed CRL of every revoked serial.

Every issued certificate is recorded with its serial and end of validity, so that revoking the
edge revokes them all.
"""

from __future__ import annotations

from datetime import datetime

import grpc
from grpc import aio

from cloud_registry.api.v1 import security_pb2, security_pb2_grpc
from cloud_registry.server.authn import AuditLog
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.principal import current_principal
from cloud_registry.server.tls import ServerSecurity
from cloud_registry.storage.base import NotFound
from cloud_registry.storage.security_store import EdgeStatus, IssuedCertificate
from security.audit import AuditKind
from security.ca import CertificateAuthority
from security.errors import CsrInvalid, EnrollmentError, TokenInvalid, TokenReused
from security.identity import Identity, load_certificate
from security.tokens import check_token, parse_token

__all__ = ["EnrollmentServicer", "register"]

Context = aio.ServicerContext[object, object]
_MAX_CSR = 16 * 1024


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class EnrollmentServicer(security_pb2_grpc.EnrollmentServiceServicer):
    def __init__(self, ctx: ServiceContext, security: ServerSecurity, audit: AuditLog) -> None:
        self._ctx = ctx
        self._security = security
        self._audit = audit

    @property
    def _ca(self) -> CertificateAuthority:
        return self._security.ca

    async def _issue(self, edge_id: str, site: str, csr_pem: str) -> security_pb2.EnrollResponse:
        if len(csr_pem) > _MAX_CSR:
            raise CsrInvalid(f"CSR for edge {edge_id!r}: larger than {_MAX_CSR} bytes")
        security = self._security
        cert_pem = self._ca.issue_from_csr(
            csr_pem.encode("utf-8", "replace"),
            Identity("edge", edge_id),
            validity=security.leaf_validity,
        )
        cert = load_certificate(cert_pem, f"certificate of edge {edge_id}")
        not_after = cert.not_valid_after_utc
        record = IssuedCertificate(
            f"{cert.serial_number:x}", edge_id, _ms(security.clock()), _ms(not_after)
        )
        await self._ctx.run(self._ctx.storage.security.record_certificate, record)
        return security_pb2.EnrollResponse(
            edge_id=edge_id,
            site=site,
            certificate_pem=cert_pem.decode("ascii"),
            chain_pem=[pem.decode("ascii") for pem in self._ca.chain_pems],
            trust_roots_pem=[pem.decode("ascii") for pem in security.trust_roots],
            not_after_ms=_ms(not_after),
            command_keys_pem=security.command_keys_pem(),
        )

    async def Enroll(
        self, request: security_pb2.EnrollRequest, context: Context
    ) -> security_pb2.EnrollResponse:
        store = self._ctx.storage.security
        peer = context.peer() or ""
        now = self._security.clock()
        subject = "token:malformed"
        try:
            token_id, _secret = parse_token(request.token)
            subject = f"token:{token_id}"
            record = await self._ctx.run(store.get_token, token_id)
            if record is None:
                raise TokenInvalid(f"bootstrap token {token_id}: unknown")
            subject = f"edge:{record.edge_id}"
            check_token(request.token, record, now)
            edge = await self._ctx.run(store.get_edge, record.edge_id)
            if edge.status is EdgeStatus.REVOKED:
                raise TokenInvalid(f"edge {record.edge_id!r} is revoked")
        except (EnrollmentError, NotFound) as exc:
            await self._audit.record(AuditKind.TOKEN_REFUSED, subject, str(exc), peer)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"enrollment refused: {exc}")
            raise  # pragma: no cover - abort raises
        try:
            response = await self._issue(record.edge_id, record.site, request.csr_pem)
        except CsrInvalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem: {exc}")
            raise  # pragma: no cover
        if not await self._ctx.run(store.mark_token_used, token_id, _ms(now)):
            exc2 = TokenReused(f"bootstrap token {token_id} for edge {record.edge_id!r}: used")
            await self._audit.record(AuditKind.TOKEN_REFUSED, subject, str(exc2), peer)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"enrollment refused: {exc2}")
        await self._audit.record(
            AuditKind.ENROLLED,
            subject,
            f"edge {record.edge_id} of site {record.site} enrolled (token {token_id})",
            peer,
        )
        return response

    async def Renew(
        self, request: security_pb2.RenewRequest, context: Context
    ) -> security_pb2.EnrollResponse:
        principal = current_principal()
        if not principal.is_edge:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "only an edge may renew")
        edge = await self._ctx.run(self._ctx.storage.security.get_edge, principal.id)
        try:
            response = await self._issue(edge.edge_id, edge.site, request.csr_pem)
        except CsrInvalid as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"csr_pem: {exc}")
            raise  # pragma: no cover
        await self._audit.record(
            AuditKind.RENEWED,
            f"edge:{edge.edge_id}",
            f"edge {edge.edge_id} renewed its certificate (until {response.not_after_ms} ms)",
            context.peer() or "",
        )
        return response

    async def GetCrl(
        self, request: security_pb2.GetCrlRequest, context: Context
    ) -> security_pb2.GetCrlResponse:
        state = await self._ctx.run(self._ctx.storage.security.revocations)
        crl = self._ca.crl_builder().signed_crl(int(serial, 16) for serial in state.serials)
        return security_pb2.GetCrlResponse(crl_pem=crl.decode("ascii"))


def register(
    server: aio.Server, ctx: ServiceContext, security: ServerSecurity, audit: AuditLog
) -> None:
    security_pb2_grpc.add_EnrollmentServiceServicer_to_server(  # type: ignore[no-untyped-call]
        EnrollmentServicer(ctx, security, audit), server
    )
