"""SecurityAdminService: the audit log for operators and integrators with the admin scope
(the interceptor checks the scope). Events come oldest first; ``page_token`` is opaque."""

from __future__ import annotations

import grpc
from grpc import aio

from cloud_registry.api.v1 import security_pb2, security_pb2_grpc
from cloud_registry.server.context import ServiceContext

__all__ = ["SecurityAdminServicer", "register"]

Context = aio.ServicerContext[object, object]
DEFAULT_PAGE = 100
MAX_PAGE = 1000


class SecurityAdminServicer(security_pb2_grpc.SecurityAdminServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def ListAuditEvents(
        self, request: security_pb2.ListAuditEventsRequest, context: Context
    ) -> security_pb2.ListAuditEventsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"page_size: must be 0..{MAX_PAGE}"
            )
        token = request.page_token
        if token and not (token.isdigit() and len(token) < 19):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token")
        page = await self._ctx.run(
            self._ctx.storage.security.list_audit,
            kind=request.kind,
            subject=request.subject,
            since_ms=request.since_ms,
            after_id=int(token or 0),
            limit=request.page_size or DEFAULT_PAGE,
        )
        return security_pb2.ListAuditEventsResponse(
            events=[
                security_pb2.AuditEvent(
                    id=e.id,
                    time_ms=e.time_ms,
                    kind=e.kind,
                    subject=e.subject,
                    detail=e.detail,
                    peer=e.peer,
                )
                for e in page.items
            ],
            next_page_token=page.next_cursor,
        )


def register(server: aio.Server, ctx: ServiceContext) -> None:
    security_pb2_grpc.add_SecurityAdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
        SecurityAdminServicer(ctx), server
    )
