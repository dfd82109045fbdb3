"""BACnet in the edge agent: connection settings, the driver factory (one stack per local
address), ``edge-agent simulate bacnet`` and ``edge-agent discover bacnet``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import load_edge_config
from edge_agent.drivers import make_driver
from edge_agent.protocols.bacnet import (
    BacnetConnection,
    add_discover_command,
    add_simulate_command,
    discover,
)
from protocol_adapters.bacnet.driver import BacnetDriver
from protocol_adapters.bacnet.simulator import spawn, stop
from protocol_adapters.bacnet.stack import BacnetStack
from thing_models import load_model_file
from thing_models.errors import ModelLoadError
from thing_models.messages import Quality

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "examples" / "models"
AHU = "community.hvac/air-handling-unit@1"
HEAD = f"""\
edge_id: gw1
registry: {{address: "registry.example.org:7443"}}
models_dir: {MODELS}
devices:
"""  # devices start on line 5


def write(tmp_path: Path, devices: str) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(HEAD + devices, encoding="utf-8")
    return path


def errors(path: Path) -> list[str]:
    with pytest.raises(ModelLoadError) as info:
        load_edge_config(path)
    return [str(d) for d in info.value.diagnostics]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_connection_with_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
  - id: ahu-1
    model: {AHU}
    protocol: bacnet
    connection:
      address: 10.0.0.7:47809
      device_instance: 1001
      local_address: 10.0.0.2/24:47808
      bbmd: 10.0.0.1
      bbmd_ttl: 10m
      timeout: 500ms
      retries: 2
      read_property_multiple: false
      rpm_batch: 5
      cov_lifetime: 2m
  - id: ahu-2
    model: {AHU}
    protocol: bacnet
    connection: {{address: 10.0.0.8}}
""",
    )
    config = load_edge_config(path)
    first, second = (d.connection for d in config.devices)
    assert first == BacnetConnection(
        address="10.0.0.7:47809",
        device_instance=1001,
        local_address="10.0.0.2/24:47808",
        bbmd="10.0.0.1:47808",
        bbmd_ttl_s=600.0,
        timeout_s=0.5,
        retries=2,
        read_property_multiple=False,
        rpm_batch=5,
        cov_lifetime_s=120.0,
    )
    assert second == BacnetConnection(address="10.0.0.8:47808")


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        ("{}", "edge.yaml:9:7: error: devices[0].connection: missing required key 'address'"),
        ("{address: '*'}", "edge.yaml:9:17: error: devices[0].connection.address: address: '*' is"),
        ("{address: 10.0.0.7, adress: x}", "edge.yaml:9:27: error: devices[0].connection.adress"),
        ("{address: 10.0.0.7, adress: x}", "did you mean 'address'?"),
        ("{address: 10.0.0.7, device_instance: 4194303}", "device_instance out of range"),
        ("{address: 10.0.0.7, timeout: soon}", "invalid duration for timeout"),
        ("{address: 10.0.0.7, cov_lifetime: 1s}", "cov_lifetime is too short"),
        ("{address: 10.0.0.7, rpm_batch: 0}", "rpm_batch out of range"),
        ("{address: 10.0.0.7, read_property_multiple: 1}", "must be true or false"),
        ("{address: 10.0.0.7, bbmd: ''}", "bbmd must not be empty"),
        ("{address: 7}", "address must be a string"),
    ],
)
def test_bad_connections_are_located(tmp_path: Path, connection: str, expected: str) -> None:
    path = write(
        tmp_path,
        f"""\
  - id: ahu-1
    model: {AHU}
    protocol: bacnet
    connection:
      {connection}
""",
    )
    found = errors(path)
    assert any(expected in line for line in found), found


def test_devices_on_one_local_address_share_a_stack(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
  - {{id: a, model: {AHU}, protocol: bacnet,
      connection: {{address: 10.0.0.7, local_address: 127.0.0.1:47900}}}}
  - {{id: b, model: {AHU}, protocol: bacnet,
      connection: {{address: 10.0.0.8, local_address: 127.0.0.1:47900}}}}
  - {{id: c, model: {AHU}, protocol: bacnet,
      connection: {{address: 10.0.0.9, local_address: 127.0.0.1:47901}}}}
""",
    )
    config = load_edge_config(path)
    shared: dict[object, object] = {}
    a, b, c = (make_driver(d, shared) for d in config.devices)
    assert isinstance(a, BacnetDriver)
    assert isinstance(b, BacnetDriver)
    assert isinstance(c, BacnetDriver)
    assert a.stack is b.stack is not c.stack
    assert sum(isinstance(v, BacnetStack) for v in shared.values()) == 2
    assert a.endpoint == "10.0.0.7:47808"  # no instance configured: learnt from the I-Am
    assert len(a.pollable) == 27


def test_driver_from_config_reads_the_simulator(tmp_path: Path) -> None:
    device = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(MODELS / "air-handling-unit.yaml", device, 1200)
    try:
        path = write(
            tmp_path,
            f"""\
  - id: ahu
    model: {AHU}
    protocol: bacnet
    connection:
      address: "{device}"
      device_instance: 1200
      local_address: "127.0.0.1:{free_udp_port()}"
      timeout: 1s
""",
        )
        (config_device,) = load_edge_config(path).devices
        driver = make_driver(config_device, {})

        async def scenario() -> None:
            await driver.connect()
            try:
                readings = await driver.read_points(driver.pollable)
                assert all(r.quality is Quality.GOOD for r in readings.values())
            finally:
                await driver.close()

        asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        stop(proc)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-agent")
    sub = parser.add_subparsers(dest="command")
    simulate = sub.add_parser("simulate").add_subparsers(dest="protocol")
    add_simulate_command(simulate)
    found = sub.add_parser("discover").add_subparsers(dest="protocol")
    add_discover_command(found)
    return parser


def test_discover_command_writes_a_draft(tmp_path: Path) -> None:
    device = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(MODELS / "air-handling-unit.yaml", device, 1300)
    out = tmp_path / "ahu.yaml"
    try:
        args = _parser().parse_args(
            [
                "discover",
                "bacnet",
                "--range",
                "1300-1300",
                "--address",
                device,
                "--local-address",
                f"127.0.0.1:{free_udp_port()}",
                "--timeout",
                "1",
                "-o",
                str(out),
            ]
        )
        assert asyncio.run(discover(args)) == 0
    finally:
        stop(proc)
    model = load_model_file(out)
    assert model.bindings.bacnet is not None
    assert model.bindings.bacnet.device_instance == 1300
    assert len(model.properties) == 26


def test_discover_command_errors(capsys: pytest.CaptureFixture[str]) -> None:
    local = f"127.0.0.1:{free_udp_port()}"
    args = _parser().parse_args(["discover", "bacnet", "--range", "9-x", "--local-address", local])
    assert asyncio.run(discover(args)) == 2
    assert "expected LOW-HIGH" in capsys.readouterr().err
    args = _parser().parse_args(["discover", "bacnet", "--local-address", local])
    assert asyncio.run(discover(args)) == 2
    assert "a broadcast Who-Is needs the subnet" in capsys.readouterr().err
    silent = f"127.0.0.1:{free_udp_port()}"
    args = _parser().parse_args(
        [
            "discover",
            "bacnet",
            "--range",
            "1-1",
            "--address",
            silent,
            "--local-address",
            local,
            "--timeout",
            "0.3",
        ]
    )
    assert asyncio.run(discover(args)) == 1
    assert "no device answered" in capsys.readouterr().err


def test_simulate_command_runs_until_sigterm() -> None:
    port = free_udp_port()
    code = "import sys; from edge_agent.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "simulate",
            "bacnet",
            "--model",
            str(MODELS / "air-handling-unit.yaml"),
            "--address",
            f"127.0.0.1:{port}",
            "--device-instance",
            "77",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert f"device 77 listening on 127.0.0.1:{port} (26 objects)" in line
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


# --------------------------------------------------------------------------- through the agent

AHU_FILE = MODELS / "air-handling-unit.yaml"
AHU_REF = "community.hvac/air-handling-unit@1.0.0"


def test_agent_reports_bacnet_values_and_writes_setpoints(tmp_path: Path) -> None:
    """BACnet simulator (own process) -> EdgeAgent -> a real registry, and a set_properties
    command back to the device; a silent second device goes offline without harming the
    first."""
    from cloud_registry.storage.sqlite import SqliteStorage
    from tests.cloud_registry.server_fixtures import running_registry

    storage = SqliteStorage(tmp_path / "registry.db")
    storage.migrate()
    device = f"127.0.0.1:{free_udp_port()}"
    proc = spawn(AHU_FILE, device, 1400, "--interval", "0.2", "--fault", "analog-input,2")
    try:
        with running_registry(storage) as registry:
            registry.publish_file(AHU_FILE)
            registry.register("ahu-1", model=AHU_REF)
            registry.register("ahu-2", model=AHU_REF)
            asyncio.run(asyncio.wait_for(_agent_scenario(tmp_path, registry, device), 40))
    finally:
        stop(proc)
        storage.close()


async def _agent_scenario(tmp_path: Path, registry: Any, device: str) -> None:
    import time

    from grpc import aio

    from cloud_registry.api.v1 import commands_pb2, commands_pb2_grpc, common_pb2
    from edge_agent.supervisor import EdgeAgent
    from thing_models.messages import value_to_protobuf

    local = f"127.0.0.1:{free_udp_port()}"
    silent = f"127.0.0.1:{free_udp_port()}"
    path = tmp_path / "edge.yaml"
    path.write_text(
        f"""edge_id: edge-1
registry: {{address: "{registry.target}", insecure: true}}
storage: {{outbox: state/outbox.db}}
models_dir: {MODELS}
devices:
  - id: ahu-1
    model: {AHU_REF}
    protocol: bacnet
    connection: {{address: "{device}", device_instance: 1400, local_address: "{local}",
                  timeout: 500ms}}
    poll_interval: 300ms
    reconnect: {{min: 100ms, max: 400ms}}
  - id: ahu-2
    model: {AHU_REF}
    protocol: bacnet
    connection: {{address: "{silent}", device_instance: 1401, local_address: "{local}",
                  timeout: 500ms}}
    poll_interval: 300ms
    reconnect: {{min: 100ms, max: 400ms}}
""",
        encoding="utf-8",
    )

    def reported(device_id: str) -> dict[str, Any]:
        return dict(registry.storage.get_twin(device_id).reported)

    async def until(predicate: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.05)

    agent = EdgeAgent(
        load_edge_config(path), uplink_options={"backoff_initial_s": 0.1, "backoff_max_s": 0.5}
    )
    task = asyncio.create_task(agent.run())
    try:
        await until(lambda: "supply_air_temp" in reported("ahu-1"))
        await until(lambda: "return_air_temp" in reported("ahu-1"))
        twin = reported("ahu-1")
        assert twin["supply_air_temp"].quality == "good"
        assert twin["return_air_temp"].quality == "bad"  # the fault flag set on AI-2
        await until(lambda: "sat_setpoint" in reported("ahu-1"))
        status = agent.status()
        assert status.devices["ahu-1"].diagnostics.state == "online"
        assert status.devices["ahu-2"].diagnostics.state == "offline"
        assert "supply_air_temp" not in reported("ahu-2")

        channel = aio.insecure_channel(registry.target)
        async with channel:
            commands: Any = commands_pb2_grpc.CommandServiceStub(channel)  # type: ignore[no-untyped-call]
            request = commands_pb2.SendCommandRequest(
                device_id="ahu-1",
                kind=common_pb2.COMMAND_KIND_SET_PROPERTIES,
                wait=True,
                timeout_ms=8000,
            )
            request.params["sat_setpoint"].CopyFrom(value_to_protobuf(18.5))
            command = await commands.SendCommand(request, timeout=10)
            assert command.status == common_pb2.COMMAND_STATUS_SUCCEEDED, command.error
            await until(lambda: reported("ahu-1")["sat_setpoint"].value == 18.5)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 15)
