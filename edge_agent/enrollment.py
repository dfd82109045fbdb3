"""Enrollment and certificate renewal, the edge's side of ``EnrollmentService``.

::

    creds = await enroll("registry:7443", token, IdentityStore(folder), ca_pem=root_pem)
    creds = await renew("registry:7443", store)                 # over mTLS, current identity
    renewer = CertificateRenewer("registry:7443", store, on_renewed=uplink.reconnect)
    await renewer.run()                                          # a background task

:func:`enroll` makes a new P-256 key in a new generation of the identity folder (0600; it never
leaves the box), sends a CSR and the one-time token over one-way TLS that trusts only
``ca_pem`` (the registry's root, given at first contact), checks what comes back (the
certificate chains to the returned roots, names the edge, carries our key) and commits the
generation atomically. :func:`renew` does the same over the mTLS channel of the current
identity. :class:`CertificateRenewer` renews at two thirds of the certificate's lifetime, with
no person involved, retrying with backoff when the registry cannot be reached.

Errors (all :class:`EnrollmentError`, an :class:`~edge_agent.errors.AgentError`)::

    EnrollmentError
    +-- RegistryUnreachable      no TLS connection (down, wrong address, wrong CA file)
    +-- EnrollmentRefused        UNAUTHENTICATED / PERMISSION_DENIED: bad, used or expired token,
    |                            revoked edge; or a token for another edge than configured
    +-- BadEnrollmentResponse    what the registry sent does not check out
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpc import aio

from cloud_registry.api.v1 import security_pb2, security_pb2_grpc
from edge_agent.config import EdgeConfig
from edge_agent.errors import AgentError
from edge_agent.identity_store import (
    Credentials,
    IdentityError,
    IdentityStore,
    identity_store_for,
)
from security.errors import SecurityError
from security.identity import Identity, load_certificate, make_csr, renew_due
from security.verify import verify_chain

__all__ = [
    "BadEnrollmentResponse",
    "CertificateRenewer",
    "EnrollmentError",
    "EnrollmentRefused",
    "RegistryUnreachable",
    "enroll",
    "renew",
    "renewal_time",
    "renewer_for",
]

_log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
#: The CSR's name before the registry tells us ours (the CA ignores CSR names anyway).
_PENDING_ID = "pending-enrollment"


class EnrollmentError(AgentError):
    """Enrollment or renewal failed."""


class RegistryUnreachable(EnrollmentError):
    """No (TLS) connection to the registry."""


class EnrollmentRefused(EnrollmentError):
    """The registry refused: bad, used or expired token; unknown or revoked edge."""


class BadEnrollmentResponse(EnrollmentError):
    """The registry's answer does not check out (chain, identity, key)."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _spki(key: Any) -> bytes:
    data: bytes = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


@dataclass(frozen=True)
class _Checked:
    edge_id: str
    site: str
    cert_pem: bytes
    chain_pems: list[bytes]
    roots: list[bytes]
    command_keys: dict[str, bytes]


def _check_response(
    response: security_pb2.EnrollResponse,
    key: ec.EllipticCurvePrivateKey,
    fallback_roots: list[bytes],
    expected_edge: str | None,
    now: datetime,
    registry: str,
) -> _Checked:
    where = f"registry {registry}"
    if expected_edge is not None and response.edge_id != expected_edge:
        raise EnrollmentRefused(
            f"{where}: the token enrolls edge {response.edge_id!r}, but this edge is "
            f"{expected_edge!r}: use a token made for {expected_edge!r}"
        )
    cert_pem = response.certificate_pem.encode("ascii", "replace")
    chain = [c.encode("ascii", "replace") for c in response.chain_pem]
    roots = [r.encode("ascii", "replace") for r in response.trust_roots_pem] or fallback_roots
    try:
        cert = load_certificate(cert_pem, f"{where}: certificate")
        verify_chain(
            cert_pem, chain, roots, now, expected=Identity("edge", response.edge_id).check()
        )
    except (SecurityError, ValueError) as exc:
        raise BadEnrollmentResponse(f"{where}: the issued certificate is refused: {exc}") from exc
    if _spki(cert.public_key()) != _spki(key.public_key()):
        raise BadEnrollmentResponse(f"{where}: the issued certificate is not for our key")
    keys: dict[str, bytes] = {}
    for kid, pem in response.command_keys_pem.items():
        try:
            public = serialization.load_pem_public_key(pem.encode("ascii", "replace"))
        except (ValueError, TypeError) as exc:
            raise BadEnrollmentResponse(f"{where}: command key {kid!r} is unreadable") from exc
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise BadEnrollmentResponse(f"{where}: command key {kid!r} is not an EC key")
        keys[kid] = pem.encode("ascii")
    return _Checked(response.edge_id, response.site, cert_pem, chain, roots, keys)


def _translate(exc: aio.AioRpcError, registry: str, what: str) -> EnrollmentError:
    code, details = exc.code(), exc.details() or ""
    where = f"{what} at registry {registry}"
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return EnrollmentRefused(f"{where} refused ({code.name}): {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        hint = ""
        lowered = details.lower()
        if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered:
            hint = " (TLS handshake failed: is the CA file the registry's root?)"
        return RegistryUnreachable(f"{where}: cannot connect ({code.name}){hint}: {details}")
    return EnrollmentError(f"{where} failed ({code.name}): {details}")


async def _call(
    registry: str,
    credentials: grpc.ChannelCredentials,
    request: Any,
    method: str,
    timeout_s: float,
) -> security_pb2.EnrollResponse:
    async with aio.secure_channel(registry, credentials) as channel:
        stub: Any = security_pb2_grpc.EnrollmentServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            response: security_pb2.EnrollResponse = await getattr(stub, method)(
                request, timeout=timeout_s, wait_for_ready=False
            )
        except aio.AioRpcError as exc:
            raise _translate(exc, registry, method) from exc
    return response


async def enroll(
    registry: str,
    token: str,
    store: IdentityStore,
    *,
    ca_pem: bytes,
    edge_id: str | None = None,
    timeout_s: float = 15.0,
    clock: Clock = _utc_now,
) -> Credentials:
    """Enroll this box with a one-time ``token`` (see the module doc); ``edge_id``, when
    given, must be the edge the token was made for."""
    try:
        roots = [load_certificate(ca_pem, "CA file").public_bytes(serialization.Encoding.PEM)]
    except SecurityError as exc:
        raise EnrollmentError(str(exc)) from exc
    generation, key = store.new_generation()
    try:
        csr = make_csr(key, Identity("edge", edge_id or _PENDING_ID))
        request = security_pb2.EnrollRequest(token=token.strip(), csr_pem=csr.decode("ascii"))
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        response = await _call(registry, credentials, request, "Enroll", timeout_s)
        checked = _check_response(response, key, roots, edge_id, clock(), registry)
        creds = _commit(store, generation, checked)
    except BaseException:
        store.discard(generation)
        raise
    _log.info("enrolled as edge %s (site %s) at %s", creds.edge_id, creds.site, registry)
    return creds


def _commit(store: IdentityStore, generation: str, checked: _Checked) -> Credentials:
    return store.commit(
        generation,
        edge_id=checked.edge_id,
        site=checked.site,
        cert_pem=checked.cert_pem,
        chain_pems=checked.chain_pems,
        trust_roots_pems=checked.roots,
        command_keys=checked.command_keys,
    )


async def renew(
    registry: str,
    store: IdentityStore,
    *,
    timeout_s: float = 15.0,
    clock: Clock = _utc_now,
) -> Credentials:
    """A new key and certificate for the current identity, over mTLS with the current one."""
    current = store.load()
    generation, key = store.new_generation()
    try:
        csr = make_csr(key, Identity("edge", current.edge_id))
        request = security_pb2.RenewRequest(csr_pem=csr.decode("ascii"))
        response = await _call(registry, current.channel_credentials(), request, "Renew", timeout_s)
        checked = _check_response(
            response, key, list(current.trust_roots_pems), current.edge_id, clock(), registry
        )
        creds = _commit(store, generation, checked)
    except BaseException:
        store.discard(generation)
        raise
    _log.info(
        "edge %s: certificate renewed, valid until %s", creds.edge_id, creds.not_after.isoformat()
    )
    return creds


def renewal_time(creds: Credentials) -> datetime:
    """When two thirds of the certificate's lifetime have passed."""
    return creds.not_before + (creds.not_after - creds.not_before) * 2 / 3


class CertificateRenewer:
    """Renews the identity's certificate at two thirds of its life (see the module doc).

    ``on_renewed`` is called after each renewal (e.g. the uplink's ``reconnect``);
    ``check_s`` bounds each wait, so a ``clock`` moved forward (tests) is noticed.
    """

    def __init__(
        self,
        registry: str,
        store: IdentityStore,
        *,
        on_renewed: Callable[[Credentials], None] | None = None,
        clock: Clock = _utc_now,
        check_s: float = 60.0,
        retry_initial_s: float = 5.0,
        retry_max_s: float = 900.0,
        timeout_s: float = 15.0,
    ) -> None:
        self.registry = registry
        self.store = store
        self._on_renewed = on_renewed
        self._clock = clock
        self.check_s = check_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.timeout_s = timeout_s
        self.renewals = 0
        self.failures = 0
        self.last_error = ""

    def due(self, creds: Credentials) -> bool:
        return renew_due(creds.cert_pem, self._clock())

    async def run(self) -> None:
        """Until cancelled: wait for the renewal time, renew, repeat."""
        attempt = 0
        while True:
            try:
                creds = await asyncio.to_thread(self.store.load)
            except IdentityError as exc:
                self.last_error = str(exc)
                _log.error("certificate renewal stopped: %s", exc)
                return
            if not self.due(creds):
                wait = (renewal_time(creds) - self._clock()).total_seconds()
                await asyncio.sleep(min(max(wait, 0.0), self.check_s))
                continue
            try:
                renewed = await renew(
                    self.registry, self.store, timeout_s=self.timeout_s, clock=self._clock
                )
            except (EnrollmentError, IdentityError) as exc:
                self.failures += 1
                self.last_error = str(exc)
                delay = min(self.retry_max_s, self.retry_initial_s * 2.0 ** min(attempt, 32))
                attempt += 1
                left = creds.not_after - self._clock()
                _log.warning(
                    "edge %s: certificate renewal failed (%s); retry in %.0fs, %s left",
                    creds.edge_id,
                    exc,
                    delay,
                    left if left > timedelta(0) else "EXPIRED",
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.renewals += 1
            self.last_error = ""
            if self._on_renewed is not None:
                self._on_renewed(renewed)


def renewer_for(
    config: EdgeConfig, on_renewed: Callable[[Credentials], None] | None = None
) -> CertificateRenewer | None:
    """The agent's renewer, when its credentials come from the identity folder."""
    store = identity_store_for(config)
    if store is None:
        return None
    return CertificateRenewer(config.registry.address, store, on_renewed=on_renewed)
