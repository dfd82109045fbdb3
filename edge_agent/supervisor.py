"""The edge agent's supervisor: devices -> reports -> outbox -> uplink, and commands back.

::

    agent = EdgeAgent(load_edge_config("edge.yaml"))
    await agent.run()            # until agent.stop() (any thread; the CLI calls it on SIGTERM)
    agent.status()               # per device diagnostics, outbox and uplink statistics

One asyncio task per device: connect its :class:`~protocol_adapters.modbus.driver.ModbusDriver`
(exponential backoff with jitter between the configured reconnect ``min`` and ``max``), then
poll every ``poll_interval`` (the device's, else the fastest policy poll interval of its
points), turn each acquisition into messages with :class:`~edge_agent.reporting.ReportBuilder`
and a :class:`~edge_agent.reporting.ReportFilter` (the acquisition timestamp is taken just
before the read), append them to the :class:`~edge_agent.outbox.Outbox` on a worker thread and
poke the :class:`~edge_agent.uplink.Uplink`. When a read finds the device gone (driver offline
and disconnected) the task goes back to reconnecting. An exception in one device's task is
caught, logged and recorded in its status; the task backs off and starts over, and the other
devices are not disturbed.

Commands from the registry: ``set_properties`` writes each parameter with
:meth:`ModbusDriver.write` (SUCCEEDED with the written values, or FAILED with every error);
``invoke_service`` is FAILED ("services not supported yet").

Only Modbus TCP connections (``socket`` or ``rtu`` framer) are driven so far; a serial device
is recorded as ``unsupported`` and left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, TypeVar

import grpc

from cloud_registry.api.v1 import common_pb2, edge_sync_pb2
from edge_agent.config import DeviceConfig, EdgeConfig, ModbusTcpConnection
from edge_agent.outbox import Outbox, OutboxStats
from edge_agent.reporting import ReportBuilder, ReportFilter, policies_for_points
from edge_agent.uplink import InventoryItem, Uplink, UplinkStats
from protocol_adapters.modbus.driver import DiagnosticState, ModbusDriver
from protocol_adapters.modbus.errors import ModbusError
from thing_models.messages import Message, value_from_protobuf, value_to_protobuf
from thing_models.model import ReportPolicy
from thing_models.telemetry import compile_validator

__all__ = ["AgentStatus", "DeviceStatus", "EdgeAgent", "poll_interval_of"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DevicePhase = Literal["starting", "connecting", "polling", "backoff", "unsupported", "stopped"]
_DEFAULT_POLL_S = 10.0
_MIN_POLL_S = 0.01


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A snapshot of one device's task."""

    device_id: str
    model: str
    phase: DevicePhase
    diagnostics: DiagnosticState
    poll_interval_s: float
    polls: int
    messages: int
    connect_attempts: int
    task_errors: int
    last_error: str


@dataclass(frozen=True, slots=True)
class AgentStatus:
    edge_id: str
    running: bool
    devices: dict[str, DeviceStatus]
    outbox: OutboxStats | None
    uplink: UplinkStats | None


def poll_interval_of(device: DeviceConfig) -> float:
    """The device's ``poll_interval``, else the fastest policy poll interval of its points,
    else the reporting default's (10 s when none is set)."""
    if device.poll_interval_s is not None:
        return max(device.poll_interval_s, _MIN_POLL_S)
    bindings = device.bindings()
    intervals: list[float] = []
    if bindings.modbus is not None:
        policies = policies_for_points(bindings.modbus.points, bindings.reporting)
        intervals = [p.poll_interval_s for p in policies.values() if p.poll_interval_s]
    if not intervals and bindings.reporting.default.poll_interval_s:
        intervals = [bindings.reporting.default.poll_interval_s]
    return max(min(intervals), _MIN_POLL_S) if intervals else _DEFAULT_POLL_S


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
    driver: ModbusDriver | None = None
    builder: ReportBuilder | None = None
    policies: dict[str, ReportPolicy] = field(default_factory=dict)
    phase: DevicePhase = "starting"
    polls: int = 0
    messages: int = 0
    connect_attempts: int = 0
    task_errors: int = 0
    last_error: str = ""
    poll_now: asyncio.Event = field(default_factory=asyncio.Event)


class EdgeAgent:
    """Runs the devices of ``config`` and the uplink to its registry (see the module doc).

    ``rng`` seeds the reconnect jitter (tests); ``uplink_options`` are passed to
    :class:`~edge_agent.uplink.Uplink` (e.g. backoff settings).
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        rng: random.Random | None = None,
        uplink_options: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._uplink_options = dict(uplink_options or {})
        self._filter = ReportFilter()
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
                phase=dev.phase,
                diagnostics=replace(
                    dev.driver.diagnostics if dev.driver is not None else DiagnosticState(),
                    exception_codes=dict(
                        dev.driver.diagnostics.exception_codes if dev.driver is not None else {}
                    ),
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
        )

    # ------------------------------------------------------------------ main

    async def run(self) -> None:
        """Open the outbox, start the uplink and one task per device; until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
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
            credentials=self._credentials(),
            **self._uplink_options,
        )
        self._uplink = uplink
        self._running = True
        _log.info(
            "edge %s: %d devices, outbox %s, registry %s",
            self.config.edge_id,
            len(self._devices),
            storage.outbox,
            self.config.registry.address,
        )
        uplink_task = asyncio.create_task(self._run_uplink(uplink), name="uplink")
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
                    with contextlib.suppress(Exception):
                        await dev.driver.close()
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

    def _open_outbox(self) -> Outbox:
        storage = self.config.storage
        storage.outbox.parent.mkdir(parents=True, exist_ok=True)
        return Outbox(storage.outbox, max_bytes=storage.max_bytes, max_age_s=storage.max_age_s)

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

    def _credentials(self) -> grpc.ChannelCredentials | None:
        registry = self.config.registry
        if registry.insecure:
            return None

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

    # ------------------------------------------------------------------ devices

    def _backoff(self, dev: _Device, attempt: int) -> float:
        low, high = dev.config.reconnect.min_s, dev.config.reconnect.max_s
        base = min(high, low * 2.0 ** min(attempt, 32))
        return base * (0.5 + 0.5 * self._rng.random())  # jitter: 50..100 % of the step

    def _prepare(self, dev: _Device) -> bool:
        """Build the driver and the report builder; False when the device cannot be run."""
        config = dev.config
        model = config.thing_model
        binding = config.bindings().modbus
        if model is None or binding is None:
            dev.phase = "unsupported"
            dev.last_error = "no model or no modbus binding"
            return False
        connection = config.connection
        if not isinstance(connection, ModbusTcpConnection):
            dev.phase = "unsupported"
            dev.last_error = "serial Modbus connections are not supported yet"
            _log.warning("device %s: %s", config.id, dev.last_error)
            return False
        dev.driver = ModbusDriver(
            connection.host,
            connection.port,
            replace(binding, unit_id=connection.unit_id),
            model,
            timeout_s=connection.timeout_s,
            framer="rtu" if connection.framer.value == "rtu" else "socket",
        )
        dev.builder = ReportBuilder(model.ref, compile_validator(model))
        dev.policies = policies_for_points(binding.points, config.bindings().reporting)
        return True

    async def _run_device(self, dev: _Device) -> None:
        """Connect, poll, reconnect; an unexpected error restarts the device after a backoff."""
        attempt = 0
        while True:
            try:
                if dev.driver is None and not self._prepare(dev):
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
                _log.info("device %s: connected to %s:%d", dev.config.id, driver.host, driver.port)
                return
            except ModbusError as exc:
                dev.last_error = f"{type(exc).__name__}: {exc}"
                delay = self._backoff(dev, attempt)
                attempt += 1
                _log.info("device %s: %s; retry in %.2fs", dev.config.id, exc, delay)
                dev.phase = "backoff"
                await asyncio.sleep(delay)

    async def _poll(self, dev: _Device) -> None:
        """Poll until the connection is lost (returns)."""
        driver, builder = dev.driver, dev.builder
        assert driver is not None
        assert builder is not None
        dev.phase = "polling"
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            dev.poll_now.clear()
            ts_ms = int(time.time() * 1000)
            readings = await driver.read_all()
            dev.polls += 1
            messages = builder.build(
                dev.config.id,
                ts_ms,
                readings,
                report_filter=self._filter,
                policy_for=dev.policies,
            )
            if messages:
                await self._append(messages)
                dev.messages += len(messages)
            if driver.diagnostics.state == "offline" and not driver.connected:
                dev.last_error = driver.diagnostics.last_error
                _log.info("device %s: connection lost: %s", dev.config.id, dev.last_error)
                return
            next_at += dev.poll_interval_s
            now = loop.time()
            if next_at < now:  # overran: skip the missed polls
                next_at = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dev.poll_now.wait(), next_at - now)

    async def _append(self, messages: list[Message]) -> None:
        assert self._outbox is not None
        await self._io(self._outbox.append, messages)
        if self._uplink is not None:
            self._uplink.poke()

    # ------------------------------------------------------------------ commands

    async def handle_command(self, command: common_pb2.Command) -> edge_sync_pb2.CommandResult:
        """The uplink's ``on_command``: set properties through the device's driver."""
        failed = common_pb2.COMMAND_STATUS_FAILED
        dev = self._devices.get(command.device_id)
        if dev is None:
            return edge_sync_pb2.CommandResult(
                command_id=command.id, status=failed, error=f"unknown device {command.device_id!r}"
            )
        if command.kind == common_pb2.COMMAND_KIND_INVOKE_SERVICE:
            return edge_sync_pb2.CommandResult(
                command_id=command.id, status=failed, error="services not supported yet"
            )
        if command.kind != common_pb2.COMMAND_KIND_SET_PROPERTIES:
            return edge_sync_pb2.CommandResult(
                command_id=command.id, status=failed, error=f"unsupported kind {command.kind}"
            )
        driver = dev.driver
        if driver is None:
            return edge_sync_pb2.CommandResult(
                command_id=command.id,
                status=failed,
                error=f"device {dev.config.id} is not driven: {dev.last_error or dev.phase}",
            )
        result = edge_sync_pb2.CommandResult(
            command_id=command.id, status=common_pb2.COMMAND_STATUS_SUCCEEDED
        )
        errors: list[str] = []
        for name in sorted(command.params):
            try:
                value = value_from_protobuf(command.params[name], name)
                await driver.write(name, value)
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            result.result[name].CopyFrom(value_to_protobuf(value, name))
        dev.poll_now.set()  # report the new values at once
        if errors:
            result.status = failed
            result.error = "; ".join(errors)
        return result
