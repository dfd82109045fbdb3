"""The whole edge path against REAL parts: Modbus simulators -> EdgeAgent (driver, reporting,
outbox, uplink) -> a real registry (SqliteStorage in tmp_path), and a set_properties command
from the registry's CommandService back to a simulator's coil. Plus the ``run`` CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpc import aio

from cloud_registry.api.v1 import commands_pb2, commands_pb2_grpc, common_pb2
from cloud_registry.storage.sqlite import SqliteStorage
from edge_agent.cli import main
from edge_agent.config import load_edge_config
from edge_agent.supervisor import EdgeAgent, poll_interval_of
from protocol_adapters.modbus.simulator import ModbusSimulator
from tests.cloud_registry.server_fixtures import Registry, running_registry
from thing_models.messages import value_to_protobuf
from thing_models.yaml_format import load_model_file

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
METER_FILE = MODELS / "energy-meter-3p.yaml"
METER_REF = "community.energy/meter-3p@1.0.0"


def write_config(tmp_path: Path, target: str, ports: dict[str, int]) -> Path:
    devices = "".join(
        f"""
  - id: {device_id}
    model: {METER_REF}
    protocol: modbus
    connection: {{transport: tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}
    poll_interval: 200ms
    reconnect: {{min: 100ms, max: 400ms}}
"""
        for device_id, port in ports.items()
    )
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""edge_id: edge-1
registry: {{address: "{target}", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
devices:{devices}""",
        encoding="utf-8",
    )
    return path


async def until(predicate: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def reported(registry: Registry, device_id: str) -> dict[str, Any]:
    return dict(registry.storage.get_twin(device_id).reported)


def test_devices_report_to_the_registry_and_commands_reach_the_device(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    try:
        with running_registry(storage) as registry:
            registry.publish_file(METER_FILE)
            registry.register("meter-1", model=METER_REF)
            registry.register("meter-2", model=METER_REF)
            asyncio.run(asyncio.wait_for(_scenario(tmp_path, registry), 30))
    finally:
        storage.close()


async def _scenario(tmp_path: Path, registry: Registry) -> None:
    model = load_model_file(METER_FILE)
    live = ModbusSimulator(model, seed=1, tick_ms=100)
    dead = ModbusSimulator(model, seed=2)
    live_port = await live.start()
    dead_port = await dead.start()
    await dead.stop()  # nothing listens there any more
    await live.set_value("relay_closed", False)
    config = load_edge_config(
        write_config(tmp_path, registry.target, {"meter-1": live_port, "meter-2": dead_port})
    )
    assert poll_interval_of(config.devices[0]) == 0.2
    agent = EdgeAgent(config, uplink_options={"backoff_initial_s": 0.1, "backoff_max_s": 0.5})
    task = asyncio.create_task(agent.run())
    try:
        # values of the live meter reach the twin, within the model's range
        await until(lambda: "voltage_a" in reported(registry, "meter-1"))
        twin = reported(registry, "meter-1")
        for name in ("voltage_a", "voltage_b", "voltage_c"):
            assert twin[name].quality == "good"
            assert 0 <= twin[name].value <= 500
        assert twin["relay_closed"].value is False
        # ...and keep coming while the other meter's simulator is down
        first_ts = twin["voltage_a"].ts_ms
        await until(lambda: reported(registry, "meter-1")["voltage_a"].ts_ms > first_ts)
        status = agent.status()
        dead_status = status.devices["meter-2"]
        assert dead_status.diagnostics.state == "offline"
        assert dead_status.connect_attempts >= 2
        assert "cannot connect" in dead_status.last_error
        assert dead_status.polls == 0
        assert "voltage_a" not in reported(registry, "meter-2")
        assert status.devices["meter-1"].diagnostics.state == "online"
        assert status.outbox is not None
        assert status.uplink is not None
        assert status.uplink.connected

        # a set_properties command goes registry -> uplink -> driver -> the simulator's coil
        channel = aio.insecure_channel(registry.target)
        async with channel:
            commands: Any = commands_pb2_grpc.CommandServiceStub(channel)  # type: ignore[no-untyped-call]
            request = commands_pb2.SendCommandRequest(
                device_id="meter-1",
                kind=common_pb2.COMMAND_KIND_SET_PROPERTIES,
                wait=True,
                timeout_ms=8000,
            )
            request.params["relay_closed"].CopyFrom(value_to_protobuf(True))
            command = await commands.SendCommand(request, timeout=10)
            assert command.status == common_pb2.COMMAND_STATUS_SUCCEEDED, command.error
            assert await live.get_value("relay_closed") is True
            await until(lambda: reported(registry, "meter-1")["relay_closed"].value is True)

            # the device that is down answers FAILED with the driver's error
            request.device_id = "meter-2"
            command = await commands.SendCommand(request, timeout=10)
            assert command.status == common_pb2.COMMAND_STATUS_FAILED
            assert "relay_closed" in command.error
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
        await live.stop()
    assert agent.status().running is False


def test_run_reports_config_errors_with_their_location(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"edge_id: edge-1\nregistry: {{address: nohost}}\nmodels_dir: {MODELS}\n",
        encoding="utf-8",
    )
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2:" in err
    assert "address" in err


def test_run_stops_on_sigterm_with_exit_0(tmp_path: Path) -> None:
    # No registry and no device listening: the agent keeps retrying until SIGTERM.
    config = write_config(tmp_path, "127.0.0.1:9", {"meter-1": 9})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 10
        seen = ""
        while "edge edge-1" not in seen and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen += line
        assert "edge edge-1" in seen, seen
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=15)
        assert process.returncode == 0, seen + out
        assert "stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
