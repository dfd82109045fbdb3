"""Who is calling: one interceptor resolves the caller of every RPC into a :class:`Principal`.

Servicers read it with :func:`current_principal`. In secure mode the interceptor is given an
:class:`~cloud_registry.server.authn.Authenticator`: the caller is the identity of its verified
client certificate or API key, and a refused call is aborted (UNAUTHENTICATED or
PERMISSION_DENIED) before the servicer runs. In plain-text mode (``--insecure`` only) the
caller is named by request metadata: ``x-edge-id`` for an edge agent, ``x-principal`` for an
integrator (default ``anonymous``), trusted as given.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

if TYPE_CHECKING:
    from cloud_registry.server.authn import Authenticator

__all__ = [
    "IdentityInterceptor",
    "Principal",
    "current_principal",
    "resolve_principal",
]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of an RPC. ``kind`` is ``edge`` or ``integrator``; ``sites`` None means all."""

    kind: str
    id: str
    scopes: frozenset[str] = frozenset({"*"})
    sites: frozenset[str] | None = None

    @property
    def is_edge(self) -> bool:
        return self.kind == "edge"

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


ANONYMOUS = Principal("integrator", "anonymous")
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "registry_principal", default=ANONYMOUS
)


def current_principal() -> Principal:
    """The caller of the RPC being served."""
    return _current.get()


def resolve_principal(metadata: tuple[tuple[str, str | bytes], ...] | None) -> Principal:
    """The caller named by plain-text metadata (see module docstring)."""
    values = {key: value for key, value in metadata or () if isinstance(value, str)}
    edge_id = values.get("x-edge-id", "")
    if edge_id:
        return Principal("edge", edge_id)
    return Principal("integrator", values.get("x-principal", "") or "anonymous")


Behavior = Callable[..., Any]


class IdentityInterceptor(aio.ServerInterceptor):
    """Sets the current principal around every handler (unary and streaming alike); with an
    ``authenticator``, authenticates and authorizes every call first."""

    def __init__(self, authenticator: Authenticator | None = None) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        metadata = handler_call_details.invocation_metadata
        auth = self.authenticator
        if auth is None:
            principal = resolve_principal(metadata)

            async def plain(_context: Any) -> Principal:
                return principal

            return _wrap(handler, plain)
        method = handler_call_details.method

        async def secure(context: Any) -> Principal:
            from cloud_registry.server.authn import Refused

            try:
                return await auth.principal_for(method, metadata, context)
            except Refused as exc:
                await context.abort(exc.code, exc.message)
                raise  # pragma: no cover - abort raises

        return _wrap(handler, secure)


Resolver = Callable[[Any], Awaitable[Principal]]


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], resolve: Resolver
) -> grpc.RpcMethodHandler[Any, Any]:
    def unary(behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: Any) -> Any:
            token = _current.set(await resolve(context))
            try:
                return await behavior(request, context)
            finally:
                _current.reset(token)

        return wrapped

    def streaming(behavior: Behavior) -> Behavior:
        async def wrapped(request: Any, context: Any) -> Any:
            token = _current.set(await resolve(context))
            try:
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):  # an async generator yields the responses
                    async for item in result:
                        yield item
                else:  # a coroutine that writes with context.write (e.g. health Watch)
                    await result
            finally:
                _current.reset(token)

        return wrapped

    h: Any = handler
    if h.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            unary(h.unary_unary), h.request_deserializer, h.response_serializer
        )
    if h.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            unary(h.stream_unary), h.request_deserializer, h.response_serializer
        )
    if h.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            streaming(h.unary_stream), h.request_deserializer, h.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        streaming(h.stream_stream), h.request_deserializer, h.response_serializer
    )
