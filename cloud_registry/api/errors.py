"""The exceptions of the registry client, translated once from gRPC status codes.

Every failed call raises a :class:`RegistryError`; the gRPC error it came from is its
``__cause__``. The tree::

    RegistryError                   any other or unknown status (``code`` names it)
    ├── InvalidArgument             INVALID_ARGUMENT; ``violations`` lists each problem
    ├── NotFound                    NOT_FOUND
    ├── AlreadyExists               ALREADY_EXISTS
    ├── PreconditionFailed          FAILED_PRECONDITION (e.g. a version bump too small)
    │   └── StaleRevision           FAILED_PRECONDITION for a stale ``expected_revision``
    ├── PermissionDenied            PERMISSION_DENIED
    ├── Unauthenticated             UNAUTHENTICATED
    ├── ResourceExhausted           RESOURCE_EXHAUSTED
    ├── Unavailable                 UNAVAILABLE: the registry cannot be reached (retry later)
    ├── DeadlineExceeded            DEADLINE_EXCEEDED
    └── OutOfRange                  OUT_OF_RANGE (e.g. a watch resume token past retention)

The rich status the server attaches (``grpc-status-details-bin``) is read with
:func:`grpc_status.rpc_status.from_call`: ``google.rpc.BadRequest`` gives the field violations,
``google.rpc.PreconditionFailure`` and ``google.rpc.ErrorInfo`` tell a stale revision apart.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import grpc
from grpc_status import rpc_status

# googleapis-common-protos ships no type information: its messages are used as Any.
_details_pb2: Any = importlib.import_module("google.rpc.error_details_pb2")

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionFailed",
    "RegistryError",
    "ResourceExhausted",
    "StaleRevision",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem of a rejected request: where (``field``, a path) and what."""

    field: str
    description: str

    def __str__(self) -> str:
        return ": ".join(part for part in (self.field, self.description) if part)


class RegistryError(Exception):
    """Base of every error the registry client raises.

    ``code`` is the gRPC status code name (``"NOT_FOUND"``...), ``message`` the server's
    text, ``violations`` the problems it listed (``google.rpc.BadRequest`` field violations or
    ``google.rpc.PreconditionFailure`` violations), ``reason`` and ``metadata`` its
    ``google.rpc.ErrorInfo`` when there is one.
    """

    #: The status code name of this class (``code`` unless given).
    default_code: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        violations: tuple[FieldViolation, ...] = (),
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.violations = violations
        self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        head = self.message or self.code
        if type(self) is RegistryError and self.message:
            head = f"{self.code}: {self.message}"
        lines = [head]
        lines.extend(f"  {v}" for v in self.violations if str(v) not in self.message)
        return "\n".join(lines)


class InvalidArgument(RegistryError):
    """The request was rejected as invalid; ``violations`` says where and why."""

    default_code = "INVALID_ARGUMENT"


class NotFound(RegistryError):
    """The model, device, twin, event or command does not exist."""

    default_code = "NOT_FOUND"


class AlreadyExists(RegistryError):
    """A record with that key exists (e.g. a device id, a model version with another text)."""

    default_code = "ALREADY_EXISTS"


class PreconditionFailed(RegistryError):
    """The system is not in the state the request needs (e.g. a version bump too small)."""

    default_code = "FAILED_PRECONDITION"


class StaleRevision(PreconditionFailed):
    """``expected_revision`` did not match: someone changed the record since it was read.
    ``current`` is the stored revision when the server said it (else None)."""

    @property
    def current(self) -> int | None:
        text = self.metadata.get("current_revision") or self.metadata.get("current")
        try:
            return int(text) if text else None
        except ValueError:
            return None


class PermissionDenied(RegistryError):
    """The caller may not do this."""

    default_code = "PERMISSION_DENIED"


class Unauthenticated(RegistryError):
    """The caller's credentials are missing or invalid."""

    default_code = "UNAUTHENTICATED"


class ResourceExhausted(RegistryError):
    """A quota, rate limit or size limit was hit."""

    default_code = "RESOURCE_EXHAUSTED"


class Unavailable(RegistryError):
    """The registry cannot be reached or is shutting down; retrying later may succeed."""

    default_code = "UNAVAILABLE"


class DeadlineExceeded(RegistryError):
    """The call did not finish in time. A waited command goes on: ``command_id`` names it
    (query it with ``get_command``)."""

    default_code = "DEADLINE_EXCEEDED"

    @property
    def command_id(self) -> str:
        return self.metadata.get("command_id", "")


class OutOfRange(RegistryError):
    """A cursor or resume token is outside what the registry retains."""

    default_code = "OUT_OF_RANGE"


_BY_CODE: dict[grpc.StatusCode, type[RegistryError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: PreconditionFailed,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
}


def _rich_status(exc: grpc.RpcError) -> Any:
    """The ``google.rpc.Status`` the server attached, or None. A call failed before reaching
    the server has none; one whose detail disagrees with the call's code is ignored."""
    with contextlib.suppress(Exception):
        return rpc_status.from_call(cast(grpc.Call, exc))
    return None


def from_rpc_error(exc: grpc.RpcError) -> RegistryError:
    """The :class:`RegistryError` for a failed call (sync ``grpc.RpcError`` or
    ``grpc.aio.AioRpcError``); raise it ``from exc``."""
    call: Any = exc
    try:
        code: grpc.StatusCode = call.code()
        message: str = call.details() or ""
    except AttributeError:  # an RpcError that is not a Call (should not happen)
        return RegistryError(str(exc))
    violations: list[FieldViolation] = []
    reason = ""
    metadata: dict[str, str] = {}
    stale = False
    status = _rich_status(exc)
    for detail in status.details if status is not None else ():
        if detail.Is(_details_pb2.BadRequest.DESCRIPTOR):
            bad = _details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(_details_pb2.ErrorInfo.DESCRIPTOR):
            info = _details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
            metadata.update(info.metadata)
            stale = stale or "REVISION" in info.reason.upper()
        elif detail.Is(_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = _details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            stale = stale or any("REVISION" in p.type.upper() for p in failure.violations)
            violations.extend(
                FieldViolation(p.subject, p.description)
                for p in failure.violations
                if "REVISION" not in p.type.upper()
            )
    cls = _BY_CODE.get(code, RegistryError)
    if cls is PreconditionFailed and (stale or "revision" in message.lower()):
        cls = StaleRevision
    code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
    return cls(
        message, code=code_name, violations=tuple(violations), reason=reason, metadata=metadata
    )
