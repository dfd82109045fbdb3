"""One translation point from exceptions to gRPC statuses, for every servicer.

Servicers raise; :func:`handle_errors` (unary methods) and :func:`handle_stream_errors`
(server-streaming methods) catch and end the RPC with the status below, attaching a
``google.rpc.Status`` (``grpc-status-details-bin``) with details a client can read back with
``grpc_status.rpc_status.from_call``:

==========================================  ======================  ============================
exception                                   status                  details
==========================================  ======================  ============================
:class:`ServiceError` (and subclasses)      its ``code``            its violations / info
``thing_models.ModelLoadError``             INVALID_ARGUMENT        BadRequest: one violation
(``HostileInputError`` included)                                    per diagnostic (``field`` =
                                                                    path, else file:line:column)
``thing_models.TelemetryValidationError``   INVALID_ARGUMENT        BadRequest: one per issue
``thing_models.VersionBumpError``           FAILED_PRECONDITION     PreconditionFailure
                                                                    ``VERSION_BUMP``
``thing_models.UnresolvedReferenceError``   FAILED_PRECONDITION     PreconditionFailure
                                                                    ``UNRESOLVED_REFERENCE``
``thing_models.MessageError``               INVALID_ARGUMENT        BadRequest
storage ``StaleRevision``                   FAILED_PRECONDITION     ErrorInfo ``STALE_REVISION``
                                                                    (metadata
                                                                    ``current_revision``) and
                                                                    PreconditionFailure
storage ``InvalidCursor``                   INVALID_ARGUMENT        BadRequest ``page_token``
storage ``NotFound``                        NOT_FOUND
storage ``AlreadyExists``                   ALREADY_EXISTS
storage ``StorageUnavailable``              UNAVAILABLE
any other exception                         INTERNAL                none; logged with traceback,
                                                                    the client sees a generic
                                                                    text only
==========================================  ======================  ============================

Statuses travel in HTTP/2 trailers, which peers cap (8 KiB by default), so the message is cut
to :data:`MAX_MESSAGE_CHARS` characters and details to :data:`MAX_DETAILS_BYTES` bytes (the
violations that do not fit are counted in a last one).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc import aio
from grpc_status import rpc_status

from cloud_registry.storage.base import (
    AlreadyExists,
    NotFound,
    StaleRevision,
    StorageError,
    StorageUnavailable,
)
from cloud_registry.storage.cursors import InvalidCursor
from thing_models.errors import (
    Diagnostic,
    MessageError,
    ModelLoadError,
    TelemetryValidationError,
    UnresolvedReferenceError,
    VersionBumpError,
)

__all__ = [
    "DOMAIN",
    "MAX_DETAILS_BYTES",
    "MAX_MESSAGE_CHARS",
    "FailedPrecondition",
    "InvalidArgument",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceError",
    "Unavailable",
    "Violation",
    "abort",
    "handle_errors",
    "handle_stream_errors",
    "status_for",
]

log = logging.getLogger(__name__)

#: ``google.rpc.ErrorInfo.domain`` of this registry's errors.
DOMAIN = "registry.community-iot-edge"
MAX_MESSAGE_CHARS = 1000
MAX_DETAILS_BYTES = 3000
_MAX_DESCRIPTION_CHARS = 300
_MAX_FIELD_CHARS = 200


# --------------------------------------------------------------------------- service errors


@dataclass(frozen=True, slots=True)
class Violation:
    """One problem of a request (``field``: a path such as ``device.labels.floor``) or one
    unmet precondition (``field``: its subject, ``kind``: its type such as ``VERSION_BUMP``)."""

    field: str
    description: str
    kind: str = ""


class ServiceError(Exception):
    """An RPC failure with a status code, a message, and optional details. Raise it (or a
    subclass) from a servicer or a helper; :func:`handle_errors` turns it into the status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        violations: Sequence[Violation] = (),
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        code: grpc.StatusCode | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        self.reason = reason
        self.metadata = dict(metadata or {})
        if code is not None:
            self.code = code


class InvalidArgument(ServiceError):
    """INVALID_ARGUMENT; ``violations`` go into a ``google.rpc.BadRequest``."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def field(cls, field: str, description: str) -> InvalidArgument:
        """One bad field: the message is ``field: description``."""
        return cls(f"{field}: {description}", violations=[Violation(field, description)])

    @classmethod
    def fields(cls, violations: Sequence[Violation]) -> InvalidArgument:
        """Several bad fields; the message names the first and counts the others."""
        first = violations[0]
        message = f"{first.field}: {first.description}" if first.field else first.description
        if len(violations) > 1:
            message += f" (and {len(violations) - 1} more problem(s))"
        return cls(message, violations=violations)


class FailedPrecondition(ServiceError):
    """FAILED_PRECONDITION; ``violations`` go into a ``google.rpc.PreconditionFailure``."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(ServiceError):
    code = grpc.StatusCode.OUT_OF_RANGE


class PermissionDenied(ServiceError):
    """PERMISSION_DENIED: the caller is known but may not do this (e.g. another site)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- mapping


def status_for(exc: BaseException) -> status_pb2.Status:
    """The ``google.rpc.Status`` an exception ends an RPC with (pure; logs nothing)."""
    if isinstance(exc, ServiceError):
        return _status(exc.code, exc.message, _details(exc))
    if isinstance(exc, ModelLoadError):
        violations = [_diagnostic_violation(d) for d in exc.diagnostics]
        if not violations:
            violations = [Violation("document", "invalid model")]
        return _status(
            grpc.StatusCode.INVALID_ARGUMENT,
            _summary("invalid model", violations),
            [_bad_request(violations)],
        )
    if isinstance(exc, TelemetryValidationError):
        violations = [
            Violation(str(getattr(i, "path", "") or ""), str(getattr(i, "message", i)))
            for i in exc.issues
        ] or [Violation("", str(exc))]
        return _status(
            grpc.StatusCode.INVALID_ARGUMENT,
            _summary("invalid values", violations),
            [_bad_request(violations)],
        )
    if isinstance(exc, MessageError):
        violations = [Violation("", str(exc))]
        return _status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), [_bad_request(violations)])
    if isinstance(exc, VersionBumpError):
        lines = str(exc).splitlines()
        violations = [Violation(line.strip(), "", "VERSION_BUMP") for line in lines[1:]]
        if not violations:
            violations = [Violation("version", lines[0] if lines else "", "VERSION_BUMP")]
        return _status(
            grpc.StatusCode.FAILED_PRECONDITION,
            str(exc),
            [_precondition(violations)],
        )
    if isinstance(exc, UnresolvedReferenceError):
        violation = Violation(exc.reference, exc.detail, "UNRESOLVED_REFERENCE")
        return _status(grpc.StatusCode.FAILED_PRECONDITION, str(exc), [_precondition([violation])])
    if isinstance(exc, StaleRevision):
        info = error_details_pb2.ErrorInfo(
            reason="STALE_REVISION",
            domain=DOMAIN,
            metadata={"current_revision": str(exc.current)},
        )
        message = f"stale revision: {exc} (current revision is {exc.current})"
        failure = _precondition([Violation("expected_revision", message, "STALE_REVISION")])
        return _status(grpc.StatusCode.FAILED_PRECONDITION, message, [info, failure])
    if isinstance(exc, InvalidCursor):
        violations = [Violation("page_token", f"{exc}; use a token from a previous response")]
        return _status(
            grpc.StatusCode.INVALID_ARGUMENT, f"page_token: {exc}", [_bad_request(violations)]
        )
    if isinstance(exc, NotFound):
        return _status(grpc.StatusCode.NOT_FOUND, str(exc) or "not found", [])
    if isinstance(exc, AlreadyExists):
        return _status(grpc.StatusCode.ALREADY_EXISTS, str(exc) or "already exists", [])
    if isinstance(exc, StorageUnavailable):
        return _status(grpc.StatusCode.UNAVAILABLE, "storage unavailable; retry later", [])
    if isinstance(exc, StorageError):
        return _status(grpc.StatusCode.INTERNAL, "internal storage error", [])
    return _status(grpc.StatusCode.INTERNAL, "internal error", [])


def _is_internal(exc: BaseException) -> bool:
    known = (
        ServiceError,
        ModelLoadError,
        TelemetryValidationError,
        MessageError,
        VersionBumpError,
        UnresolvedReferenceError,
        NotFound,
        AlreadyExists,
        StaleRevision,
        StorageUnavailable,
        InvalidCursor,
    )
    return not isinstance(exc, known)


def _summary(head: str, violations: Sequence[Violation]) -> str:
    first = violations[0]
    text = f"{first.field}: {first.description}" if first.field else first.description
    more = f" (and {len(violations) - 1} more problem(s))" if len(violations) > 1 else ""
    return f"{head}: {text}{more}"


def _diagnostic_violation(diag: Diagnostic) -> Violation:
    where = diag.path or str(diag.location)
    text = diag.message
    if diag.expected:
        text += f"; expected {diag.expected}"
    if diag.hint:
        text += f"; {diag.hint}"
    if diag.path and diag.location.line > 0:
        text += f" (at {diag.location})"
    return Violation(where, text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _details(exc: ServiceError) -> list[Any]:
    details: list[Any] = []
    if exc.reason:
        details.append(
            error_details_pb2.ErrorInfo(reason=exc.reason, domain=DOMAIN, metadata=exc.metadata)
        )
    if exc.violations:
        if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
            details.append(_bad_request(exc.violations))
        else:
            details.append(_precondition(exc.violations))
    return details


def _bad_request(violations: Iterable[Violation]) -> error_details_pb2.BadRequest:
    out = error_details_pb2.BadRequest()
    _fill(
        violations,
        lambda v: out.field_violations.add(
            field=_cut(v.field, _MAX_FIELD_CHARS),
            description=_cut(v.description, _MAX_DESCRIPTION_CHARS),
        ),
        lambda: out.ByteSize(),
        lambda: out.field_violations.pop(),
        lambda n: out.field_violations.add(field="", description=f"... and {n} more"),
    )
    return out


def _precondition(violations: Iterable[Violation]) -> error_details_pb2.PreconditionFailure:
    out = error_details_pb2.PreconditionFailure()
    _fill(
        violations,
        lambda v: out.violations.add(
            type=v.kind or "PRECONDITION",
            subject=_cut(v.field, _MAX_FIELD_CHARS),
            description=_cut(v.description, _MAX_DESCRIPTION_CHARS),
        ),
        lambda: out.ByteSize(),
        lambda: out.violations.pop(),
        lambda n: out.violations.add(type="TRUNCATED", description=f"... and {n} more"),
    )
    return out


def _fill(
    violations: Iterable[Violation],
    add: Callable[[Violation], object],
    size: Callable[[], int],
    pop: Callable[[], object],
    more: Callable[[int], object],
) -> None:
    items = list(violations)
    for index, violation in enumerate(items):
        add(violation)
        if size() > MAX_DETAILS_BYTES - 100:
            pop()
            more(len(items) - index)
            return


def _status(code: grpc.StatusCode, message: str, details: Iterable[Any]) -> status_pb2.Status:
    number = code.value[0]
    status = status_pb2.Status(code=number, message=_cut(message, MAX_MESSAGE_CHARS))
    for detail in details:
        status.details.add().Pack(detail)
    return status


# --------------------------------------------------------------------------- aborting


async def abort(context: aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    """End the RPC with the status of ``exc`` (logging unexpected ones with traceback)."""
    if _is_internal(exc):
        log.error("unexpected error serving an RPC", exc_info=exc)
    await context.abort_with_status(rpc_status.to_status(status_for(exc)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


_S = TypeVar("_S")
_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Ctx = TypeVar("_Ctx", bound="aio.ServicerContext[Any, Any]")


def handle_errors(
    method: Callable[[_S, _Req, _Ctx], Coroutine[Any, Any, _Resp]],
) -> Callable[[_S, _Req, _Ctx], Coroutine[Any, Any, _Resp]]:
    """Decorate a unary servicer method: exceptions become statuses (see module docstring)."""

    @functools.wraps(method)
    async def wrapper(self: _S, request: _Req, context: _Ctx) -> _Resp:
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, aio.AbortError):
            raise
        except Exception as exc:  # the one translation point
            await abort(context, exc)

    return wrapper


def handle_stream_errors(
    method: Callable[[_S, _Req, _Ctx], AsyncIterator[_Resp]],
) -> Callable[[_S, _Req, _Ctx], AsyncIterator[_Resp]]:
    """Decorate a server-streaming servicer method (an async generator)."""

    @functools.wraps(method)
    async def wrapper(self: _S, request: _Req, context: _Ctx) -> AsyncIterator[_Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except (asyncio.CancelledError, aio.AbortError):
            raise
        except Exception as exc:
            await abort(context, exc)

    return wrapper
