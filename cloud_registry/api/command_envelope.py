"""The bytes a command envelope signs, shared by the registry (signer) and the edge (verifier).

The ``payload`` of a :mod:`security.commands` envelope for a
:class:`~cloud_registry.api.v1.common_pb2.Command` is a ``Command`` message holding only its
``id``, ``kind``, ``service`` and ``params`` fields, serialized by protobuf with
``deterministic=True`` (map entries sorted by key). The edge and device ids, the per-edge
``sequence``, a random nonce and the expiry are fields of the envelope itself. An edge checks
that the envelope's edge, device and sequence equal the command's, and that
:func:`command_payload` of the received command equals the envelope's payload.
"""

from __future__ import annotations

from cloud_registry.api.v1 import common_pb2

__all__ = ["command_payload"]


def command_payload(command: common_pb2.Command) -> bytes:
    """The signed payload of ``command`` (see the module docstring)."""
    signed = common_pb2.Command(id=command.id, kind=command.kind, service=command.service)
    for name, value in command.params.items():
        signed.params[name].CopyFrom(value)
    return signed.SerializeToString(deterministic=True)
