"""The supervisor's own logic against an in-memory driver (the real-peer paths are in
test_supervisor.py): poll groups and their schedule, pushed values and events, the admin
operations (read, write, invoke, subscribe) and registry commands."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import Any

import pytest

from cloud_registry.api.v1 import common_pb2, edge_sync_pb2
from edge_agent import supervisor
from edge_agent.config import DeviceConfig, EdgeConfig, load_edge_config
from edge_agent.errors import AgentCommandError
from edge_agent.outbox import Outbox
from edge_agent.reporting import DIAGNOSTIC_EVENT
from edge_agent.supervisor import EdgeAgent, poll_groups_of
from protocol_adapters.base import DiagnosticState, Reading, Update, UpdateSink
from thing_models.messages import Message, MessageKind, Quality, value_to_protobuf

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
CHARGER = "community.energy/ev-charger@1.0.0"


class FakeDriver:
    """Answers every point with a counter; records reads, writes and service calls."""

    def __init__(self, properties: Collection[str], *, push_only: bool = False) -> None:
        self.diagnostics = DiagnosticState()
        self._pollable = frozenset(() if push_only else properties)
        self.sink: UpdateSink | None = None
        self.reads: list[tuple[float, frozenset[str]]] = []
        self.writes: list[tuple[str, object]] = []
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.values: dict[str, Any] = {}
        self.is_connected = False

    @property
    def endpoint(self) -> str:
        return "fake"

    @property
    def connected(self) -> bool:
        return self.is_connected

    @property
    def pollable(self) -> frozenset[str]:
        return self._pollable

    def set_sink(self, sink: UpdateSink | None) -> None:
        self.sink = sink

    async def connect(self) -> None:
        self.is_connected = True
        self.diagnostics.ok()

    async def close(self) -> None:
        self.is_connected = False

    async def read_points(self, properties: Collection[str]) -> dict[str, Reading]:
        self.reads.append((time.monotonic(), frozenset(properties)))
        return {
            name: Reading(self.values[name], Quality.GOOD)
            for name in properties
            if name in self.values
        }

    async def write(
        self, property_id: str, value: object, *, read_back: bool = False
    ) -> Reading | None:
        self.writes.append((property_id, value))
        self.values[property_id] = value
        return Reading(value, Quality.GOOD) if read_back else None

    async def invoke(self, service_id: str, args: Mapping[str, object]) -> dict[str, object]:
        self.calls.append((service_id, dict(args)))
        return {"accepted": True}


def charger_config(tmp_path: Path, extra: str = "") -> EdgeConfig:
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""edge_id: edge-1
registry: {{address: "127.0.0.1:9", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
devices:
  - id: charger-1
    model: {CHARGER}
    protocol: modbus
    connection: {{transport: tcp, host: 127.0.0.1, port: 1502}}
{extra}""",
        encoding="utf-8",
    )
    return load_edge_config(path)


def with_fake(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[DeviceConfig], FakeDriver]
) -> list[FakeDriver]:
    made: list[FakeDriver] = []

    def fake_make_driver(device: DeviceConfig, shared: dict[object, object]) -> FakeDriver:
        driver = make(device)
        made.append(driver)
        return driver

    monkeypatch.setattr(supervisor, "make_driver", fake_make_driver)
    return made


def charger_driver(device: DeviceConfig) -> FakeDriver:
    """A fake driver polling every Modbus point of the charger, with plausible values."""
    driver = FakeDriver([p.property for p in device.bindings().modbus.points])  # type: ignore[union-attr]
    driver.values = charger_values()
    return driver


def charger_values() -> dict[str, Any]:
    return {
        "status": "Charging",
        "vehicle_state": "C",
        "cable_locked": True,
        "current_limit": 16.0,
        "phases": 3,
        "temperature": 31.5,
        "voltage_l1": 230.1,
        "active_power": 7200.0,
        "energy_total": 1234.5,
        "serial_number": "SN-1",
    }


def in_event_loop(
    test: Callable[..., Coroutine[Any, Any, None]],
) -> Callable[..., None]:
    """Run an async test in a fresh event loop, with a 30 s limit."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


@contextlib.asynccontextmanager
async def running(agent: EdgeAgent) -> AsyncIterator[EdgeAgent]:
    """``agent.run()`` as a task for the block; stopped and awaited after it."""
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.stop()
        await task


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def stored(config: EdgeConfig) -> list[Message]:
    outbox = Outbox(config.storage.outbox, max_bytes=1 << 30, max_age_s=1e9)
    try:
        batch = outbox.next_batch(max_messages=10_000, max_bytes=1 << 30)
        return list(batch.messages) if batch is not None else []
    finally:
        outbox.close()


# --------------------------------------------------------------------------- poll groups


def test_poll_groups_follow_each_points_policy(tmp_path: Path) -> None:
    config = charger_config(tmp_path)
    (device,) = config.devices
    points = {p.property for p in device.bindings().modbus.points}  # type: ignore[union-attr]
    groups = poll_groups_of(device, frozenset(points))
    intervals = [interval for interval, _ in groups]
    assert intervals == [2.0, 5.0, 60.0, 3600.0]
    by_interval = dict(groups)
    assert {"status", "cable_locked", "current_limit", "phases"} <= by_interval[2.0]
    assert "voltage_l1" in by_interval[5.0]  # the reporting default
    assert {"temperature", "energy_total"} <= by_interval[60.0]  # own policy, group energy
    assert by_interval[3600.0] == {"serial_number", "max_current"}
    assert set().union(*by_interval.values()) == points


def test_a_device_poll_interval_puts_every_point_in_one_group(tmp_path: Path) -> None:
    config = charger_config(tmp_path, "    poll_interval: 250ms\n")
    (device,) = config.devices
    groups = poll_groups_of(device, frozenset({"status", "serial_number"}))
    assert groups == [(0.25, frozenset({"status", "serial_number"}))]
    assert poll_groups_of(device, frozenset()) == []


@in_event_loop
async def test_fast_groups_are_read_more_often_than_slow_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(
        tmp_path,
        """    bindings:
      reporting:
        default: {poll_interval: 50ms}
        groups:
          status: {poll_interval: 20ms}
          energy: {poll_interval: 1h}
          static: {poll_interval: 1h}
""",
    )

    made = with_fake(monkeypatch, charger_driver)
    async with running(EdgeAgent(config)):
        await until(lambda: bool(made) and len(made[0].reads) >= 30)
    reads = made[0].reads
    status_reads = sum(1 for _, names in reads if "status" in names)
    voltage_reads = sum(1 for _, names in reads if "voltage_l1" in names)
    energy_reads = sum(1 for _, names in reads if "energy_total" in names)
    assert energy_reads == 1  # read once at start, then due in an hour
    assert status_reads > voltage_reads >= 2
    # groups due together are read in one call: the first read covers every point
    assert {"serial_number", "status"} <= reads[0][1]


@in_event_loop
async def test_pushed_values_and_events_take_the_same_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(tmp_path)
    made = with_fake(monkeypatch, lambda device: FakeDriver([], push_only=True))
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: bool(made) and made[0].sink is not None and made[0].connected)
        async with agent.subscribe() as live:
            sink = made[0].sink
            assert sink is not None
            sink(Update(1_700_000_000_000, {"active_power": Reading(7100.0, Quality.GOOD)}))
            sink(
                Update(
                    1_700_000_000_001,
                    {},
                    (("session_ended", {"energy": 12.5, "duration": 3600, "reason": "Local"}),),
                )
            )
            sink(Update(1_700_000_000_002, {}, (("no_such_event", {"x": 1}),)))
            sink(Update(1_700_000_000_003, {"active_power": Reading("high", Quality.GOOD)}))
            got = [await asyncio.wait_for(anext(live), 5) for _ in range(5)]
    kinds = [(m.kind, m.name or "") for m in got]
    assert kinds[0] == (MessageKind.PROPERTY_REPORT, "")
    assert got[0].params == {"active_power": 7100.0}
    assert kinds[1] == (MessageKind.EVENT, "session_ended")
    assert kinds[2] == (MessageKind.EVENT, DIAGNOSTIC_EVENT)
    assert "no_such_event" in str(got[2].params)
    # a value of the wrong type: bad quality in the report, and a diagnostic
    assert got[3].param_quality == {"active_power": Quality.BAD}
    assert kinds[4] == (MessageKind.EVENT, DIAGNOSTIC_EVENT)
    assert [m.id for m in stored(config)] == [m.id for m in got]


@in_event_loop
async def test_read_write_invoke_check_the_model_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(tmp_path, "    poll_interval: 1h\n")

    made = with_fake(monkeypatch, charger_driver)
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: bool(made) and len(made[0].reads) >= 1)
        driver = made[0]
        ts_ms, reading = await agent.read_property("charger-1", "active_power")
        assert reading == Reading(7200.0, Quality.GOOD)
        assert abs(ts_ms - time.time() * 1000) < 5000
        assert await agent.write_property("charger-1", "current_limit", 10.0) == 10.0
        assert driver.writes == [("current_limit", 10.0)]
        outputs = await agent.invoke_service("charger-1", "start_charging", {})
        assert outputs == {"accepted": True}
        for call, message in [
            (agent.read_property("nope", "x"), "unknown device 'nope'"),
            (agent.read_property("charger-1", "bogus"), "has no property 'bogus'"),
            (agent.write_property("charger-1", "active_power", 1.0), "is read-only"),
            (agent.write_property("charger-1", "current_limit", 99.0), "current_limit"),
            (agent.write_property("charger-1", "current_limit", "ten"), "current_limit"),
            (agent.invoke_service("charger-1", "explode", {}), "has no service 'explode'"),
            (agent.invoke_service("charger-1", "start_charging", {"x": 1}), "start_charging"),
        ]:
            with pytest.raises(AgentCommandError, match=message):
                await call
        assert driver.writes == [("current_limit", 10.0)]  # nothing invalid reached it
        assert driver.calls == [("start_charging", {})]


@in_event_loop
async def test_registry_commands_report_each_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(tmp_path, "    poll_interval: 1h\n")

    made = with_fake(monkeypatch, charger_driver)
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: bool(made) and made[0].connected)
        command = common_pb2.Command(
            id="c1", device_id="charger-1", kind=common_pb2.COMMAND_KIND_SET_PROPERTIES
        )
        command.params["current_limit"].CopyFrom(value_to_protobuf(8.0))
        command.params["active_power"].CopyFrom(value_to_protobuf(1.0))
        result = await agent.handle_command(command)
        assert result.status == common_pb2.COMMAND_STATUS_FAILED
        assert "active_power: device charger-1: property 'active_power' is read-only" in (
            result.error
        )
        assert "current_limit" in result.result  # the valid one was written
        assert made[0].writes == [("current_limit", 8.0)]

        call = common_pb2.Command(
            id="c2",
            device_id="charger-1",
            kind=common_pb2.COMMAND_KIND_INVOKE_SERVICE,
            service="unlock_connector",
        )
        result = await agent.handle_command(call)
        assert result.status == common_pb2.COMMAND_STATUS_SUCCEEDED
        assert result.result["accepted"].bool_value is True

        lost = common_pb2.Command(
            id="c3", device_id="ghost", kind=common_pb2.COMMAND_KIND_INVOKE_SERVICE, service="x"
        )
        result = await agent.handle_command(lost)
        assert result.status == common_pb2.COMMAND_STATUS_FAILED
        assert result.error == "unknown device 'ghost'"


@in_event_loop
async def test_a_slow_subscriber_loses_messages_not_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(tmp_path)
    made = with_fake(monkeypatch, lambda device: FakeDriver([], push_only=True))
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: bool(made) and made[0].sink is not None and made[0].connected)
        async with agent.subscribe(max_queue=3):
            sink = made[0].sink
            assert sink is not None
            for i in range(10):
                sink(
                    Update(1_700_000_000_000 + i, {"active_power": Reading(float(i), Quality.GOOD)})
                )
            await until(lambda: agent.status().queued == 0)
            assert agent.status().tail_dropped == 7
    assert len(stored(config)) == 10  # the outbox got every one


@in_event_loop
async def test_desired_state_is_written_once_and_refusals_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(tmp_path, "    poll_interval: 50ms\n")

    made = with_fake(monkeypatch, charger_driver)
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: bool(made) and len(made[0].reads) >= 1)
        driver = made[0]
        change = edge_sync_pb2.DesiredChange(device_id="charger-1", revision=5)
        change.desired["current_limit"].CopyFrom(value_to_protobuf(12.0))
        change.desired["phases"].CopyFrom(value_to_protobuf(3))  # already so: not written
        change.desired["active_power"].CopyFrom(value_to_protobuf(1.0))  # read-only: refused
        async with agent.subscribe() as live:
            await agent.handle_desired(change)
            await until(lambda: ("current_limit", 12.0) in driver.writes)
            diagnostic = None
            while diagnostic is None:
                message = await asyncio.wait_for(anext(live), 5)
                if message.name == DIAGNOSTIC_EVENT:
                    diagnostic = message
        assert diagnostic.params["property"] == "active_power"
        assert diagnostic.params["source"] == "desired"
        assert "read-only" in str(diagnostic.params["message"])
        await agent.handle_desired(change)  # the same revision again (a reconnect): ignored
        await agent.handle_desired(edge_sync_pb2.DesiredChange(device_id="ghost", revision=1))
        await asyncio.sleep(0.2)
        assert driver.writes == [("current_limit", 12.0)]


@in_event_loop
async def test_devices_of_one_model_share_compiled_codecs_and_validators(tmp_path: Path) -> None:
    config = charger_config(
        tmp_path,
        """  - id: charger-2
    model: community.energy/ev-charger@1.0.0
    protocol: modbus
    connection: {transport: tcp, host: 127.0.0.1, port: 1503}
""",
    )
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: all(d.driver is not None for d in agent._devices.values()))
        one, two = agent._devices["charger-1"], agent._devices["charger-2"]
        assert one.driver is not two.driver
        assert one.driver.codecs is two.driver.codecs  # type: ignore[union-attr]
        assert one.validator is two.validator
        assert one.builder is two.builder
        assert gc.get_freeze_count() > 0  # long-lived objects kept out of the collector's way
    assert gc.get_freeze_count() == 0


@in_event_loop
async def test_a_slow_outbox_holds_the_devices_back_not_the_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = charger_config(tmp_path, "    poll_interval: 10ms\n")

    class Changing(FakeDriver):
        """Every read moves two values past their deadband: every poll reports."""

        async def read_points(self, properties: Collection[str]) -> dict[str, Reading]:
            self.values["voltage_l1"] = 200.0 + len(self.reads) % 50
            self.values["active_power"] = 1000.0 + 100 * (len(self.reads) % 50)
            return await super().read_points(properties)

    def make(device: DeviceConfig) -> FakeDriver:
        driver = Changing([p.property for p in device.bindings().modbus.points])  # type: ignore[union-attr]
        driver.values = charger_values()
        return driver

    made = with_fake(monkeypatch, make)
    monkeypatch.setattr(supervisor, "_QUEUE_HIGH_WATER", 40)
    append = Outbox.append

    def slow_append(self: Outbox, messages: Any) -> int:
        time.sleep(0.2)
        return append(self, messages)

    monkeypatch.setattr(Outbox, "append", slow_append)
    async with running(EdgeAgent(config)) as agent:
        await until(lambda: bool(made) and len(made[0].reads) >= 2)
        weights = []
        reads_before, started = len(made[0].reads), time.monotonic()
        for _ in range(40):
            weights.append(agent._queued_weight)
            await asyncio.sleep(0.01)
        # one poll's report may land on top of the mark, never more
        assert 0 < max(weights) <= 40 + 11
        # the device waited for the outbox (40 values per 0.2 s append: about 10 polls of 4
        # changed values) instead of polling every 10 ms
        polls = len(made[0].reads) - reads_before
        unthrottled = (time.monotonic() - started) / 0.01
        assert polls < 0.75 * unthrottled
