"""Signing the commands a secure registry sends to its edges (:mod:`security.commands`).

The envelope covers the edge, the device, the payload (``command_payload``: id, kind, service,
params), the command's per-edge ``sequence``, a random nonce and an expiry:
the command's own expiry, capped at ``ServerSecurity.envelope_ttl`` from now (edges refuse an
expiry more than an hour ahead).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cloud_registry.api.command_envelope import command_payload
from cloud_registry.api.v1 import common_pb2
from cloud_registry.server.tls import ServerSecurity

__all__ = ["sign_command"]


def sign_command(security: ServerSecurity, command: common_pb2.Command) -> bytes:
    """The envelope of ``command`` (to put in ``Command.envelope``)."""
    now = security.clock()
    expires = now + security.envelope_ttl
    if command.expires_ms > 0:
        expires = min(expires, datetime.fromtimestamp(command.expires_ms / 1000, UTC))
    return security.signer.sign(
        command.edge_id,
        command.device_id,
        command_payload(command),
        command.sequence,
        expires,
    )
