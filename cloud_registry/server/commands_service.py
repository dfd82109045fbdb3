"""Commands: set properties or invoke a service on a device, routed to the edge that owns it.

``SendCommand`` validates the parameters against the device's (flattened) model, stores the
command QUEUED and, when ``wait`` is set, follows it through the change hub until it reaches a
final status or the wait runs out. Delivery is the edge sync service's business: every replica
whose sync session owns the device's edge picks the new command off the change feed (so a
command submitted on replica A reaches an edge connected to replica B, through the shared
database), writes it to the stream and marks it SENT; the edge's ``CommandResult`` makes it
final. A queued command not delivered and answered before ``expires_ms`` is marked EXPIRED by
the expiry loop (:func:`start_background`).

Errors: unknown device or command NOT_FOUND; bad parameters INVALID_ARGUMENT with one
``google.rpc.BadRequest`` field violation per problem (``params.setpoint``, ``service``...);
``OFFLINE_POLICY_FAIL_FAST`` with no live connection of the edge UNAVAILABLE; a waited command
still pending at the deadline DEADLINE_EXCEEDED naming the command id (message and trailing
metadata ``x-command-id``): it goes on and can be queried with ``GetCommand``.

Wiring (the app calls both)::

    commands_service.register(server, ctx)       # adds the servicer
    task = commands_service.start_background(ctx)  # expiry loop; cancel it on shutdown

``start_background`` is idempotent per context, ``register`` calls it when an event loop is
running, and the servicer calls it on first use, so forgetting it cannot leave commands
unexpired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import grpc
from grpc import aio

from cloud_registry.api.v1 import commands_pb2, commands_pb2_grpc, common_pb2
from cloud_registry.server.authn import site_denied
from cloud_registry.server.change_hub import SubscriberOverflow, Subscription
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.convert import check_id, command_kind_from_pb, command_to_pb
from cloud_registry.server.errors import (
    FailedPrecondition,
    InvalidArgument,
    ServiceError,
    Unavailable,
    Violation,
    handle_errors,
)
from cloud_registry.server.models_service import ModelCatalog
from cloud_registry.server.principal import current_principal
from cloud_registry.storage.base import (
    ChangeEntry,
    ChangeKind,
    CommandEntry,
    CommandStatus,
    NotFound,
)
from thing_models.errors import MessageError
from thing_models.messages import new_message_id, value_from_protobuf
from thing_models.model import Access

__all__ = [
    "CommandServiceServicer",
    "command_from_payload",
    "register",
    "start_background",
]

log = logging.getLogger(__name__)

#: How often the expiry loop marks overdue commands EXPIRED.
EXPIRY_INTERVAL_S = 1.0

#: Final statuses an edge may answer with, by wire number.
RESULT_STATUSES: dict[int, CommandStatus] = {
    common_pb2.COMMAND_STATUS_SUCCEEDED: CommandStatus.SUCCEEDED,
    common_pb2.COMMAND_STATUS_FAILED: CommandStatus.FAILED,
    common_pb2.COMMAND_STATUS_REJECTED: CommandStatus.REJECTED,
}
_FINAL_TEXTS = frozenset(s.value for s in CommandStatus if s.final)


# --------------------------------------------------------------------------- conversions


def command_from_payload(payload: Mapping[str, Any]) -> CommandEntry:
    """The command carried by a COMMAND_UPDATED change (its fields as plain data)."""
    return CommandEntry(
        id=str(payload["id"]),
        device_id=str(payload.get("device_id", "")),
        edge_id=str(payload.get("edge_id", "")),
        kind=str(payload.get("kind", "")),
        service=str(payload.get("service", "") or ""),
        params=dict(payload.get("params") or {}),
        status=CommandStatus(payload.get("status", CommandStatus.QUEUED.value)),
        created_ms=int(payload.get("created_ms", 0)),
        expires_ms=int(payload.get("expires_ms", 0)),
        updated_ms=int(payload.get("updated_ms", 0)),
        result=dict(payload.get("result") or {}),
        error=str(payload.get("error", "") or ""),
        sequence=int(payload.get("sequence", 0)),
    )


# --------------------------------------------------------------------------- models


# --------------------------------------------------------------------------- the servicer


def _validate(
    models: ModelCatalog, model_ref: str, request: commands_pb2.SendCommandRequest
) -> tuple[str, dict[str, Any]]:
    """(kind, params as plain data) of a valid request; raises InvalidArgument."""
    violations: list[Violation] = []
    params: dict[str, Any] = {}
    for key, value in request.params.items():
        try:
            params[key] = value_from_protobuf(value, f"params.{key}")
        except MessageError as exc:
            violations.append(Violation(f"params.{key}", str(exc).partition(": ")[2] or str(exc)))
    kind = command_kind_from_pb(request.kind)
    try:
        model = models.flat(model_ref)
        validator = models.validator(model_ref)
    except NotFound as exc:
        raise FailedPrecondition(
            f"the model {model_ref} of device {request.device_id} is not published"
        ) from exc
    if kind == "set_properties":
        if request.service:
            violations.append(Violation("service", "only for COMMAND_KIND_INVOKE_SERVICE"))
        if not request.params:
            violations.append(Violation("params", "name at least one property to set"))
        for key, value in params.items():
            prop = model.property(key)
            if prop is None:
                violations.append(
                    Violation(f"params.{key}", f"model {model.name} has no property {key}")
                )
            elif prop.access is not Access.READ_WRITE:
                violations.append(Violation(f"params.{key}", f"property {key} is read-only"))
            else:
                issue = validator.check_value(key, value)
                if issue is not None:
                    violations.append(Violation(f"params.{issue.path or key}", issue.message))
    else:
        if not request.service:
            violations.append(Violation("service", "required for COMMAND_KIND_INVOKE_SERVICE"))
        elif model.service(request.service) is None:
            violations.append(
                Violation("service", f"model {model.name} has no service {request.service}")
            )
        elif not violations:
            for issue in validator.check_service_input(request.service, params):
                path = f"params.{issue.path}" if issue.path else "params"
                violations.append(Violation(path, issue.message))
    if violations:
        raise InvalidArgument.fields(violations)
    return kind, params


class CommandServiceServicer(commands_pb2_grpc.CommandServiceServicer):
    """SendCommand and GetCommand over the storage and change hub of one replica."""

    def __init__(self, ctx: ServiceContext, models: ModelCatalog | None = None) -> None:
        self._ctx = ctx
        self._models = models or ModelCatalog(ctx.storage)

    @handle_errors
    async def SendCommand(
        self,
        request: commands_pb2.SendCommandRequest,
        context: aio.ServicerContext[commands_pb2.SendCommandRequest, common_pb2.Command],
    ) -> common_pb2.Command:
        ctx = self._ctx
        start_background(ctx)
        storage = ctx.storage
        settings = ctx.settings
        check_id(request.device_id, "device_id")
        if request.ttl_ms < 0:
            raise InvalidArgument.field("ttl_ms", "must not be negative")
        if request.timeout_ms < 0:
            raise InvalidArgument.field("timeout_ms", "must not be negative")
        device = await ctx.run(storage.get_device, request.device_id)
        principal = current_principal()
        if principal.sites is not None and device.site not in principal.sites:
            raise await ctx.run(site_denied, ctx, f"device {request.device_id}", device.site)
        kind, params = await ctx.run(_validate, self._models, device.model, request)
        now = ctx.now_ms()
        if request.offline == commands_pb2.OFFLINE_POLICY_FAIL_FAST:
            holder = None
            if device.edge_id:
                holder = await ctx.run(
                    storage.edge_connection, device.edge_id, now, int(settings.edge_lease_s * 1000)
                )
            if holder is None:
                raise Unavailable(
                    f"edge {device.edge_id or '(none)'} of device {device.id} is not connected",
                    reason="EDGE_OFFLINE",
                    metadata={"edge_id": device.edge_id},
                )
        ttl_ms = request.ttl_ms or int(settings.default_command_ttl_s * 1000)
        entry = CommandEntry(
            id=new_message_id(now),
            device_id=device.id,
            edge_id=device.edge_id,
            kind=kind,
            service=request.service,
            params=params,
            status=CommandStatus.QUEUED,
            created_ms=now,
            expires_ms=now + ttl_ms,
            updated_ms=now,
        )
        if not request.wait:
            return command_to_pb(await ctx.run(storage.create_command, entry))
        command_id = entry.id

        def matches(change: ChangeEntry) -> bool:
            return (
                change.kind is ChangeKind.COMMAND_UPDATED and change.payload.get("id") == command_id
            )

        # Subscribed before the command exists, so that no update of it can be missed.
        sub = await ctx.hub.subscribe(matches=matches, max_queue=100)
        try:
            created = await ctx.run(storage.create_command, entry)
            timeout_s = (request.timeout_ms / 1000) or settings.default_command_timeout_s
            remaining = context.time_remaining()
            if remaining is not None:
                timeout_s = min(timeout_s, max(0.0, remaining - 0.05))
            final = await self._wait_final(sub, created, timeout_s)
        finally:
            sub.close()
        if final.status.final:
            return command_to_pb(final)
        raise ServiceError(
            f"command {final.id} is still {final.status.value} after "
            f"{int(timeout_s * 1000)} ms; it goes on: query it with GetCommand",
            code=grpc.StatusCode.DEADLINE_EXCEEDED,
            reason="COMMAND_PENDING",
            metadata={"command_id": final.id, "status": final.status.value},
        )

    async def _wait_final(
        self, sub: Subscription, command: CommandEntry, timeout_s: float
    ) -> CommandEntry:
        """The command once final, or as it stands when ``timeout_s`` ran out."""
        ctx = self._ctx

        async def follow() -> None:
            try:
                async for change in sub:
                    status = change.payload.get("status")
                    if status in _FINAL_TEXTS:
                        return
            except SubscriberOverflow:  # fall back to polling storage
                while not (await ctx.run(ctx.storage.get_command, command.id)).status.final:
                    await asyncio.sleep(0.2)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), timeout_s)
        # The stored record is the authority (and covers a hub lagging at the deadline).
        return await ctx.run(ctx.storage.get_command, command.id)

    @handle_errors
    async def GetCommand(
        self,
        request: commands_pb2.GetCommandRequest,
        context: aio.ServicerContext[commands_pb2.GetCommandRequest, common_pb2.Command],
    ) -> common_pb2.Command:
        ctx = self._ctx
        start_background(ctx)
        check_id(request.id, "id")
        command = await ctx.run(ctx.storage.get_command, request.id)
        principal = current_principal()
        if principal.sites is not None:
            try:
                device = await ctx.run(ctx.storage.get_device, command.device_id)
            except NotFound:
                device = None
            if device is None:
                raise NotFound(f"command {request.id} does not exist")
            if device.site not in principal.sites:
                raise await ctx.run(site_denied, ctx, f"command {request.id}", device.site)
        if not command.status.final and command.expires_ms <= ctx.now_ms():
            # Overdue and the expiry loop has not come by yet: expire it now.
            await ctx.run(ctx.storage.expire_commands, ctx.now_ms())
            command = await ctx.run(ctx.storage.get_command, request.id)
        return command_to_pb(command)


# --------------------------------------------------------------------------- background work

_background: dict[int, tuple[ServiceContext, asyncio.Task[None]]] = {}


async def _expiry_loop(ctx: ServiceContext, interval_s: float) -> None:
    while True:
        try:
            expired = await ctx.run(ctx.storage.expire_commands, ctx.now_ms())
            if expired:
                log.info("expired %d commands", expired)
        except RuntimeError:  # the worker pool was shut down: the replica is stopping
            return
        except Exception:  # the loop must survive a database hiccup
            log.exception("expiring commands failed; retrying")
        await asyncio.sleep(interval_s)


def start_background(
    ctx: ServiceContext, *, interval_s: float = EXPIRY_INTERVAL_S
) -> asyncio.Task[None]:
    """Start (once per context, in the running loop) the loop that marks overdue commands
    EXPIRED every ``interval_s``; returns its task. Cancel it when the replica stops."""
    key = id(ctx)
    entry = _background.get(key)
    if entry is not None and entry[0] is ctx and not entry[1].done():
        return entry[1]
    task = asyncio.get_running_loop().create_task(
        _expiry_loop(ctx, interval_s), name="command-expiry"
    )
    _background[key] = (ctx, task)

    def forget(_task: asyncio.Task[None]) -> None:
        current = _background.get(key)
        if current is not None and current[1] is task:
            del _background[key]

    task.add_done_callback(forget)
    return task


def register(server: aio.Server, ctx: ServiceContext, catalog: ModelCatalog | None = None) -> None:
    """Add the CommandService to ``server`` (and start the expiry loop if a loop runs)."""
    commands_pb2_grpc.add_CommandServiceServicer_to_server(  # type: ignore[no-untyped-call]
        CommandServiceServicer(ctx, catalog), server
    )
    with contextlib.suppress(RuntimeError):  # no running loop: started on first use
        asyncio.get_running_loop()
        start_background(ctx)
