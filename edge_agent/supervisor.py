"""The edge agent's supervisor: devices -> reports -> outbox -> uplink, and commands back.

::

    agent = EdgeAgent(load_edge_config("edge.yaml"))
    await agent.run()            # until agent.stop() (any thread; the CLI calls it on SIGTERM)
    agent.status()               # per device diagnostics, outbox and uplink statistics
    await agent.read_property("meter-1", "voltage_l1")     # the admin socket's operations
    await agent.write_property("relay-1", "closed", True)
    await agent.invoke_service("lift-1", "call_car", {"floor": 3})
    async with agent.subscribe() as messages: ...          # live messages (``tail``)

One asyncio task per device: make its driver (:func:`edge_agent.drivers.make_driver`: Modbus
here, BACnet/MQTT/CoAP from :mod:`edge_agent.protocols`), connect it (exponential backoff with
jitter between the configured reconnect ``min`` and ``max``), then poll its **poll groups**:
the points that share a poll interval (each point's report policy: its own, its group's or the
reporting default; a device ``poll_interval`` puts every point in one group). Groups due
together are read in one :meth:`~protocol_adapters.base.DeviceDriver.read_points` call, so the
driver still coalesces their registers. Values a driver pushes (MQTT, BACnet COV, CoAP
Observe) arrive through its sink and take the same path. The acquisition timestamp is taken
just before the read.

Each acquisition becomes messages (:class:`~edge_agent.reporting.ReportBuilder` with a
:class:`~edge_agent.reporting.ReportFilter`), which go to one **appender** task: it writes
everything queued, from all devices, in one outbox transaction (on a worker thread), then pokes
the :class:`~edge_agent.uplink.Uplink`. A device task waits only when the queue is above its
high-water mark. When a read finds the device gone (driver not connected) the task goes back to
reconnecting. An exception in one device's task is caught, logged and recorded in its status;
the task backs off and starts over, and the other devices are not disturbed. With
``local_mqtt`` configured, every message also goes to a
:class:`~edge_agent.local_publish.LocalPublisher` (the local stream with Home Assistant
discovery: best effort, it never makes a device wait).

Commands from the registry: ``set_properties`` writes each parameter (the property must exist
and be writable, the value must be valid for the model); ``invoke_service`` calls the driver's
:meth:`~protocol_adapters.base.DeviceDriver.invoke` with validated inputs. Results go back as
``CommandResult`` (SUCCEEDED with the values written / the service's outputs, or FAILED with
every error).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol

import grpc

from cloud_registry.api.v1 import common_pb2, edge_sync_pb2
from edge_agent.admin import AdminServer
from edge_agent.command_guard import guard_for
from edge_agent.config import DeviceConfig, EdgeConfig
from edge_agent.drivers import Shared, make_driver
from edge_agent.enrollment import renewer_for
from edge_agent.errors import AgentCommandError, UnsupportedDevice
from edge_agent.identity_store import IdentityError, identity_store_for
from edge_agent.local_publish import LocalPublisher
from edge_agent.metrics import AgentMetrics, MetricsEndpoint
from edge_agent.outbox import Outbox, OutboxStats
from edge_agent.poll_groups import policies_of, poll_groups_of, poll_interval_of
from edge_agent.reporting import (
    DIAGNOSTIC_EVENT,
    Diagnostic,
    ReportBuilder,
    ReportFilter,
)
from edge_agent.secret_store import SHARED_KEY as SECRETS
from edge_agent.secret_store import SecretStore
from edge_agent.status import AgentStatus, DevicePhase, DeviceStatus, LocalStreamStatus
from edge_agent.uplink import InventoryItem, Uplink
from protocol_adapters.base import DeviceDriver, DiagnosticState, LinkError, Reading, Update
from security.at_rest import AesGcmCodec, FileKeyProvider
from security.errors import SecurityError
from thing_models.messages import Message, Quality, value_from_protobuf, value_to_protobuf
from thing_models.model import Access, ReportPolicy, ThingModel
from thing_models.telemetry import ModelValidator, compile_validator

__all__ = [
    "AgentStatus",
    "DeviceStatus",
    "EdgeAgent",
    "LocalStreamStatus",
    "PollObserver",
    "poll_groups_of",
    "poll_interval_of",
]

_log = logging.getLogger(__name__)

#: queued values (parameters, plus one per message) above which device tasks wait for the
#: appender: bounds the agent's memory while the outbox is slow (a message may carry 500 values)
_QUEUE_HIGH_WATER = 250_000


def _weight(messages: list[Message]) -> int:
    return len(messages) + sum(len(m.params) for m in messages)


class PollObserver(Protocol):
    """Told about every poll (metrics): once per poll, never per value."""

    def observe_poll(self, device_id: str, seconds: float, values: int, bad: int) -> None: ...


def _agent_version() -> str:
    try:
        return version("community-iot-edge")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@dataclass
class _Device:
    config: DeviceConfig
    model_ref: str
    poll_interval_s: float
    driver: DeviceDriver | None = None
    builder: ReportBuilder | None = None
    validator: ModelValidator | None = None
    policies: dict[str, ReportPolicy] = field(default_factory=dict)
    groups: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    phase: DevicePhase = "starting"
    polls: int = 0
    messages: int = 0
    connect_attempts: int = 0
    task_errors: int = 0
    last_error: str = ""
    poll_now: asyncio.Event = field(default_factory=asyncio.Event)
    #: the latest reading of each property, and its acquisition time (admin ``read``); two
    #: dicts updated whole per poll, so the hot path allocates nothing per value
    latest: dict[str, Reading] = field(default_factory=dict)
    latest_ms: dict[str, int] = field(default_factory=dict)
    #: desired state from the registry not yet applied (the device task applies it)
    desired: dict[str, object] = field(default_factory=dict)
    desired_revision: int = 0


class _Subscriber:
    __slots__ = ("dropped", "queue")

    def __init__(self, max_queue: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(max(1, max_queue))
        self.dropped = 0


class EdgeAgent:
    """Runs the devices of ``config`` and the uplink to its registry (see the module doc).

    ``rng`` seeds the reconnect jitter (tests); ``uplink_options`` are passed to
    :class:`~edge_agent.uplink.Uplink` (e.g. backoff settings); ``observer`` is told about
    every poll (default: :attr:`metrics`, the agent's Prometheus metrics).
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        rng: random.Random | None = None,
        uplink_options: dict[str, Any] | None = None,
        observer: PollObserver | None = None,
    ) -> None:
        self.config = config
        self.metrics = AgentMetrics(self)
        self.observer: PollObserver = observer if observer is not None else self.metrics
        self._rng = rng or random.Random()
        self._uplink_options = dict(uplink_options or {})
        self._filter = ReportFilter()
        self._shared: Shared = {}
        self._builders: dict[int, tuple[ModelValidator, ReportBuilder]] = {}
        self._devices: dict[str, _Device] = {}
        for device in config.devices:
            model = device.thing_model
            ref = str(model.ref) if model is not None else str(device.model)
            self._devices[device.id] = _Device(device, ref, poll_interval_of(device))
        self._outbox: Outbox | None = None
        self._uplink: Uplink | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._running = False
        self._queue: list[Message] = []
        self._queued_weight = 0
        self._queued: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._subscribers: set[_Subscriber] = set()
        self._tail_dropped = 0
        self._closing = False
        self._local: LocalPublisher | None = None

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask :meth:`run` to end; callable from any thread (or a signal handler)."""
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            stopping.set()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)

    def status(self) -> AgentStatus:
        """A snapshot: each device's diagnostics, the outbox's and the uplink's statistics.
        (Reads the outbox statistics: may wait briefly for an append in progress.)"""
        devices = {
            device_id: DeviceStatus(
                device_id=device_id,
                model=dev.model_ref,
                protocol=dev.config.protocol.value,
                endpoint=dev.driver.endpoint if dev.driver is not None else "",
                phase=dev.phase,
                diagnostics=(
                    dev.driver.diagnostics.snapshot()
                    if dev.driver is not None
                    else DiagnosticState()
                ),
                poll_interval_s=dev.poll_interval_s,
                polls=dev.polls,
                messages=dev.messages,
                connect_attempts=dev.connect_attempts,
                task_errors=dev.task_errors,
                last_error=dev.last_error,
            )
            for device_id, dev in self._devices.items()
        }
        outbox_stats: OutboxStats | None = None
        if self._outbox is not None:
            try:
                outbox_stats = self._outbox.stats()
            except Exception as exc:  # closed meanwhile
                _log.debug("outbox stats: %s", exc)
        return AgentStatus(
            edge_id=self.config.edge_id,
            running=self._running,
            devices=devices,
            outbox=outbox_stats,
            uplink=self._uplink.stats if self._uplink is not None else None,
            queued=len(self._queue),
            tail_dropped=self._tail_dropped,
            local_stream=self._local_stream_status(),
        )

    # ------------------------------------------------------------------ main

    async def run(self) -> None:
        """Open the admin socket, the metrics endpoint (when configured) and the outbox, start
        the uplink and one task per device; until :meth:`stop`. The admin socket comes
        first: a second agent on the same configuration stops there, before the outbox."""
        admin = AdminServer(self, self.config.admin_socket)
        await admin.start()
        endpoint: MetricsEndpoint | None = None
        try:
            if self.config.metrics:
                endpoint = MetricsEndpoint(self.metrics, self.config.metrics)
                await endpoint.start()
            await self._run()
        finally:
            if endpoint is not None:
                await endpoint.stop()
            await admin.stop()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        if self._stop_requested.is_set():
            self._stopping.set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="edge-outbox")
        storage = self.config.storage
        try:
            outbox = await self._io(self._open_outbox)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._outbox = outbox
        uplink = Uplink(
            self.config.registry.address,
            self.config.edge_id,
            outbox,
            agent_version=_agent_version(),
            config_version=self._config_version(),
            inventory=self._inventory,
            on_command=self.handle_command,
            on_desired=self.handle_desired,
            credentials=self._credentials(),
            command_guard=self._command_guard,
            **self._uplink_options,
        )
        self._uplink = uplink
        self._local = self._local_publisher()
        if self._local is not None:
            await self._local.start()
        self._running = True
        _log.info(
            "edge %s: %d devices, outbox %s, registry %s",
            self.config.edge_id,
            len(self._devices),
            storage.outbox,
            self.config.registry.address,
        )
        store = SecretStore.for_config(self.config)  # passwords named {secret: NAME}
        if store is not None:
            self._shared[SECRETS] = store
        for dev in self._devices.values():
            self._prepare(dev)
        # Drivers, codecs and validators live as long as the agent: keep them out of the
        # cyclic collector's way (full collections over them cost more than the polling).
        gc.collect()
        gc.freeze()
        uplink_task = asyncio.create_task(self._run_uplink(uplink), name="uplink")
        renewer = renewer_for(self.config, on_renewed=lambda _: uplink.reconnect())
        renewal = asyncio.create_task(renewer.run(), name="renewal") if renewer else None
        appender = asyncio.create_task(self._run_appender(outbox, uplink), name="appender")
        device_tasks = [
            asyncio.create_task(self._run_device(dev), name=f"device-{device_id}")
            for device_id, dev in self._devices.items()
        ]
        try:
            await self._stopping.wait()
        finally:
            self._running = False
            for task in device_tasks:
                task.cancel()
            for task in device_tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for dev in self._devices.values():
                dev.phase = "stopped" if dev.phase != "unsupported" else dev.phase
                if dev.driver is not None:
                    dev.driver.set_sink(None)
                    with contextlib.suppress(Exception):
                        await dev.driver.close()
            self._closing = True  # the appender stores what is queued, then ends
            self._queued.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await appender
            local, self._local = self._local, None
            if local is not None:
                with contextlib.suppress(Exception):
                    await local.stop()
            if renewal is not None:
                renewal.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renewal
            uplink.stop()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(uplink_task, 10.0)
            try:
                await self._io(outbox.close)
            finally:
                executor, self._executor = self._executor, None
                if executor is not None:
                    await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
                self._loop = None
                gc.unfreeze()

    def _local_publisher(self) -> LocalPublisher | None:
        """The ``local_mqtt`` stream's publisher (every device with its model), or None."""
        local = self.config.local_mqtt
        if local is None:
            return None
        return LocalPublisher(
            local.host,
            local.port,
            self.config.edge_id,
            {
                device_id: dev.config.thing_model
                for device_id, dev in self._devices.items()
                if dev.config.thing_model is not None
            },
            prefix=local.prefix,
            home_assistant=local.home_assistant,
            discovery_prefix=local.discovery_prefix,
            queue_size=local.queue,
            qos=local.qos,
            client_id=local.client_id,
            username=local.username,
            password=local.password,
        )

    def _local_stream_status(self) -> LocalStreamStatus | None:
        local = self._local
        if local is None:
            return None
        return LocalStreamStatus(
            broker=f"{local.host}:{local.port}",
            connected=local.connected,
            published=local.published,
            dropped=local.dropped,
            last_error=local.last_error,
        )

    def _open_outbox(self) -> Outbox:
        """The outbox (AES-GCM payloads when ``security.encrypt_outbox``). First the edge's
        security state: the identity folder and the command guard (its replay state), so an
        edge not enrolled, or with loose permissions, fails here, before anything starts."""
        store = identity_store_for(self.config)
        if store is not None:
            store.load()  # NotEnrolled / IdentityError (loose permissions ...)
        self._command_guard = guard_for(self.config)
        storage = self.config.storage
        storage.outbox.parent.mkdir(parents=True, exist_ok=True)
        codec = None
        security = self.config.security
        if security is not None and security.encrypt_outbox:
            key_file = security.outbox_key_file
            key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                codec = AesGcmCodec(FileKeyProvider(key_file))
            except SecurityError as exc:
                raise IdentityError(f"outbox encryption key: {exc}") from exc
        return Outbox(
            storage.outbox, max_bytes=storage.max_bytes, max_age_s=storage.max_age_s, codec=codec
        )

    async def _io(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _config_version(self) -> str:
        if not self.config.source:
            return ""
        try:
            with open(self.config.source, "rb") as file:
                return hashlib.sha256(file.read()).hexdigest()[:16]
        except OSError:
            return ""

    def _credentials(
        self,
    ) -> grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials] | None:
        """None (plaintext, ``registry.insecure``: warned), the configured ``ca``/``cert``/``key``
        files, or the identity folder's mTLS credentials, read again for each session."""
        registry = self.config.registry
        if registry.insecure:
            _log.warning(
                "edge %s: registry.insecure: plaintext to %s and unsigned commands accepted "
                "(development only)",
                self.config.edge_id,
                registry.address,
            )
            return None
        store = identity_store_for(self.config)
        if store is not None:
            return lambda: store.load().channel_credentials()

        def read(path: Any) -> bytes | None:
            return path.read_bytes() if path is not None else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(registry.ca),
            private_key=read(registry.key),
            certificate_chain=read(registry.cert),
        )

    def _inventory(self) -> list[InventoryItem]:
        return [
            (
                device_id,
                dev.model_ref,
                dev.driver is not None and dev.driver.diagnostics.state != "offline",
            )
            for device_id, dev in self._devices.items()
        ]

    async def _run_uplink(self, uplink: Uplink) -> None:
        try:
            await uplink.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("edge %s: the uplink failed", self.config.edge_id)

    # ------------------------------------------------------------------ the appender

    def _take_queue(self) -> list[Message]:
        batch, self._queue = self._queue, []
        self._queued_weight = 0
        if self._room is not None:
            self._room.set()
        return batch

    def _submit(self, messages: list[Message]) -> None:
        """Queue ``messages`` for the outbox and hand them to live subscribers."""
        self._queue.extend(messages)
        self._queued_weight += _weight(messages)
        if self._queued is not None:
            self._queued.set()
        if self._queued_weight >= _QUEUE_HIGH_WATER and self._room is not None:
            self._room.clear()
        if self._local is not None:
            self._local.publish(messages)
        for subscriber in self._subscribers:
            for message in messages:
                try:
                    subscriber.queue.put_nowait(message)
                except asyncio.QueueFull:
                    subscriber.dropped += 1
                    self._tail_dropped += 1

    async def _run_appender(self, outbox: Outbox, uplink: Uplink) -> None:
        """Write what the devices queued, all of it in one outbox transaction per round;
        once :attr:`_closing`, store what is left and end (never cancelled mid-append, so
        nothing is stored twice)."""
        assert self._queued is not None
        while True:
            await self._queued.wait()
            self._queued.clear()
            if self._queue:
                batch = self._take_queue()
                try:
                    await self._io(outbox.append, batch)
                except Exception:
                    _log.exception("edge %s: outbox append failed", self.config.edge_id)
                    if self._closing:
                        return
                    self._queue[:0] = batch
                    self._queued_weight += _weight(batch)
                    await asyncio.sleep(1.0)
                    self._queued.set()
                    continue
                uplink.poke()
            if self._closing and not self._queue:
                return

    async def _deliver(self, dev: _Device, ts_ms: int, readings: Mapping[str, Reading]) -> None:
        builder = dev.builder
        assert builder is not None
        dev.latest.update(readings)
        dev.latest_ms.update(dict.fromkeys(readings, ts_ms))
        messages = builder.build(
            dev.config.id, ts_ms, readings, report_filter=self._filter, policy_for=dev.policies
        )
        if messages:
            dev.messages += len(messages)
            self._submit(messages)
            if self._room is not None and not self._room.is_set():
                await self._room.wait()

    def _on_update(self, dev: _Device, update: Update) -> None:
        """A driver's pushed values and events (called on the event loop)."""
        builder = dev.builder
        if builder is None:
            return
        messages: list[Message] = []
        if update.readings:
            dev.latest.update(update.readings)
            dev.latest_ms.update(dict.fromkeys(update.readings, update.ts_ms))
            messages.extend(
                builder.build(
                    dev.config.id,
                    update.ts_ms,
                    update.readings,
                    report_filter=self._filter,
                    policy_for=dev.policies,
                )
            )
        for event_id, outputs in update.events:
            messages.extend(builder.build_event(dev.config.id, update.ts_ms, event_id, outputs))
        if messages:
            dev.messages += len(messages)
            self._submit(messages)

    # ------------------------------------------------------------------ devices

    def _backoff(self, dev: _Device, attempt: int) -> float:
        low, high = dev.config.reconnect.min_s, dev.config.reconnect.max_s
        base = min(high, low * 2.0 ** min(attempt, 32))
        return base * (0.5 + 0.5 * self._rng.random())  # jitter: 50..100 % of the step

    def _prepare(self, dev: _Device) -> bool:
        """Build the driver and the report builder; False when the device cannot be run."""
        config = dev.config
        model = config.thing_model
        try:
            if model is None:
                raise UnsupportedDevice(f"model {config.model} is not loaded")
            driver = make_driver(config, self._shared)
        except UnsupportedDevice as exc:
            dev.phase = "unsupported"
            dev.last_error = str(exc)
            _log.warning("device %s: %s", config.id, exc)
            return False
        compiled = self._builders.get(id(model))
        if compiled is None:  # one validator and builder per model, shared by its devices
            validator = compile_validator(model)
            compiled = self._builders[id(model)] = (validator, ReportBuilder(model.ref, validator))
        dev.validator, dev.builder = compiled
        dev.policies = policies_of(config)
        dev.groups = poll_groups_of(config, driver.pollable)
        driver.set_sink(lambda update: self._on_update(dev, update))
        dev.driver = driver
        return True

    async def _run_device(self, dev: _Device) -> None:
        """Connect, poll, reconnect; an unexpected error restarts the device after a backoff."""
        attempt = 0
        while True:
            try:
                if dev.driver is None and (dev.phase == "unsupported" or not self._prepare(dev)):
                    return
                await self._connect(dev)
                attempt = 0
                await self._poll(dev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                dev.task_errors += 1
                dev.last_error = f"{type(exc).__name__}: {exc}"
                _log.exception("device %s: task failed; restarting", dev.config.id)
                dev.phase = "backoff"
                await asyncio.sleep(self._backoff(dev, attempt))
                attempt += 1

    async def _connect(self, dev: _Device) -> None:
        driver = dev.driver
        assert driver is not None
        attempt = 0
        while True:
            dev.phase = "connecting"
            dev.connect_attempts += 1
            try:
                await driver.connect()
                _log.info("device %s: connected to %s", dev.config.id, driver.endpoint)
                return
            except LinkError as exc:
                dev.last_error = f"{type(exc).__name__}: {exc}"
                delay = self._backoff(dev, attempt)
                attempt += 1
                _log.info("device %s: %s; retry in %.2fs", dev.config.id, exc, delay)
                dev.phase = "backoff"
                await asyncio.sleep(delay)

    async def _poll(self, dev: _Device) -> None:
        """Poll the device's groups until the connection is lost (returns)."""
        driver = dev.driver
        assert driver is not None
        dev.phase = "polling"
        loop = asyncio.get_running_loop()
        groups = dev.groups
        due = [loop.time()] * len(groups)
        observer = self.observer
        while True:
            now = loop.time()
            forced = dev.poll_now.is_set()
            dev.poll_now.clear()
            ready = [i for i, at in enumerate(due) if forced or at <= now + 0.001]
            if ready:
                names = (
                    groups[ready[0]][1]
                    if len(ready) == 1
                    else frozenset().union(*(groups[i][1] for i in ready))
                )
                ts_ms = int(time.time() * 1000)
                started = time.perf_counter()
                readings = await driver.read_points(names)
                dev.polls += 1
                if observer is not None:
                    bad = sum(1 for r in readings.values() if r.quality != Quality.GOOD)
                    observer.observe_poll(
                        dev.config.id, time.perf_counter() - started, len(readings), bad
                    )
                await self._deliver(dev, ts_ms, readings)
                if dev.desired:
                    await self._apply_desired(dev)
                now = loop.time()
                for i in ready:
                    due[i] += groups[i][0]
                    if due[i] < now:  # overran: skip the missed polls
                        due[i] = now
            if not driver.connected and (not groups or driver.diagnostics.state == "offline"):
                dev.last_error = driver.diagnostics.last_error
                _log.info("device %s: connection lost: %s", dev.config.id, dev.last_error)
                return
            wait = min(due) - loop.time() if due else 1.0  # push only: watch the connection
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel that
            # arrives as the event is set, and the task would then wait out a long interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await dev.poll_now.wait()

    # ------------------------------------------------------------------ operations

    def _device(self, device_id: str) -> tuple[_Device, DeviceDriver, ThingModel]:
        dev = self._devices.get(device_id)
        if dev is None:
            raise AgentCommandError(f"unknown device {device_id!r}")
        model = dev.config.thing_model
        if dev.driver is None or model is None:
            raise AgentCommandError(
                f"device {device_id} is not driven: {dev.last_error or dev.phase}"
            )
        return dev, dev.driver, model

    async def read_property(self, device_id: str, property_id: str) -> tuple[int, Reading]:
        """A fresh reading of one property (the latest pushed one for a device that pushes):
        ``(acquisition time in ms, reading)``."""
        dev, driver, model = self._device(device_id)
        if model.property(property_id) is None:
            raise AgentCommandError(
                f"device {device_id}: model {model.ref} has no property {property_id!r}"
            )
        if property_id in driver.pollable:
            ts_ms = int(time.time() * 1000)
            readings = await driver.read_points(frozenset((property_id,)))
            reading = readings.get(property_id)
            if reading is not None:
                dev.latest[property_id] = reading
                dev.latest_ms[property_id] = ts_ms
                return ts_ms, reading
        latest = dev.latest.get(property_id)
        if latest is None:
            raise AgentCommandError(f"device {device_id}: no value of {property_id!r} yet")
        return dev.latest_ms[property_id], latest

    async def write_property(self, device_id: str, property_id: str, value: object) -> object:
        """Write one property (checked against the model first) and return the value read
        back (None when the protocol gives none); the next poll reports it at once."""
        dev, driver, model = self._device(device_id)
        prop = model.property(property_id)
        if prop is None:
            raise AgentCommandError(
                f"device {device_id}: model {model.ref} has no property {property_id!r}"
            )
        if prop.access is not Access.READ_WRITE:
            raise AgentCommandError(f"device {device_id}: property {property_id!r} is read-only")
        assert dev.validator is not None
        issue = dev.validator.check_value(property_id, value)
        if issue is not None:
            raise AgentCommandError(f"device {device_id}: {property_id}: {issue.message}")
        back = await driver.write(property_id, value, read_back=True)
        dev.poll_now.set()
        if back is None:
            return None
        if back.quality != Quality.GOOD:
            raise AgentCommandError(
                f"device {device_id}: {property_id} was written but reads back "
                f"{back.quality.value}: {back.reason}"
            )
        return back.value

    async def invoke_service(
        self, device_id: str, service_id: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        """Call one service with inputs checked against the model; its outputs."""
        dev, driver, model = self._device(device_id)
        if model.service(service_id) is None:
            raise AgentCommandError(
                f"device {device_id}: model {model.ref} has no service {service_id!r}"
            )
        assert dev.validator is not None
        issues = dev.validator.check_service_input(service_id, args)
        if issues:
            raise AgentCommandError(
                f"device {device_id}: service {service_id}: "
                + "; ".join(issue.message for issue in issues)
            )
        outputs = await driver.invoke(service_id, args)
        dev.poll_now.set()
        return outputs

    @contextlib.asynccontextmanager
    async def subscribe(self, max_queue: int = 1000) -> AsyncIterator[AsyncIterator[Message]]:
        """Live messages as the devices produce them (``tail``); a subscriber that falls
        ``max_queue`` messages behind loses messages (counted), never slows the agent."""
        subscriber = _Subscriber(max_queue)
        self._subscribers.add(subscriber)

        async def messages() -> AsyncIterator[Message]:
            while True:
                yield await subscriber.queue.get()

        try:
            yield messages()
        finally:
            self._subscribers.discard(subscriber)

    # ------------------------------------------------------------------ commands

    async def handle_desired(self, change: edge_sync_pb2.DesiredChange) -> None:
        """The uplink's ``on_desired``: remember the device's desired state; its task writes
        what differs from the reported values after its next poll (so a device that is
        offline gets it when it is back)."""
        dev = self._devices.get(change.device_id)
        if dev is None:
            _log.warning("desired state for unknown device %r ignored", change.device_id)
            return
        if change.revision and change.revision <= dev.desired_revision:
            return  # already applied (resent on reconnect)
        dev.desired_revision = change.revision
        dev.desired = {
            name: value_from_protobuf(change.desired[name], name) for name in sorted(change.desired)
        }
        dev.desired = {name: v for name, v in dev.desired.items() if v is not None}
        dev.poll_now.set()

    async def _apply_desired(self, dev: _Device) -> None:
        """Write each desired value that the latest reading does not already show. A value
        the model refuses is dropped with a diagnostic event; a link error keeps it for the
        next poll."""
        for name, value in list(dev.desired.items()):
            latest = dev.latest.get(name)
            if latest is not None and latest.quality is Quality.GOOD and latest.value == value:
                del dev.desired[name]
                continue
            try:
                await self.write_property(dev.config.id, name, value)
            except LinkError as exc:
                _log.info("device %s: desired %s not written yet: %s", dev.config.id, name, exc)
                return
            except Exception as exc:
                del dev.desired[name]
                reason = str(exc) if isinstance(exc, AgentCommandError) else f"{exc!r}"
                _log.warning("device %s: desired %s refused: %s", dev.config.id, name, reason)
                diagnostic = Diagnostic(name, "desired", "write", name, reason[:500], Quality.BAD)
                self._submit(
                    [
                        Message.event(
                            dev.model_ref,
                            dev.config.id,
                            DIAGNOSTIC_EVENT,
                            diagnostic.params(),
                            ts_ms=int(time.time() * 1000),
                        )
                    ]
                )
                continue
            del dev.desired[name]

    async def handle_command(self, command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
        """The uplink's ``on_command``: set properties or call a service on the device."""
        failed = common_pb2.COMMAND_STATUS_FAILED
        result = edge_sync_pb2.CommandResult(
            command_id=command.id, status=common_pb2.COMMAND_STATUS_SUCCEEDED
        )
        errors: list[str] = []
        try:
            params = {
                name: value_from_protobuf(command.params[name], name)
                for name in sorted(command.params)
            }
            self._device(command.device_id)  # unknown or not driven: one error for all
            if command.kind == common_pb2.COMMAND_KIND_SET_PROPERTIES:
                for name, value in params.items():
                    try:
                        back = await self.write_property(command.device_id, name, value)
                    except AgentCommandError as exc:
                        errors.append(f"{name}: {exc}")
                        continue
                    except Exception as exc:
                        errors.append(f"{name}: {type(exc).__name__}: {exc}")
                        continue
                    written = value if back is None else back
                    result.result[name].CopyFrom(value_to_protobuf(written, name))
            elif command.kind == common_pb2.COMMAND_KIND_INVOKE_SERVICE:
                outputs = await self.invoke_service(command.device_id, command.service, params)
                for name, value in outputs.items():
                    result.result[name].CopyFrom(value_to_protobuf(value, name))
            else:
                errors.append(f"unsupported command kind {command.kind}")
        except AgentCommandError as exc:
            errors.append(str(exc))
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
        if errors:
            result.status = failed
            result.error = "; ".join(errors)
        return result
