"""The uplink: moves the durable outbox to the registry over the EdgeSync stream.

Protocol (``cloud_registry/api/v1/edge_sync.proto``), one *session* per stream:

1. Open ``EdgeSync.Sync`` with metadata ``x-edge-id`` over the given channel credentials
   (insecure when None; a callable is called for each session, so renewed certificates are
   used from the next session on, and :meth:`Uplink.reconnect` starts one now), send Hello
   (agent/config version, the inventory) and read Welcome.
2. :meth:`Outbox.raise_sequence_floor` with ``Welcome.last_sequence`` (a recreated outbox never
   reuses a sequence the registry has seen), then resend :meth:`Outbox.pending_batches` with
   their SAME sequence numbers (the registry acknowledges one stored before as a duplicate).
3. Then each turn: :meth:`Outbox.live_batch` (unpaced) and :meth:`Outbox.next_batch` limited by a
   :class:`~edge_agent.outbox_policy.ReplayPacer` (the backlog), each given a durable sequence
   with :meth:`Outbox.assign_sequence` *before* it is sent; at most
   ``min(Welcome.max_in_flight, max_in_flight)`` batches unacknowledged.
4. ``BatchAck`` -> :meth:`Outbox.ack_sequence` (the rows are deleted). Commands pass the
   ``command_guard`` (signed envelope verified; a refused one is answered REJECTED with the
   reason, counted in ``commands_refused``), then go to ``on_command`` and its CommandResult
   is sent back; desired changes to ``on_desired``; config
   updates to ``on_config``.

On any stream error the session ends, and after a backoff (exponential, jittered) a new one
starts at step 1: nothing is lost (rows leave the outbox only on an ack) and nothing is stored
twice (resent batches keep their sequence). Every outbox call runs on one dedicated worker
thread (they block on ``fsync``), in submission order, so a call left running by a cancelled
session still completes before the next session reads the outbox.

The uplink imports only the wire contract (``cloud_registry.api.v1``), never the registry's
server or storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc import aio

from cloud_registry.api.v1 import common_pb2, edge_sync_pb2, edge_sync_pb2_grpc
from edge_agent.command_guard import CommandGuard, CommandRefused
from edge_agent.outbox import Outbox, OutboxBatch, StaleBatchError
from edge_agent.outbox_policy import ReplayPacer

__all__ = [
    "CommandHandler",
    "ConfigHandler",
    "DesiredHandler",
    "InventoryItem",
    "Uplink",
    "UplinkStats",
]

_log = logging.getLogger(__name__)
T = TypeVar("T")

#: (device_id, model reference, online)
InventoryItem = tuple[str, str, bool]
CommandHandler = Callable[[common_pb2.Command], Awaitable[edge_sync_pb2.CommandResult]]
DesiredHandler = Callable[[edge_sync_pb2.DesiredChange], Awaitable[None]]
ConfigHandler = Callable[[edge_sync_pb2.ConfigUpdate], Awaitable[None]]

_CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


class _SessionEnded(Exception):
    """The stream ended (by the registry or a transport error)."""


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """A snapshot of the uplink's counters (cumulative over sessions unless noted)."""

    connected: bool
    sessions: int  # streams that got a Welcome
    reconnects: int  # sessions that ended with an error (each followed by a backoff)
    in_flight: int  # unacknowledged batches now
    batches_sent: int
    messages_sent: int
    batches_resent: int  # pending batches resent after a (re)connect
    batches_acked: int
    messages_stored: int  # BatchAck.stored
    duplicates: int  # acks with duplicate=true
    rejected: int  # messages refused by the registry (BatchAck.rejected)
    commands: int
    last_ack_ms: int | None  # wall clock of the last ack
    last_ack_latency_ms: float | None  # send -> ack of the last acked batch
    backlog_rows: int | None  # rows in the outbox (refreshed about once a second)
    lag_s: float | None  # age of the oldest row in the outbox (None: empty)
    last_error: str
    commands_refused: int = 0  # refused by the command guard (bad, replayed, unsigned ...)


@dataclass
class _Counters:
    connected: bool = False
    sessions: int = 0
    reconnects: int = 0
    batches_sent: int = 0
    messages_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0
    messages_stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    commands: int = 0
    commands_refused: int = 0
    last_ack_ms: int | None = None
    last_ack_latency_ms: float | None = None
    backlog_rows: int | None = None
    lag_s: float | None = None
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class _Prepared:
    sequence: int
    count: int
    message: edge_sync_pb2.EdgeMessage


class _Session:
    def __init__(self, call: Any, window: int, batch_max: int, stored_up_to: int = 0) -> None:
        self.call = call
        self.window = window
        self.batch_max = batch_max
        self.stored_up_to = stored_up_to  # Welcome.last_sequence
        self.in_flight: dict[int, tuple[int, float]] = {}  # sequence -> (messages, sent at)
        self.room = asyncio.Event()
        self.write_lock = asyncio.Lock()

    async def write(self, message: edge_sync_pb2.EdgeMessage) -> None:
        async with self.write_lock:
            await self.call.write(message)


class Uplink:
    """Sends the outbox to the registry at ``target`` as edge ``edge_id`` (see the module doc).

    ``run()`` until ``stop()``; ``stop()`` and ``poke()`` may be called from any thread.
    """

    def __init__(
        self,
        target: str,
        edge_id: str,
        outbox: Outbox,
        *,
        agent_version: str,
        config_version: str,
        inventory: Callable[[], Sequence[InventoryItem]],
        on_command: CommandHandler,
        on_desired: DesiredHandler | None = None,
        on_config: ConfigHandler | None = None,
        credentials: grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials] | None = None,
        command_guard: CommandGuard | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        max_batch_messages: int = 500,
        max_batch_bytes: int = 1 << 20,
        max_in_flight: int = 64,
        replay_rate: float = 2000.0,
        replay_burst: float | None = None,
        live_window_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        backoff_jitter: float = 0.5,
        welcome_timeout_s: float = 10.0,
        idle_poll_s: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        if not edge_id:
            raise ValueError("edge_id must not be empty")
        if max_batch_messages < 1 or max_batch_bytes < 1 or max_in_flight < 1:
            raise ValueError("max_batch_messages, max_batch_bytes, max_in_flight must be >= 1")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if not 0 <= backoff_jitter <= 1:
            raise ValueError("backoff_jitter must be in [0, 1]")
        self.target = target
        self.edge_id = edge_id
        self.outbox = outbox
        self.agent_version = agent_version
        self.config_version = config_version
        self._inventory = inventory
        self._on_command = on_command
        self._on_desired = on_desired
        self._on_config = on_config
        self._credentials = credentials
        self._command_guard = command_guard
        self._channel_options = tuple(_CHANNEL_OPTIONS) + tuple(channel_options)
        self.max_batch_messages = max_batch_messages
        self.max_batch_bytes = max_batch_bytes
        self.max_in_flight = max_in_flight
        self._pacer = ReplayPacer(replay_rate, burst=replay_burst)
        self.live_window_s = live_window_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.backoff_jitter = backoff_jitter
        self.welcome_timeout_s = welcome_timeout_s
        self.idle_poll_s = idle_poll_s
        self._rng = rng or random.Random()
        self._counters = _Counters()
        self._session: _Session | None = None
        self._unsent_results: list[edge_sync_pb2.CommandResult] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._reconnect: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._stats_refreshed = 0.0
        # Command handlers outlive a broken session: their results go out on the next one.
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ control

    @property
    def stats(self) -> UplinkStats:
        c = self._counters
        session = self._session
        return UplinkStats(
            connected=c.connected,
            sessions=c.sessions,
            reconnects=c.reconnects,
            in_flight=0 if session is None else len(session.in_flight),
            batches_sent=c.batches_sent,
            messages_sent=c.messages_sent,
            batches_resent=c.batches_resent,
            batches_acked=c.batches_acked,
            messages_stored=c.messages_stored,
            duplicates=c.duplicates,
            rejected=c.rejected,
            commands=c.commands,
            last_ack_ms=c.last_ack_ms,
            last_ack_latency_ms=c.last_ack_latency_ms,
            backlog_rows=c.backlog_rows,
            lag_s=c.lag_s,
            last_error=c.last_error,
            commands_refused=c.commands_refused,
        )

    def stop(self) -> None:
        """Ask :meth:`run` to end (unacknowledged batches are resent by the next run)."""
        self._stop_requested.set()
        self._signal(lambda: self._stopping)

    def reconnect(self) -> None:
        """End the current session; the next one opens a new channel with the credentials
        read again (after a certificate renewal). Any thread."""
        self._signal(lambda: self._reconnect)

    def poke(self) -> None:
        """Wake the sender now (e.g. after an append), instead of at the next poll."""
        self._signal(lambda: self._wake)

    def _signal(self, which: Callable[[], asyncio.Event | None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        def setter() -> None:
            event = which()
            if event is not None:
                event.set()

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            setter()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(setter)

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Connect, sync, reconnect with backoff on errors, until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._reconnect = asyncio.Event()
        if self._stop_requested.is_set():
            self._stopping.set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"uplink-{self.edge_id}")
        attempt = 0
        try:
            while not self._stopping.is_set():
                sessions = self._counters.sessions
                try:
                    await self._run_session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._counters.last_error = f"{type(exc).__name__}: {exc}"
                    _log.warning("uplink %s -> %s: %s", self.edge_id, self.target, exc)
                finally:
                    self._counters.connected = False
                    self._session = None
                if self._stopping.is_set():
                    break
                self._counters.reconnects += 1
                # A session that got a Welcome resets the backoff.
                attempt = 0 if self._counters.sessions > sessions else attempt + 1
                delay = self._backoff(attempt)
                with contextlib.suppress(TimeoutError):  # not wait_for (see below)
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
            self._loop = None

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempt, 32))
        return base * (1 - self.backoff_jitter * self._rng.random())

    async def _run_session(self) -> None:
        """One stream, until stop() (returns) or a stream error (raises)."""
        assert self._stopping is not None
        credentials = self._credentials
        if callable(credentials):  # re-read each session: renewed certificates take effect
            credentials = credentials()
        if credentials is None:
            channel = aio.insecure_channel(self.target, options=self._channel_options)
        else:
            channel = aio.secure_channel(self.target, credentials, options=self._channel_options)
        call: Any = None
        try:
            stub = edge_sync_pb2_grpc.EdgeSyncStub(channel)  # type: ignore[no-untyped-call]
            call = stub.Sync(metadata=(("x-edge-id", self.edge_id),))
            inventory = [
                edge_sync_pb2.InventoryItem(device_id=d, model=m, online=o)
                for d, m, o in self._inventory()
            ]
            hello = edge_sync_pb2.Hello(
                edge_id=self.edge_id,
                agent_version=self.agent_version,
                config_version=self.config_version,
                devices=inventory,
            )
            await call.write(edge_sync_pb2.EdgeMessage(hello=hello))
            first = await asyncio.wait_for(call.read(), self.welcome_timeout_s)
            if first is aio.EOF:
                raise _SessionEnded(await self._end_reason(call))
            if first.WhichOneof("kind") != "welcome":
                raise _SessionEnded(f"expected Welcome, got {first.WhichOneof('kind')}")
            welcome = first.welcome
            await self._io(self.outbox.raise_sequence_floor, welcome.last_sequence)
            window = min(welcome.max_in_flight or 1, self.max_in_flight)
            batch_max = min(self.max_batch_messages, welcome.max_batch_messages or math.inf)
            session = _Session(call, window, int(batch_max), welcome.last_sequence)
            self._session = session
            self._counters.connected = True
            self._counters.sessions += 1
            _log.info(
                "uplink %s connected to %s (last_sequence %d, window %d)",
                self.edge_id,
                self.target,
                welcome.last_sequence,
                window,
            )
            await self._supervise(session)
        except aio.AioRpcError as exc:
            raise _SessionEnded(f"{exc.code().name}: {exc.details()}") from exc
        finally:
            if call is not None:
                call.cancel()
            with contextlib.suppress(Exception):
                await channel.close()

    async def _supervise(self, session: _Session) -> None:
        assert self._stopping is not None
        assert self._reconnect is not None
        self._reconnect.clear()  # this session already uses the current credentials
        reader = asyncio.create_task(self._read(session))
        sender = asyncio.create_task(self._send_loop(session))
        stopper = asyncio.create_task(self._stopping.wait())
        renewed = asyncio.create_task(self._reconnect.wait())
        tasks: list[asyncio.Task[Any]] = [reader, sender, stopper, renewed]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if stopper in done:
            return
        if renewed in done:
            raise _SessionEnded("reconnecting with new credentials")
        for task in (reader, sender):
            if task in done and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise exc
        raise _SessionEnded("the stream ended")

    async def _end_reason(self, call: Any) -> str:
        try:
            code = await asyncio.wait_for(call.code(), 1.0)
            details = await asyncio.wait_for(call.details(), 1.0)
            return f"stream ended: {code.name}: {details}"
        except Exception:
            return "stream ended"

    # ------------------------------------------------------------------ sending

    async def _send_loop(self, session: _Session) -> None:
        assert self._wake is not None
        for result in self._take_unsent_results():
            await self._write_result(session, result)
        pending = await self._io(self._prepare_pending, session.batch_max, session.stored_up_to)
        for item in pending:
            await self._wait_room(session)
            self._counters.batches_resent += 1
            await self._send(session, item)
        while True:
            await self._wait_room(session)
            room = session.window - len(session.in_flight)
            prepared, delay = await self._io(self._take, room, session.batch_max)
            for item in prepared:
                await self._send(session, item)
            if not prepared:
                self._wake.clear()
                timeout = self.idle_poll_s if delay <= 0 else min(delay, self.idle_poll_s)
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancel that arrives as the event is set
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()

    async def _wait_room(self, session: _Session) -> None:
        while len(session.in_flight) >= session.window:
            session.room.clear()
            await session.room.wait()

    async def _send(self, session: _Session, item: _Prepared) -> None:
        session.in_flight[item.sequence] = (item.count, time.monotonic())
        await session.write(item.message)
        self._counters.batches_sent += 1
        self._counters.messages_sent += item.count

    def _prepare_pending(self, batch_max: int, stored_up_to: int) -> list[_Prepared]:
        """Worker thread: the pending batches as messages; empty ones (every row quarantined)
        are acknowledged locally. When one no longer fits the registry's batch limit (lowered
        since it was assigned), that batch and every later pending one the registry has not
        stored (above ``stored_up_to``) are released, so their rows are batched again, in
        order, under new sequences; one it has stored is acknowledged locally."""
        out: list[_Prepared] = []
        pending = self.outbox.pending_batches(protobuf=True)
        for index, batch in enumerate(pending):
            assert batch.sequence is not None
            if not batch.protos or (batch.count > batch_max and batch.sequence <= stored_up_to):
                self.outbox.ack_sequence(batch.sequence)
                continue
            if batch.count > batch_max:
                later = [b.sequence for b in pending[index:] if b.sequence is not None]
                released = self.outbox.release_sequences(seq for seq in later if seq > stored_up_to)
                _log.warning(
                    "uplink %s: %d pending batches from sequence %d exceed the registry's "
                    "limit of %d messages: batched again",
                    self.edge_id,
                    released,
                    batch.sequence,
                    batch_max,
                )
                break
            out.append(self._prepared(batch, batch.sequence))
        return out

    def _prepared(self, batch: OutboxBatch, sequence: int) -> _Prepared:
        message = edge_sync_pb2.EdgeMessage(
            batch=edge_sync_pb2.TelemetryBatch(sequence=sequence, messages=batch.protos)
        )
        return _Prepared(sequence, len(batch.protos), message)

    def _take(self, room: int, batch_max: int) -> tuple[list[_Prepared], float]:
        """Worker thread: up to ``room`` batches (a live one, then a paced backlog one), each
        assigned its sequence; and the pacer's delay when the backlog waits for tokens."""
        out: list[_Prepared] = []
        delay = 0.0
        outbox = self.outbox
        for _ in range(3):  # StaleBatchError: the policy dropped rows meanwhile, read again
            try:
                if room - len(out) > 0:
                    live = outbox.live_batch(
                        batch_max,
                        self.max_batch_bytes,
                        window_s=self.live_window_s,
                        protobuf=True,
                    )
                    if live is not None:
                        out.append(self._prepared(live, outbox.assign_sequence(live)))
                if room - len(out) > 0:
                    tokens = min(self._pacer.available(), batch_max)
                    if tokens > 0:
                        backlog = outbox.next_batch(tokens, self.max_batch_bytes, protobuf=True)
                        if backlog is not None:
                            seq = outbox.assign_sequence(backlog)
                            self._pacer.consume(backlog.count)
                            out.append(self._prepared(backlog, seq))
                    else:
                        delay = self._pacer.delay_s(1)
                break
            except StaleBatchError as exc:
                _log.info("uplink %s: %s; reading again", self.edge_id, exc)
        now = time.monotonic()
        if now - self._stats_refreshed >= 1.0 or not out:
            self._stats_refreshed = now
            stats = outbox.stats()
            self._counters.backlog_rows = stats.rows
            self._counters.lag_s = stats.oldest_age_s
        return out, delay

    # ------------------------------------------------------------------ receiving

    async def _read(self, session: _Session) -> None:
        while True:
            message = await session.call.read()
            if message is aio.EOF:
                raise _SessionEnded(await self._end_reason(session.call))
            which = message.WhichOneof("kind")
            if which == "ack":
                await self._on_ack(session, message.ack)
            elif which == "command":
                self._counters.commands += 1
                self._spawn(self._run_command(session, message.command))
            elif which == "desired":
                if self._on_desired is not None:
                    await self._guard("on_desired", self._on_desired(message.desired))
            elif which == "config":
                if self._on_config is not None:
                    await self._guard("on_config", self._on_config(message.config))
            elif which == "welcome":
                _log.warning("uplink %s: a second Welcome, ignored", self.edge_id)

    async def _guard(self, what: str, awaitable: Awaitable[None]) -> None:
        try:
            await awaitable
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("uplink %s: %s failed", self.edge_id, what)

    async def _on_ack(self, session: _Session, ack: edge_sync_pb2.BatchAck) -> None:
        sent = session.in_flight.pop(ack.sequence, None)
        session.room.set()
        if sent is None:
            _log.warning("uplink %s: ack of unknown batch %d", self.edge_id, ack.sequence)
        c = self._counters
        c.batches_acked += 1
        c.last_ack_ms = int(time.time() * 1000)
        if sent is not None:
            c.last_ack_latency_ms = (time.monotonic() - sent[1]) * 1000
        if ack.duplicate:
            c.duplicates += 1
        c.messages_stored += ack.stored
        if ack.rejected:
            c.rejected += len(ack.rejected)
            _log.warning(
                "uplink %s: batch %d: %d messages refused, e.g. %s",
                self.edge_id,
                ack.sequence,
                len(ack.rejected),
                ack.rejected[0],
            )
        await self._io(self.outbox.ack_sequence, ack.sequence)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_command(self, session: _Session, command: common_pb2.Command) -> None:
        try:
            if self._command_guard is not None:
                # the command as signed, or CommandRefused
                command = self._command_guard.check(command)
            result = await self._on_command(command)
            if not result.command_id:
                result = _copy_with_id(result, command.id)
        except asyncio.CancelledError:
            raise
        except CommandRefused as exc:  # logged by the guard
            self._counters.commands_refused += 1
            result = edge_sync_pb2.CommandResult(
                command_id=command.id, status=common_pb2.COMMAND_STATUS_REJECTED, error=str(exc)
            )
        except Exception as exc:
            _log.exception("uplink %s: command %s failed", self.edge_id, command.id)
            result = edge_sync_pb2.CommandResult(
                command_id=command.id,
                status=common_pb2.COMMAND_STATUS_FAILED,
                error=f"{type(exc).__name__}: {exc}",
            )
        current = self._session
        if current is None or current is not session:
            self._unsent_results.append(result)
            return
        await self._write_result(current, result)

    async def _write_result(self, session: _Session, result: edge_sync_pb2.CommandResult) -> None:
        try:
            await session.write(edge_sync_pb2.EdgeMessage(command_result=result))
        except Exception:
            self._unsent_results.append(result)  # sent on the next session
            raise

    def _take_unsent_results(self) -> list[edge_sync_pb2.CommandResult]:
        out, self._unsent_results = self._unsent_results, []
        return out


def _copy_with_id(result: edge_sync_pb2.CommandResult, command_id: str) -> Any:
    out = edge_sync_pb2.CommandResult()
    out.CopyFrom(result)
    out.command_id = command_id
    return out
