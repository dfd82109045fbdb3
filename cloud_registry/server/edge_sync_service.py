"""Edge sync: the bidirectional stream between each edge agent and the registry.

One :class:`_Session` per stream, four tasks around one outbox::

    reader      EdgeMessage -> batch: checked, decoded in the worker pool (pipelined)
                            -> command_result / device_status: stored in the background
    ingester    decoded batches in arrival order -> storage.ingest -> BatchAck into the outbox
    downlink    pending commands on connect, then the change hub: queued commands and desired
                changes of this edge's devices -> the outbox
    lease       storage.edge_connected every edge_lease_s / 3 (and notices a takeover)
    Sync()      yields the outbox; a command is marked SENT once written to the stream

Protocol rules (see edge_sync.proto):

* The first message must be Hello (else FAILED_PRECONDITION); an empty edge id is
  INVALID_ARGUMENT; when the caller is an edge its identity must equal Hello's edge id
  (PERMISSION_DENIED). A second stream of the same edge replaces the first, which ends with
  ABORTED (on another replica: noticed at the next lease refresh).
* Welcome carries ``last_sequence`` from storage: the edge resends everything after it.
* A batch is acknowledged only after ``storage.ingest`` returned (durable). A batch stored
  before is acknowledged ``duplicate=true``. Batches are processed in arrival order; at most
  ``max_in_flight`` may be unacknowledged (one more ends the stream with RESOURCE_EXHAUSTED),
  a batch over ``max_batch_messages`` ends it with RESOURCE_EXHAUSTED, sequence 0 with
  INVALID_ARGUMENT. Acks are counted as answered when queued, so an edge that keeps to the
  window by the acks it has received never trips the check.
* Inside a batch only property reports and events are accepted; a message that is malformed
  (unknown kind, empty or unknown device, a device of another edge, a bad parameter name, a
  non-finite float, an undeclared event...) is refused as ``"index: reason"`` in
  ``BatchAck.rejected`` and the rest is stored. ``stored`` counts stored messages.
* A property report gives one stored value per parameter, with its ``param_quality`` or the
  message's quality; an event gets a new id and its level from the device's model.
* When the edge half-closes its side, the outstanding batches are acknowledged and the stream
  ends. Commands already SENT to a stream that broke are not resent (the edge may have run
  them); they are answered late or expire.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import grpc
from grpc import aio

from cloud_registry.api.v1 import edge_sync_pb2, edge_sync_pb2_grpc
from cloud_registry.server.change_hub import SubscriberOverflow, Subscription
from cloud_registry.server.command_signing import sign_command
from cloud_registry.server.commands_service import RESULT_STATUSES, command_from_payload
from cloud_registry.server.context import ServiceContext
from cloud_registry.server.convert import command_to_pb
from cloud_registry.server.models_service import ModelCatalog
from cloud_registry.server.principal import current_principal
from cloud_registry.storage.base import (
    ChangeEntry,
    ChangeKind,
    CommandEntry,
    CommandStatus,
    EventEntry,
    IngestBatch,
    IngestResult,
    NotFound,
    ReportedValue,
    StorageError,
)
from security.audit import AuditKind
from thing_models.errors import MessageError
from thing_models.messages import new_message_id, value_from_protobuf, value_to_protobuf
from thing_models.proto import thing_message_pb2 as tpb

__all__ = ["EdgeSyncServicer", "decode_batch", "register"]

log = logging.getLogger(__name__)

_PROPERTY_REPORT = tpb.MESSAGE_KIND_PROPERTY_REPORT
_EVENT = tpb.MESSAGE_KIND_EVENT
_QUALITY = {tpb.QUALITY_GOOD: "good", tpb.QUALITY_UNCERTAIN: "uncertain", tpb.QUALITY_BAD: "bad"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}(?::[A-Za-z_][A-Za-z0-9_]{0,49})*")
_MAX_DEVICE_ID = 128


# --------------------------------------------------------------------------- decoding


class _Names:
    """Parameter names already seen valid (so the regex runs once per name)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.valid: set[str] = set()
        self.limit = limit

    def check(self, name: str) -> bool:
        if name in self.valid:
            return True
        if not _NAME_RE.fullmatch(name):
            return False
        if len(self.valid) < self.limit:
            self.valid.add(name)
        return True


_names = _Names()


@dataclass(slots=True)
class Decoded:
    """What :func:`decode_batch` made of a batch's messages."""

    values: list[ReportedValue] = field(default_factory=list)
    events: list[EventEntry] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    accepted: int = 0  # messages
    per_device: dict[str, int] = field(default_factory=dict)  # accepted messages by device


#: The reserved name of the edge agent's diagnostic events (edge_agent.reporting).
DIAGNOSTIC_EVENT = "_diagnostic"


def decode_batch(
    messages: Any,
    allowed: Mapping[str, str],
    event_level: Callable[[str, str], str | None],
    refused: Mapping[str, str] | None = None,
) -> Decoded:
    """Flatten protobuf ThingMessages into storage records.

    ``allowed`` maps the device ids this edge may report for to their model reference;
    ``refused`` gives the reason for device ids that are not allowed (default: unknown).
    ``event_level(model, event)`` is an event's level, or None for an undeclared event.
    """
    out = Decoded()
    values = out.values
    add_value = values.append
    names = _names
    name_ok = names.valid.__contains__
    isfinite = math.isfinite
    rv = ReportedValue
    per_device = out.per_device
    for index, msg in enumerate(messages):
        device_id = msg.device_id
        if device_id not in allowed:
            if not device_id:
                reason = "device_id: empty"
            else:
                reason = (refused or {}).get(device_id) or f"device {device_id} is unknown"
            out.rejected.append(f"{index}: {reason}")
            continue
        quality = _QUALITY.get(msg.quality)
        ts_ms = msg.ts_ms
        if quality is None or ts_ms < 0:
            what = f"quality {msg.quality} is not valid" if quality is None else "ts_ms < 0"
            out.rejected.append(f"{index}: {what}")
            continue
        kind = msg.kind
        if kind == _PROPERTY_REPORT:
            start = len(values)
            problem = ""
            param_quality = msg.param_quality
            qualities: dict[str, str] = {}
            if param_quality:
                for key, code in param_quality.items():
                    item = _QUALITY.get(code)
                    if item is None or key not in msg.params:
                        problem = f"param_quality.{key}: not valid"
                        break
                    qualities[key] = item
            if not problem:
                for key, value in msg.params.items():
                    which = value.WhichOneof("kind")
                    if which == "double_value":
                        item_value: Any = value.double_value
                        if not isfinite(item_value):
                            problem = f"params.{key}: {item_value} is not a finite number"
                            break
                    elif which == "int_value":
                        item_value = value.int_value
                    elif which == "bool_value":
                        item_value = value.bool_value
                    elif which == "string_value":
                        item_value = value.string_value
                    else:
                        try:
                            item_value = value_from_protobuf(value, f"params.{key}")
                        except MessageError as exc:
                            problem = str(exc)
                            break
                    if not name_ok(key) and not names.check(key):
                        problem = f"params.{key}: not a valid parameter name"
                        break
                    add_value(
                        rv(device_id, key, item_value, ts_ms, qualities.get(key, quality))
                        if qualities
                        else rv(device_id, key, item_value, ts_ms, quality)
                    )
            if not problem and len(values) == start:
                problem = "params: a property report with no values"
            if problem:
                del values[start:]
                out.rejected.append(f"{index}: {problem}")
                continue
        elif kind == _EVENT:
            name = msg.name
            if not names.check(name):
                out.rejected.append(f"{index}: name: {name!r} is not a valid event name")
                continue
            # The edge's own diagnostics (a value its model rejects, a device fault) arrive as
            # the reserved event "_diagnostic", which no model declares: stored as alerts.
            level = "alert" if name == DIAGNOSTIC_EVENT else event_level(allowed[device_id], name)
            if level is None:
                out.rejected.append(
                    f"{index}: name: model {allowed[device_id]} has no event {name}"
                )
                continue
            try:
                params = {
                    key: value_from_protobuf(value, f"params.{key}")
                    for key, value in msg.params.items()
                }
            except MessageError as exc:
                out.rejected.append(f"{index}: {exc}")
                continue
            if msg.param_quality:
                out.rejected.append(f"{index}: param_quality: not allowed in an event")
                continue
            out.events.append(
                EventEntry(
                    id=new_message_id(ts_ms),
                    device_id=device_id,
                    name=name,
                    level=level,
                    ts_ms=ts_ms,
                    params=params,
                )
            )
        else:
            kind_name = tpb.MessageKind.Name(kind) if kind in tpb.MessageKind.values() else kind
            out.rejected.append(f"{index}: kind {kind_name} is not accepted in a telemetry batch")
            continue
        out.accepted += 1
        per_device[device_id] = per_device.get(device_id, 0) + 1
    return out


# --------------------------------------------------------------------------- the session


@dataclass(frozen=True, slots=True)
class _Close:
    """Outbox item: end the stream (code None: normally)."""

    code: grpc.StatusCode | None = None
    details: str = ""


_Outgoing = tuple[edge_sync_pb2.RegistryMessage, Callable[[], None] | None]


@dataclass(eq=False)
class _Session:
    edge_id: str
    outbox: asyncio.Queue[_Outgoing | _Close] = field(default_factory=asyncio.Queue)
    batches: asyncio.Queue[tuple[int, asyncio.Future[Decoded]] | None] = field(
        default_factory=asyncio.Queue
    )
    in_flight: int = 0
    owned: dict[str, str] = field(default_factory=dict)  # device id -> model reference
    sent_commands: set[str] = field(default_factory=set)
    # device id -> twin revision of the desired state last sent (connect snapshot and hub
    # changes can carry the same revision: send it once)
    sent_desired: dict[str, int] = field(default_factory=dict)
    tasks: list[asyncio.Future[Any]] = field(default_factory=list)
    subscription: Subscription | None = None
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    closed: bool = False

    def close(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(_Close(code, details))

    def send(
        self, message: edge_sync_pb2.RegistryMessage, after: Callable[[], None] | None = None
    ) -> None:
        if not self.closed:
            self.outbox.put_nowait((message, after))

    def send_desired(self, device_id: str, desired: Mapping[str, Any], revision: int) -> None:
        if revision and revision <= self.sent_desired.get(device_id, 0):
            return
        self.sent_desired[device_id] = revision
        self.send(_desired_message(device_id, desired, revision))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class EdgeSyncServicer(edge_sync_pb2_grpc.EdgeSyncServicer):
    """The EdgeSync service of one replica."""

    def __init__(self, ctx: ServiceContext, models: ModelCatalog | None = None) -> None:
        self._ctx = ctx
        self._models = models or ModelCatalog(ctx.storage)
        self._sessions: dict[str, _Session] = {}

    # ----------------------------------------------------------------- the stream

    async def Sync(
        self,
        request_iterator: AsyncIterator[edge_sync_pb2.EdgeMessage],
        context: aio.ServicerContext[edge_sync_pb2.EdgeMessage, edge_sync_pb2.RegistryMessage],
    ) -> AsyncIterator[edge_sync_pb2.RegistryMessage]:
        ctx = self._ctx
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "hello":
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, "the first message must be Hello"
            )
        hello = first.hello
        edge_id = hello.edge_id
        if not edge_id or len(edge_id) > _MAX_DEVICE_ID:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello.edge_id: required")
        principal = current_principal()
        if principal.is_edge and principal.id != edge_id:
            if ctx.audit is not None:
                await ctx.audit.record(
                    AuditKind.ACCESS_REFUSED,
                    f"edge:{principal.id}",
                    f"edge {principal.id} named edge {edge_id} in its sync hello",
                    context.peer() or "",
                )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"edge {principal.id} may not sync as edge {edge_id}",
            )
        session = _Session(edge_id)
        previous = self._sessions.get(edge_id)
        self._sessions[edge_id] = session
        if previous is not None:
            previous.close(grpc.StatusCode.ABORTED, "replaced by a newer stream of this edge")
        storage = ctx.storage
        settings = ctx.settings
        try:
            await ctx.run(storage.edge_connected, edge_id, settings.replica_id, ctx.now_ms())
            last_sequence = await ctx.run(storage.last_sequence, edge_id)
            if hello.devices:
                states = {item.device_id: item.online for item in hello.devices}
                await ctx.run(storage.set_devices_online, edge_id, states, ctx.now_ms())
            # Subscribe before reading the pending commands so that none falls in between.
            subscription = await ctx.hub.subscribe(matches=self._matcher(session), max_queue=10_000)
            session.subscription = subscription
        except StorageError as exc:
            self._forget(session)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage: {exc}")
        log.info("edge %s connected (agent %s)", edge_id, hello.agent_version)
        session.tasks = [
            asyncio.ensure_future(self._read(session, requests)),
            asyncio.ensure_future(self._ingest(session)),
            asyncio.ensure_future(self._downlink(session, subscription, hello)),
            asyncio.ensure_future(self._lease(session)),
        ]
        welcome = edge_sync_pb2.Welcome(
            last_sequence=last_sequence,
            max_in_flight=settings.sync_max_in_flight,
            max_batch_messages=settings.sync_max_batch_messages,
        )
        try:
            yield edge_sync_pb2.RegistryMessage(welcome=welcome)
            outbox = session.outbox
            while True:
                item = await outbox.get()
                if isinstance(item, _Close):
                    if item.code is not None:
                        await context.abort(item.code, item.details)
                    return
                message, after = item
                yield message
                if after is not None:
                    after()
        finally:
            session.closed = True
            for task in session.tasks:
                task.cancel()
            if session.subscription is not None:
                session.subscription.close()
            if self._forget(session):
                # Not replaced here: give the connection up and mark the edge's devices
                # offline (unless another replica has the edge by now).
                self._spawn_detached(
                    _edge_went_away(ctx, edge_id, [item.device_id for item in hello.devices])
                )
            log.info("edge %s disconnected", edge_id)

    def close_edge(self, edge_id: str) -> None:
        """End the open stream of ``edge_id`` now (its certificate was revoked)."""
        session = self._sessions.get(edge_id)
        if session is not None:
            log.warning("edge %s revoked: closing its stream", edge_id)
            session.close(grpc.StatusCode.UNAUTHENTICATED, f"edge {edge_id} is revoked")

    def _forget(self, session: _Session) -> bool:
        """Drop ``session`` from the live ones; False when a newer one replaced it."""
        if self._sessions.get(session.edge_id) is session:
            del self._sessions[session.edge_id]
            return True
        return False

    _detached: ClassVar[set[asyncio.Future[Any]]] = set()

    @classmethod
    def _spawn_detached(cls, coro: Any) -> None:
        future = asyncio.ensure_future(coro)
        cls._detached.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            cls._detached.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.warning("edge sync cleanup failed: %s", f.exception())

        future.add_done_callback(done)

    # ----------------------------------------------------------------- uplink

    async def _read(
        self, session: _Session, requests: AsyncIterator[edge_sync_pb2.EdgeMessage]
    ) -> None:
        settings = self._ctx.settings
        max_in_flight = settings.sync_max_in_flight
        max_batch = settings.sync_max_batch_messages
        loop = asyncio.get_running_loop()
        try:
            async for message in requests:
                which = message.WhichOneof("kind")
                if which == "batch":
                    batch = message.batch
                    if batch.sequence == 0:
                        session.close(
                            grpc.StatusCode.INVALID_ARGUMENT, "batch.sequence: must be > 0"
                        )
                        return
                    if len(batch.messages) > max_batch:
                        session.close(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"batch {batch.sequence}: {len(batch.messages)} messages, "
                            f"more than max_batch_messages={max_batch}",
                        )
                        return
                    session.in_flight += 1
                    if session.in_flight > max_in_flight:
                        session.close(
                            grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"more than max_in_flight={max_in_flight} unacknowledged batches",
                        )
                        return
                    decoded = loop.run_in_executor(
                        self._ctx.executor, self._prepare, session, batch.messages
                    )
                    session.batches.put_nowait((batch.sequence, decoded))
                elif which == "command_result":
                    session.spawn(self._command_result(session, message.command_result))
                elif which == "device_status":
                    status = message.device_status
                    session.spawn(
                        self._ctx.run(
                            self._ctx.storage.set_devices_online,
                            session.edge_id,
                            {status.device_id: status.online},
                            self._ctx.now_ms(),
                        )
                    )
                elif which == "hello":
                    session.close(grpc.StatusCode.FAILED_PRECONDITION, "Hello sent twice")
                    return
            session.batches.put_nowait(None)  # half-closed: finish the batches, then end
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away or sent garbage
            log.debug("edge %s: reading the stream ended: %s", session.edge_id, exc)
            session.close(grpc.StatusCode.CANCELLED, "stream broken")

    def _prepare(self, session: _Session, messages: Any) -> Decoded:
        """Worker thread: learn the devices not seen yet, then decode."""
        owned = session.owned
        missing = {m.device_id for m in messages} - owned.keys()
        refused: dict[str, str] = {}
        if missing:
            missing.discard("")
            found = self._ctx.storage.get_devices(sorted(missing)) if missing else {}
            for device_id in missing:
                device = found.get(device_id)
                if device is None:
                    refused[device_id] = f"device {device_id} is unknown"
                elif device.edge_id != session.edge_id:
                    refused[device_id] = f"device {device_id} belongs to another edge"
                else:
                    owned[device_id] = device.model
        return decode_batch(messages, dict(owned), self._models.event_level, refused)

    async def _ingest(self, session: _Session) -> None:
        ctx = self._ctx
        storage = ctx.storage
        edge_id = session.edge_id
        while True:
            item = await session.batches.get()
            if item is None:
                session.close()
                return
            sequence, pending = item
            try:
                decoded = await pending
                result: IngestResult = await ctx.run(
                    storage.ingest,
                    IngestBatch(edge_id, sequence, decoded.values, decoded.events),
                    ctx.now_ms(),
                )
            except StorageError as exc:
                log.warning("edge %s: ingest of batch %d failed: %s", edge_id, sequence, exc)
                session.close(grpc.StatusCode.UNAVAILABLE, f"storage: {exc}")
                return
            except Exception:
                log.exception("edge %s: batch %d could not be processed", edge_id, sequence)
                session.close(grpc.StatusCode.INTERNAL, f"batch {sequence} could not be processed")
                return
            ack = edge_sync_pb2.BatchAck(sequence=sequence, duplicate=result.duplicate)
            if not result.duplicate:
                stored = decoded.accepted
                if result.rejected:
                    # Devices deleted between our check and the transaction.
                    gone = {text.partition(":")[0] for text in result.rejected}
                    stored -= sum(decoded.per_device.get(d, 0) for d in gone)
                    for device_id in gone:
                        session.owned.pop(device_id, None)
                ack.stored = max(0, stored)
                ack.rejected.extend(decoded.rejected)
                ack.rejected.extend(result.rejected)
            session.in_flight -= 1
            session.send(edge_sync_pb2.RegistryMessage(ack=ack))

    async def _command_result(self, session: _Session, result: edge_sync_pb2.CommandResult) -> None:
        ctx = self._ctx
        status = RESULT_STATUSES.get(result.status)
        if status is None:
            log.warning(
                "edge %s: result of command %s with status %s ignored",
                session.edge_id,
                result.command_id,
                result.status,
            )
            return
        try:
            values = {
                key: value_from_protobuf(value, f"result.{key}")
                for key, value in result.result.items()
            }
        except MessageError as exc:
            status, values = CommandStatus.FAILED, {}
            error = f"the edge answered an invalid result: {exc}"
        else:
            error = result.error
        try:
            command = await ctx.run(ctx.storage.get_command, result.command_id)
            if command.edge_id != session.edge_id:
                log.warning(
                    "edge %s answered command %s of edge %s: ignored",
                    session.edge_id,
                    command.id,
                    command.edge_id,
                )
                return
            await ctx.run(
                ctx.storage.update_command, command.id, status, ctx.now_ms(), values, error
            )
        except NotFound:
            log.warning("edge %s answered unknown command %s", session.edge_id, result.command_id)
        except StorageError as exc:
            log.warning("edge %s: storing a command result failed: %s", session.edge_id, exc)

    # ----------------------------------------------------------------- downlink

    def _matcher(self, session: _Session) -> Callable[[ChangeEntry], bool]:
        edge_id = session.edge_id
        owned = session.owned
        wanted = (ChangeKind.COMMAND_UPDATED, ChangeKind.TWIN_DESIRED)
        devices = (ChangeKind.DEVICE_UPDATED, ChangeKind.DEVICE_DELETED)

        def matches(change: ChangeEntry) -> bool:
            kind = change.kind
            if kind in wanted:
                return change.edge_id == edge_id
            return kind in devices and change.device_id in owned

        return matches

    async def _downlink(
        self, session: _Session, subscription: Subscription, hello: edge_sync_pb2.Hello
    ) -> None:
        ctx = self._ctx
        storage = ctx.storage
        try:
            for command in await ctx.run(storage.pending_commands, session.edge_id, ctx.now_ms()):
                self._send_command(session, command)
            await self._send_deltas(session, [item.device_id for item in hello.devices])
            while True:
                try:
                    async for change in subscription:
                        self._on_change(session, change)
                    return
                except SubscriberOverflow:
                    last = subscription.last_seq
                    subscription = await ctx.hub.subscribe(
                        after_seq=last, matches=self._matcher(session), max_queue=10_000
                    )
                    session.subscription = subscription
        except StorageError as exc:
            log.warning("edge %s: downlink failed: %s", session.edge_id, exc)
            session.close(grpc.StatusCode.UNAVAILABLE, f"storage: {exc}")

    async def _send_deltas(self, session: _Session, device_ids: list[str]) -> None:
        """Desired values that differ from the reported ones, for the edge's devices."""
        ctx = self._ctx
        for device_id in device_ids:
            try:
                twin = await ctx.run(ctx.storage.get_twin, device_id)
            except NotFound:
                continue
            delta = twin.delta
            if delta:
                session.send_desired(device_id, delta, twin.revision)

    def _on_change(self, session: _Session, change: ChangeEntry) -> None:
        kind = change.kind
        payload = change.payload
        if kind is ChangeKind.COMMAND_UPDATED:
            if payload.get("status") != CommandStatus.QUEUED.value:
                return
            try:
                command = command_from_payload(payload)
            except (KeyError, ValueError, TypeError):
                log.warning("edge %s: unreadable command change %d", session.edge_id, change.seq)
                return
            if command.expires_ms and command.expires_ms <= self._ctx.now_ms():
                return
            self._send_command(session, command)
        elif kind is ChangeKind.TWIN_DESIRED:
            properties = payload.get("properties") or {}
            desired = {
                name: (item.get("value") if isinstance(item, Mapping) else item)
                for name, item in properties.items()
            }
            session.send_desired(change.device_id, desired, int(payload.get("revision", 0)))
        elif kind is ChangeKind.DEVICE_DELETED or payload.get("edge_id") != session.edge_id:
            session.owned.pop(change.device_id, None)
        else:
            model = payload.get("model")
            if isinstance(model, str) and change.device_id in session.owned:
                session.owned[change.device_id] = model

    def _send_command(self, session: _Session, command: CommandEntry) -> None:
        if command.id in session.sent_commands:
            return
        session.sent_commands.add(command.id)
        if len(session.sent_commands) > 100_000:
            session.sent_commands.clear()
        try:
            message = edge_sync_pb2.RegistryMessage(command=command_to_pb(command))
        except MessageError as exc:  # pragma: no cover - stored params were validated
            log.warning("command %s cannot be encoded: %s", command.id, exc)
            return
        ctx = self._ctx
        if ctx.security is not None:
            message.command.envelope = sign_command(ctx.security, message.command)

        def mark_sent() -> None:
            session.spawn(_mark_sent(ctx, command.id))

        session.send(message, mark_sent)

    # ----------------------------------------------------------------- the lease

    async def _lease(self, session: _Session) -> None:
        ctx = self._ctx
        storage = ctx.storage
        settings = ctx.settings
        lease_ms = int(settings.edge_lease_s * 1000)
        interval = max(0.05, settings.edge_lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                holder = await ctx.run(
                    storage.edge_connection, session.edge_id, ctx.now_ms(), lease_ms
                )
                if holder is not None and holder != settings.replica_id:
                    session.close(
                        grpc.StatusCode.ABORTED,
                        f"edge {session.edge_id} connected to replica {holder} since",
                    )
                    return
                await ctx.run(
                    storage.edge_connected, session.edge_id, settings.replica_id, ctx.now_ms()
                )
            except StorageError as exc:
                log.warning("edge %s: lease refresh failed: %s", session.edge_id, exc)


async def _edge_went_away(ctx: ServiceContext, edge_id: str, device_ids: list[str]) -> None:
    """Release the edge's connection lease; its devices go offline unless another replica
    holds the edge now (it reconnected there)."""
    storage, settings = ctx.storage, ctx.settings
    try:
        await ctx.run(storage.edge_disconnected, edge_id, settings.replica_id, ctx.now_ms())
        holder = await ctx.run(
            storage.edge_connection, edge_id, ctx.now_ms(), int(settings.edge_lease_s * 1000)
        )
        if holder is None and device_ids:
            offline = dict.fromkeys(device_ids, False)
            await ctx.run(storage.set_devices_online, edge_id, offline, ctx.now_ms())
    except StorageError as exc:
        log.warning("edge %s: recording the disconnect failed: %s", edge_id, exc)


async def _mark_sent(ctx: ServiceContext, command_id: str) -> None:
    try:
        await ctx.run(ctx.storage.update_command, command_id, CommandStatus.SENT, ctx.now_ms())
    except StorageError as exc:
        log.warning("marking command %s sent failed: %s", command_id, exc)


def _desired_message(
    device_id: str, desired: Mapping[str, Any], revision: int
) -> edge_sync_pb2.RegistryMessage:
    change = edge_sync_pb2.DesiredChange(device_id=device_id, revision=revision)
    for name, value in desired.items():
        try:
            change.desired[name].CopyFrom(value_to_protobuf(value, f"desired.{name}"))
        except MessageError as exc:  # pragma: no cover - stored values were validated
            log.warning("desired %s of %s cannot be encoded: %s", name, device_id, exc)
    return edge_sync_pb2.RegistryMessage(desired=change)


def register(
    server: aio.Server, ctx: ServiceContext, catalog: ModelCatalog | None = None
) -> EdgeSyncServicer:
    """Add the EdgeSync service to ``server``; returns the servicer."""
    servicer = EdgeSyncServicer(ctx, catalog)
    edge_sync_pb2_grpc.add_EdgeSyncServicer_to_server(  # type: ignore[no-untyped-call]
        servicer, server
    )
    return servicer
